"""What each X-SAM training stage trains, and the optimizer parameter groups (architecture spec §4).

* S1 (segmentor fine-tune): SAM encoder (lr x0.1), connector, Mask2Former decoder, closed-set head.
* S2 (alignment pre-train): only `vision_projector` and `seg_projector`; encoders and LLM frozen.
* S3 (mixed fine-tune): everything; SigLIP and SAM encoders at lr x0.1.
* LoRA / QLoRA: peft decides what trains (adapters, the new token rows, `modules_to_save`); see `peft_utils`.

Module names are matched as dotted components anywhere in a parameter name, so the same rules work on the bare
model (`vision_tower.encoder...`) and under peft (`base_model.model.vision_tower...modules_to_save.default...`).

Parameters that X-SAM's forward never reaches are frozen in every stage: they would only collect weight decay and
optimizer state, and under DDP they need `find_unused_parameters`. They are SigLIP's layers after the one read
(`vision_feature_layer=-2` skips the last layer), its post-layernorm and pooling head, and SAM's neck and any SAM
layers after the deepest one read.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from torch import nn

# Default per-module learning-rate multipliers of S1 and S3 (paramwise custom keys of the official configs).
ENCODER_LR_MULTIPLIERS: dict[str, float] = {"vision_tower": 0.1, "segmentation_encoder": 0.1}


@dataclass(frozen=True)
class StagePolicy:
    """Freezing and learning-rate rules of one stage.

    Attributes:
        trainable: top-level modules that train (`None`: every module).
        lr_multipliers: module name -> factor on the base learning rate.
    """

    trainable: tuple[str, ...] | None
    lr_multipliers: Mapping[str, float] = field(default_factory=dict)


STAGE_POLICIES: dict[str, StagePolicy] = {
    "s1": StagePolicy(
        trainable=("segmentation_encoder", "connector", "segmentation_decoder", "closed_set_head"),
        lr_multipliers={"segmentation_encoder": 0.1},
    ),
    "s2": StagePolicy(trainable=("vision_projector", "seg_projector")),
    "s3": StagePolicy(trainable=None, lr_multipliers=dict(ENCODER_LR_MULTIPLIERS)),
}


def name_has_module(parameter_name: str, module: str) -> bool:
    """True if `module` (dotted, e.g. `vision_tower` or `language_model.lm_head`) is a run of whole components of
    `parameter_name`."""
    return re.search(rf"(^|\.){re.escape(module)}(\.|$)", parameter_name) is not None


def unreached_parameter_modules(config) -> list[str]:
    """Module names (bare-model form) whose parameters X-SAM's forward never uses, for this config's stage."""
    unreached: list[str] = []
    stage = config.stage
    if stage in ("s2", "s3"):
        vision_layers = config.vision_config.num_hidden_layers
        # hidden_states[i] is the output of layer i - 1; index -2 means layers up to num_layers - 2 are read.
        last_read = _hidden_state_index(config.vision_feature_layer, vision_layers)
        unreached += [f"vision_tower.encoder.layers.{i}" for i in range(last_read, vision_layers)]
        unreached += ["vision_tower.post_layernorm", "vision_tower.head"]
    sam_layers = config.segmentation_encoder_config.num_hidden_layers
    read = []
    if stage in ("s2", "s3"):
        read.append(_hidden_state_index(config.segmentation_feature_layer, sam_layers))
    if stage in ("s1", "s3"):
        read += [_hidden_state_index(i, sam_layers) for i in config.connector_feature_layers]
    deepest = max(read)
    unreached += [f"segmentation_encoder.vision_encoder.layers.{i}" for i in range(deepest, sam_layers)]
    unreached.append("segmentation_encoder.vision_encoder.neck")
    return unreached


def _hidden_state_index(index: int, num_layers: int) -> int:
    """Number of encoder layers whose output `hidden_states[index]` depends on (hidden_states has num_layers + 1)."""
    return index if index >= 0 else num_layers + 1 + index


@dataclass
class FreezeReport:
    trainable: list[str]
    frozen: list[str]

    def summary(self) -> str:
        return f"{len(self.trainable)} trainable parameter tensors, {len(self.frozen)} frozen"


def apply_stage_freezing(
    model: nn.Module,
    trainable: Sequence[str] | None,
    frozen: Sequence[str] = (),
    freeze_unreached: bool = True,
) -> FreezeReport:
    """Set `requires_grad`: parameters under a `trainable` module (all if None) train, except those under `frozen`
    and, with `freeze_unreached`, those the forward never reaches."""
    never = list(frozen)
    if freeze_unreached and hasattr(model, "config") and hasattr(model.config, "stage"):
        never += unreached_parameter_modules(model.config)
    report = FreezeReport([], [])
    for name, parameter in model.named_parameters():
        wanted = trainable is None or any(name_has_module(name, m) for m in trainable)
        wanted = wanted and not any(name_has_module(name, m) for m in never)
        parameter.requires_grad_(wanted)
        (report.trainable if wanted else report.frozen).append(name)
    return report


# Normalisation layers (their scales and shifts are not decayed, as transformers does for LayerNorm).
_NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.LayerNorm,
    nn.GroupNorm,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.InstanceNorm2d,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)
# transformers' name patterns (bias, layernorm, rmsnorm, norm), plus embedding-like tensors: positional embeddings,
# level embeddings, learned queries, peft's trainable token rows, and the class head's learnable log-scale (a
# temperature: decaying it toward 0 would flatten every class logit).
_NO_DECAY_NAME_PATTERNS = (
    r"bias",
    r"layernorm",
    r"rmsnorm",
    r"(?:^|\.)norm(?:$|\.)",
    r"_norm(?:$|\.)",
    r"pos_embed",
    r"rel_pos_[hw]",
    r"level_embed",
    r"position_embedding",
    r"trainable_tokens_delta",
    r"logit_scale",
)


def no_decay_parameter_names(model: nn.Module) -> set[str]:
    """Parameters excluded from weight decay: biases, normalisation layers, embeddings (`nn.Embedding` weights and
    positional / level / query embeddings), peft's token rows and the class head's logit scale."""
    excluded: set[str] = set()
    patterns = [re.compile(p) for p in _NO_DECAY_NAME_PATTERNS]
    for module_name, module in model.named_modules():
        for parameter_name, _ in module.named_parameters(recurse=False):
            full = f"{module_name}.{parameter_name}" if module_name else parameter_name
            if isinstance(module, (*_NORM_TYPES, nn.Embedding)) or "Norm" in type(module).__name__:
                excluded.add(full)
            elif any(p.search(full.lower()) for p in patterns):
                excluded.add(full)
    return excluded


def lr_multiplier_for(name: str, lr_multipliers: Mapping[str, float]) -> float:
    """The multiplier of the most specific (longest) matching module name; 1.0 if none matches."""
    matches = [(len(module), factor) for module, factor in lr_multipliers.items() if name_has_module(name, module)]
    return max(matches)[1] if matches else 1.0


def parameter_groups(
    model: nn.Module,
    learning_rate: float,
    weight_decay: float,
    lr_multipliers: Mapping[str, float] | None = None,
    no_decay: Iterable[str] | None = None,
) -> list[dict]:
    """Optimizer parameter groups of the trainable parameters: one per (learning-rate multiplier, decay or not).

    Each group carries `lr`, `weight_decay`, and for inspection `name` (e.g. `"lr_x0.1/decay"`), `lr_multiplier`
    and `parameter_names`.
    """
    lr_multipliers = dict(lr_multipliers or {})
    no_decay = set(no_decay) if no_decay is not None else no_decay_parameter_names(model)
    groups: dict[tuple[float, bool], dict] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        factor = lr_multiplier_for(name, lr_multipliers)
        decays = name not in no_decay and weight_decay > 0
        key = (factor, decays)
        if key not in groups:
            groups[key] = {
                "params": [],
                "parameter_names": [],
                "lr": learning_rate * factor,
                "weight_decay": weight_decay if decays else 0.0,
                "lr_multiplier": factor,
                "name": f"lr_x{factor:g}/{'decay' if decays else 'no_decay'}",
            }
        groups[key]["params"].append(parameter)
        groups[key]["parameter_names"].append(name)
    return [groups[key] for key in sorted(groups, key=lambda k: (-k[0], not k[1]))]


__all__ = [
    "ENCODER_LR_MULTIPLIERS",
    "STAGE_POLICIES",
    "FreezeReport",
    "StagePolicy",
    "apply_stage_freezing",
    "lr_multiplier_for",
    "name_has_module",
    "no_decay_parameter_names",
    "parameter_groups",
    "unreached_parameter_modules",
]
