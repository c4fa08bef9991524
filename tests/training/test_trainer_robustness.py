"""A broken sample never ends a run (it is skipped and reported); an interrupted run resumes where it stopped."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import TrainerCallback

from xsam_hf.training.train import main, run_training

from .conftest import tiny_recipe, write_coco_instances


def test_a_corrupt_image_is_skipped_counted_and_reported(tmp_path):
    root = tmp_path / "data"
    write_coco_instances(root, images=4)
    (root / "images" / "img_2.jpg").write_bytes(b"\xff\xd8 truncated jpeg")
    source = {"format": "coco_instances", "source": "my_coco", "annotations": "annotations/instances.json",
              "image_dir": "images"}
    # S1 is the cheapest stage; the skipping happens in the data layer, the same for every stage.
    summary = run_training(tiny_recipe("s1", root, tmp_path / "out", [source], max_steps=2))
    assert summary["global_step"] == 2
    assert summary["skipped_samples"] == 1
    assert summary["skipped_by_source"] == {"my_coco": {"unreadable_sample": 1}}
    assert summary["log_history"][-2]["skipped_samples"] == 1  # the running count is in the training logs


class StopAt(TrainerCallback):
    """Simulate a crash (pre-emption, out of memory) right after an optimizer step."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt(f"stopped at step {self.step}")


def test_an_interrupted_run_resumes_and_ends_as_an_uninterrupted_one(data_root, sources, tmp_path):
    # S1 with its random scale + crop, one image per step (4 steps per epoch), a checkpoint every 2 steps, stopped
    # during step 3: the resumed run restarts from checkpoint-2 in the middle of the epoch, so it must skip the 2
    # batches already seen and restore the random state (point sampling, augmentation) to reproduce step 3.
    def recipe(output, **training):
        spec = tiny_recipe("s1", data_root, output, [sources["genseg"]], max_steps=3, per_device_train_batch_size=1,
                           **training)
        spec["augmentation"] = {"min_scale": 0.1, "max_scale": 2.0}
        return spec

    reference = run_training(recipe(tmp_path / "reference"))
    interrupted = recipe(tmp_path / "resumed", save_strategy="steps", save_steps=2)
    with pytest.raises(KeyboardInterrupt):
        run_training(interrupted, callbacks=[StopAt(3)])
    assert (tmp_path / "resumed" / "checkpoint-2").is_dir() and not (tmp_path / "resumed" / "final").exists()

    config = tmp_path / "resumed.yaml"
    config.write_text(yaml.safe_dump(interrupted))
    assert main([str(config), "--resume"]) == 0

    resumed = json.loads((tmp_path / "resumed" / "final" / "training_summary.json").read_text())
    assert resumed["global_step"] == reference["global_step"] == 3
    ran = [entry for entry in resumed["log_history"] if "loss" in entry]
    expected = [entry for entry in reference["log_history"] if "loss" in entry]
    assert [e["step"] for e in ran] == [1, 2, 3]  # steps 1-2 come from checkpoint-2's state, step 3 ran again
    assert ran[2]["loss"] == pytest.approx(expected[2]["loss"], rel=1e-5)
    weights = load_file(tmp_path / "resumed" / "final" / "model.safetensors")
    reference_weights = load_file(tmp_path / "reference" / "final" / "model.safetensors")
    checkpoint = load_file(tmp_path / "resumed" / "checkpoint-2" / "model.safetensors")
    assert max((weights[k] - reference_weights[k]).abs().max().item() for k in weights) < 1e-6
    assert any(not torch.equal(weights[k], checkpoint[k]) for k in weights)  # step 3 did update the weights
