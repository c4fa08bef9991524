"""Loading an earlier stage's weights into a later form, non-strictly, with a report (architecture spec §4).

S2 starts from S1's SAM encoder; S3 from S1's segmentor (SAM encoder, connector, decoder) and S2's projectors.
Keys the checkpoint lacks stay at their initialisation and are reported; so are checkpoint keys the model has no
place for (S1's closed-set head in an S3 model, say). A shape mismatch is an error, never silently skipped.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from safetensors.torch import load_file

# Which parts each later stage takes from each earlier one.
STAGE_CHAINING: dict[tuple[str, str], tuple[str, ...]] = {
    ("s1", "s2"): ("segmentation_encoder.",),
    ("s1", "s3"): ("segmentation_encoder.", "connector.", "segmentation_decoder."),
    ("s2", "s3"): ("vision_projector.", "seg_projector."),
}


@dataclass
class StageLoadReport:
    loaded: list[str] = field(default_factory=list)
    left_at_init: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"loaded {len(self.loaded)} tensors; {len(self.left_at_init)} model tensors left at initialisation; "
            f"{len(self.unused)} checkpoint tensors unused"
        )


def read_state_dict(source: str | os.PathLike | Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    """A state dict from a mapping, a `.safetensors`/`.bin` file, or a directory saved by `save_pretrained`."""
    if isinstance(source, Mapping):
        return source
    path = os.fspath(source)
    if os.path.isdir(path):
        files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
        if not files:
            raise FileNotFoundError(f"No .safetensors weights in {path}.")
        state = {}
        for name in files:
            state.update(load_file(os.path.join(path, name)))
        return state
    if path.endswith(".safetensors"):
        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def load_stage_weights(
    model: torch.nn.Module,
    source: str | os.PathLike | Mapping[str, torch.Tensor],
    prefixes: Sequence[str] | None = None,
) -> StageLoadReport:
    """Copy the tensors of `source` whose names start with one of `prefixes` (all if None) into `model`."""
    state = read_state_dict(source)
    own = model.state_dict()
    wanted = set()
    report = StageLoadReport()
    for key, tensor in state.items():
        if prefixes is not None and not key.startswith(tuple(prefixes)):
            report.unused.append(key)
            continue
        if key not in own:
            report.unused.append(key)
            continue
        if tuple(own[key].shape) != tuple(tensor.shape):
            raise ValueError(
                f"Shape mismatch for {key}: checkpoint {tuple(tensor.shape)} vs model {tuple(own[key].shape)}."
            )
        wanted.add(key)
    with torch.no_grad():
        for key in sorted(wanted):
            own[key].copy_(state[key].to(own[key].dtype))
    report.loaded = sorted(wanted)
    report.left_at_init = sorted(set(own) - wanted)
    return report
