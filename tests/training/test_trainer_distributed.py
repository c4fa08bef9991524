"""Two CPU processes (torchrun, gloo DDP) against one process on the same global batches.

Why the numbers can agree exactly: the source-grouped sampler yields the same global batch for 1 and 2 processes
(the 2-process run splits it 2 + 2), every image of the fixture has two masks (so each process has the same share of
masks and queries), and the Mask2Former point sampling is made layout-independent: `torch.rand` inside transformers'
Mask2Former module returns a fixed point set for every mask (`shared_point_sampling`), so matching and the sampled
BCE / dice see identical points whichever process a mask lands on. With ordinary random points the two runs draw
different points and agree only statistically (~1/sqrt(points)), and the Hungarian matching may even differ.

Tolerances (relative): lm_loss, loss_mask, loss_dice, seg_loss, loss: 1e-5 (float summation order only; lm_loss is
normalised by the global token count, mask/dice by the global mask count). loss_cross_entropy: 1e-5 here; in general
DDP gives the mean of per-process weight-normalised means, equal to the single-process value only when every process
has the same total class weight (same numbers of instances and matched queries), as here. Weights after two SGD steps
(plain SGD, so a wrong loss scale would change the update, unlike Adam): max |difference| < 1e-6 while the updates
themselves exceed 1e-4.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from .conftest import tiny_recipe
from safetensors.torch import load_file

HERE = Path(__file__).resolve().parent
TERMS = ("loss", "lm_loss", "seg_loss", "loss_cross_entropy", "loss_mask", "loss_dice")

RUNNER = """
import json, sys
# bitsandbytes is not used here, and importing it (peft does when it is installed) compiles kernels: ~8 s per process.
sys.modules["bitsandbytes"] = None
sys.path.insert(0, {tests!r})
from training.test_trainer_distributed import install_shared_point_sampling
install_shared_point_sampling()
from xsam_hf.training.train import _distributed_exit, run_training
with open(sys.argv[1]) as handle:
    run_training(json.load(handle))
_distributed_exit(0)
"""


def install_shared_point_sampling() -> None:
    """Make Mask2Former's random points a fixed set per call shape, identical for every mask (see module doc)."""
    from transformers.models.mask2former import modeling_mask2former

    real_rand = torch.rand

    def shared_rand(*size, device=None, dtype=None, **kwargs):
        shape = tuple(size[0]) if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)) else tuple(size)
        generator = torch.Generator().manual_seed(1234 + (shape[-2] if len(shape) >= 2 else 0))
        base = real_rand(shape[-2:] if len(shape) >= 2 else shape, generator=generator)
        return base.expand(shape).contiguous().to(device=device, dtype=dtype or torch.get_default_dtype())

    class TorchWithSharedRand:
        rand = staticmethod(shared_rand)

        def __getattr__(self, name):
            return getattr(torch, name)

    modeling_mask2former.torch = TorchWithSharedRand()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _recipe(data_root: Path, sources, output_dir: Path, per_device: int) -> dict:
    return tiny_recipe(
        "s3", data_root, output_dir, [sources["genseg"]], per_device_train_batch_size=per_device, max_steps=2,
        optim="sgd", learning_rate=0.05, weight_decay=0.0, max_grad_norm=1.0, ddp_find_unused_parameters=True,
    )


def test_two_processes_match_one_process_on_the_same_global_batch(data_root, sources, tmp_path, monkeypatch):
    two = _recipe(data_root, sources, tmp_path / "two", per_device=2)
    (tmp_path / "two.json").write_text(json.dumps(two))
    (tmp_path / "runner.py").write_text(RUNNER.format(tests=str(HERE.parent)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(HERE.parents[1])}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(_free_port()), str(tmp_path / "runner.py"), str(tmp_path / "two.json")]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=400)
    assert completed.returncode == 0, completed.stderr[-4000:]

    # The single-process reference runs here, with the same point sampling.
    monkeypatch.setattr("transformers.models.mask2former.modeling_mask2former.torch", torch)
    install_shared_point_sampling()
    from xsam_hf.training.train import run_training

    one = run_training(_recipe(data_root, sources, tmp_path / "one", per_device=4))
    distributed = json.loads((tmp_path / "two" / "final" / "training_summary.json").read_text())

    assert distributed["global_step"] == one["global_step"] == 2
    steps_two = [entry for entry in distributed["log_history"] if "loss" in entry]
    steps_one = [entry for entry in one["log_history"] if "loss" in entry]
    assert len(steps_two) == len(steps_one) == 2
    for logged_two, logged_one in zip(steps_two, steps_one):
        for term in TERMS:
            assert logged_two[term] == pytest.approx(logged_one[term], rel=1e-5), term
    assert steps_one[0]["loss_mask"] > 0 and steps_one[0]["lm_loss"] > 0

    weights_two = load_file(tmp_path / "two" / "final" / "model.safetensors")
    weights_one = load_file(tmp_path / "one" / "final" / "model.safetensors")
    from xsam_hf import XSamConfig, XSamForSegmentation
    from transformers import set_seed

    set_seed(0)
    initial = XSamForSegmentation._from_config(XSamConfig.from_preset("tiny", stage="s3"), attn_implementation="eager")
    initial = initial.state_dict()
    assert set(weights_two) == set(weights_one)
    worst_gap = max((weights_two[k] - weights_one[k]).abs().max().item() for k in weights_one)
    largest_update = max((weights_one[k] - initial[k]).abs().max().item() for k in weights_one)
    assert worst_gap < 1e-6
    assert largest_update > 1e-4
