"""The README tutorial, run as written: its `xsam train` command and its Python snippet, on a tiny COCO folder.

The folder layout of the tutorial is recreated in a temporary working directory (`my_data/`, `path/to/x-sam` holding
a tiny saved X-SAM), so the commands run verbatim; only CPU-speed limits are appended to the training command
(2 steps, 2,048 loss points, no progress bar).
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

from xsam_hf.processing import XSamProcessor
from xsam_hf.training.train import main

from .conftest import tiny_model, write_coco_instances

README = Path(__file__).resolve().parents[2] / "README.md"
SPEED_LIMITS = ["training.max_steps=2", "training.use_cpu=true", "training.disable_tqdm=true",
                "model.decoder_overrides.train_num_points=2048"]


def fenced_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


def tutorial_section() -> str:
    """The README's tutorial, between its markers."""
    text = README.read_text(encoding="utf-8")
    start, end = text.index("<!-- tutorial:start"), text.index("<!-- tutorial:end -->")
    return text[start:end]


def test_the_tutorial_commands_fine_tune_and_segment(tmp_path, monkeypatch, capsys):
    text = tutorial_section()
    shell = fenced_blocks(text, "bash")
    commands = [line for block in shell for line in block.replace("\\\n", " ").splitlines() if line.strip()]
    train_commands = [shlex.split(c) for c in commands if c.startswith("xsam train")]
    assert len(train_commands) == 1 and any(c.startswith("pip install") for c in commands)

    monkeypatch.chdir(tmp_path)
    write_coco_instances(tmp_path / "my_data", images=4, name="instances_train.json")
    model_dir = tmp_path / "path" / "to" / "x-sam"
    tiny_model().save_pretrained(model_dir)
    XSamProcessor.from_preset("tiny").save_pretrained(model_dir)

    assert main(train_commands[0][2:] + SPEED_LIMITS) == 0
    final = tmp_path / "runs" / "my-xsam" / "final"
    summary = json.loads((final / "training_summary.json").read_text())
    assert summary["global_step"] == 2 and summary["freezing"]["policy"] == "lora"
    assert summary["task_micro_batches"] == {"genseg": 2} and summary["skipped_samples"] == 0
    assert (final / "adapter" / "adapter_model.safetensors").is_file()

    (snippet,) = fenced_blocks(text, "python")
    exec(compile(snippet, str(README), "exec"), {"__name__": "tutorial"})
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    assert printed.startswith("[") and printed.endswith("]")  # (label, score) pairs of the fine-tuned model
