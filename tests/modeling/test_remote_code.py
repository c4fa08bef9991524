"""Remote-code export: model, processor and the X-SAM pipeline load with `trust_remote_code=True` in a fresh Python
where xsam_hf cannot be imported, and compute what the originals compute.

The child runs with `python -I -S`: no PYTHONPATH, no current directory and no `.pth` processing, so the editable
install's import hook for xsam_hf is never installed; site-packages is put back on `sys.path` by hand (torch and
transformers stay importable) and the child first asserts that xsam_hf cannot be found.
"""

import ast
import json
import os
import site
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from transformers import Pipeline, pipeline

from xsam_hf.modeling.export import flatten_modules, save_for_remote_code
from xsam_hf.pipelines import PIPELINE_TASK
from xsam_hf.processing import XSamProcessor

from .conftest import build_tiny

CHILD = '''
import importlib.util, sys
sys.path.extend(SITE_PACKAGES)  # without .pth processing: the editable xsam_hf hook stays out
assert importlib.util.find_spec("xsam_hf") is None, "xsam_hf must not be importable here"

import numpy as np
import torch
from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor, pipeline

folder = sys.argv[1]
expected = torch.load(sys.argv[2], weights_only=False)

config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
assert type(config).__name__ == "XSamConfig" and type(config).__module__.startswith("transformers_modules.")
model = AutoModel.from_pretrained(folder, trust_remote_code=True, attn_implementation="eager").eval()
assert type(model).__name__ == "XSamForSegmentation" and type(model).__module__.startswith("transformers_modules.")
image_text_model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True)
assert type(image_text_model).__name__ == "XSamForSegmentation"

with torch.no_grad():
    out = model(**expected["inputs"])
for key in ("logits", "class_queries_logits", "masks_queries_logits"):
    assert torch.equal(getattr(out, key), expected[key]), key
generated = model.generate(**expected["inputs"], max_new_tokens=4, stop_token_ids=[373])
assert torch.equal(generated.generated_ids, expected["generated_ids"])

processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
assert type(processor).__name__ == "XSamProcessor" and type(processor).__module__.startswith("transformers_modules.")
encoded = processor(images=expected["image"], task="semantic", categories=["sky", "dog"])
for key, value in expected["encoded"].items():
    assert torch.equal(encoded[key], value), key

pipe = pipeline(model=folder, trust_remote_code=True)  # the task comes from custom_pipelines
assert type(pipe).__name__ == "XSamSegmentationPipeline" and type(pipe).__module__.startswith("transformers_modules.")
segments = pipe(expected["image"], task="semantic", classes=["sky", "dog"])
assert [(s["label"], s["score"]) for s in segments] == [(label, score) for label, score, _ in expected["pipeline"]]
assert all(np.array_equal(np.asarray(s["mask"]), mask) for s, (_, _, mask) in zip(segments, expected["pipeline"]))
assert pipe(expected["image"], task="gcg", max_new_tokens=4)["generated_text"] == expected["gcg"]
assert not any(name == "xsam_hf" or name.startswith("xsam_hf.") for name in sys.modules)
print("REMOTE-CODE-OK")
'''


def _clean_site_packages() -> list[str]:
    paths = [*site.getsitepackages(), site.getusersitepackages()]
    return [p for p in paths if os.path.isdir(p) and not os.path.isdir(os.path.join(p, "xsam_hf"))]


def test_exported_files_import_only_their_siblings(tmp_path):
    sources = flatten_modules(["xsam_hf.modeling.modeling_xsam", "xsam_hf.processing.processing_xsam"])
    assert {"configuration_xsam.py", "modeling_xsam.py", "presets.py", "spans.py", "processing_xsam.py"} <= set(sources)
    for name, text in sources.items():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom) and node.level:
                # transformers resolves `.name` against the folder: exactly one dot, and the sibling exists.
                assert node.level == 1 and f"{node.module}.py" in sources, (name, node.module)
            if isinstance(node, (ast.Import, ast.ImportFrom)) and not getattr(node, "level", 0):
                modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
                assert not any(m.split(".")[0] == "xsam_hf" for m in modules), (name, modules)
    # The lazily imported presets come along, so from_preset works in the copy too (the package itself untouched).
    assert "from .presets import get_preset" in sources["configuration_xsam.py"]


def test_model_processor_and_pipeline_load_without_the_package(tmp_path):
    torch.manual_seed(0)
    model = build_tiny()
    processor = XSamProcessor.from_preset("tiny")
    image = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    encoded = processor(images=image, task="semantic", categories=["sky", "dog"])
    inputs = {k: encoded[k] for k in ("input_ids", "attention_mask", "pixel_values", "extra_pixel_values")}
    with torch.no_grad():
        out = model(**inputs)
    pipe = pipeline(PIPELINE_TASK, model=model, processor=processor)
    segments = pipe(image, task="semantic", classes=["sky", "dog"])
    assert segments and all(s["mask"].size == (70, 50) for s in segments)
    expected = {
        "inputs": inputs,
        "image": image,
        "encoded": inputs,
        "logits": out.logits,
        "class_queries_logits": out.class_queries_logits,
        "masks_queries_logits": out.masks_queries_logits,
        "generated_ids": model.generate(**inputs, max_new_tokens=4, stop_token_ids=[373]).generated_ids,
        "pipeline": [(s["label"], s["score"], np.asarray(s["mask"])) for s in segments],
        "gcg": pipe(image, task="gcg", max_new_tokens=4)["generated_text"],
    }

    folder = tmp_path / "xsam-remote"
    written = save_for_remote_code(model, folder, processor=processor, pipeline=pipe)
    assert {"modeling_xsam.py", "processing_xsam.py", "pipelines.py"} <= set(written)
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_xsam.XSamConfig",
        "AutoModel": "modeling_xsam.XSamForSegmentation",
        "AutoModelForImageTextToText": "modeling_xsam.XSamForSegmentation",
        "AutoProcessor": "processing_xsam.XSamProcessor",
    }
    assert config["custom_pipelines"] == {
        PIPELINE_TASK: {"impl": "pipelines.XSamSegmentationPipeline", "pt": ["AutoModelForImageTextToText"],
                        "type": "multimodal"}
    }
    assert json.loads((folder / "processor_config.json").read_text())["auto_map"] == {
        "AutoProcessor": "processing_xsam.XSamProcessor"
    }
    torch.save(expected, tmp_path / "expected.pt")

    code = CHILD.replace("SITE_PACKAGES", repr(_clean_site_packages()))
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "HF_HOME": str(tmp_path / "hf_home"),
        "HF_MODULES_CACHE": str(tmp_path / "hf_modules"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    }
    work = tmp_path / "elsewhere"
    work.mkdir()
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", textwrap.dedent(code), str(folder), str(tmp_path / "expected.pt")],
        cwd=work, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0 and "REMOTE-CODE-OK" in result.stdout, result.stdout[-3000:] + result.stderr[-6000:]


class UnregisteredPipeline(Pipeline):
    """A pipeline class registered under no task name."""


def test_export_cleans_stale_code_and_requires_a_pipeline_task(tmp_path):
    model = build_tiny()
    (tmp_path / "old_module.py").write_text("raise ImportError\n")
    written = save_for_remote_code(model, tmp_path)
    assert not (tmp_path / "old_module.py").exists() and "processing_xsam.py" not in written
    assert "AutoProcessor" not in json.loads((tmp_path / "config.json").read_text())["auto_map"]
    with pytest.raises(ValueError, match="pipeline_task"):
        save_for_remote_code(model, tmp_path / "again", pipeline=UnregisteredPipeline)
    assert not (tmp_path / "again").exists()  # refused before anything is written
