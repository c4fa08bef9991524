"""An encoder warm-up for a SAM encoder trained from random initialisation (`stage: encoder_warmup`).

X-SAM starts from a pretrained SAM-L, whose features already describe shapes. A SAM ViT trained from scratch (the
synthetic world's default model) does not get there through the Mask2Former losses of S1 in a CPU budget: its
features encode colour and position but an object's shape stays unreadable (`bench/world_shape_probe.py`: a linear
probe on mask-pooled features reads 34% of the shapes after 2,000 S1 steps, chance being 17%). This stage stands in
for the missing pretraining with the most direct signal available: each ground-truth segment's feature on the connector's finest pyramid level,
averaged over its mask, is classified by a linear head into the data set's closed-set categories (cross-entropy).
The classes of a closed set can be colour-blind (the synthetic world's are shapes), and features trained on them and
on the Mask2Former losses lose colour, which referring expressions and questions need (`bench/world_shape_probe.py
--attribute colour`: after the shape-only warm-up, S1 and S3, the pyramid reads 53% / 40% / 23% of the world's eight
colours, finest to coarsest, where the mask-averaged pixels read all of them); so with `warmup: {colour_weight: w}`
each pyramid level also regresses the segment's mean input colour (its normalised pixels averaged over the mask, a
self-supervised target: no label needed), MSE weighted by `w`. (The class head reads the finest level only, which
the `world` connector builds from SAM block 4: without the colour heads the later blocks get no gradient here, and
with them alone the coarser levels keep colour but lose shape; `warmup: {classify_every_level: true}` gives every
level a class head of its own, the cross-entropy averaged over the levels.)
It reads the S1 data (panoptic segments, the same loader and collator) and trains only the SAM encoder and the
connector; the result is an S1-form checkpoint whose `segmentation_encoder.*` and `connector.*` initialise S1
(`init_from` with those prefixes). `run_training` trains it like any other stage (same set-up, checkpoints, resume
and callbacks), with `EncoderWarmupModel` wrapped around the S1-form model. Not part of the paper's recipe.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..modeling.modeling_xsam import XSamSegmentationOutput
from .recipe_values import recipe_flag
from .stages import FreezeReport, apply_stage_freezing

WARMUP_STAGE = "encoder_warmup"
TRAINED_PREFIXES = ("segmentation_encoder.", "connector.")
# What the warm-up trains, as `apply_stage_freezing` module names on the wrapped model.
TRAINED_MODULES = tuple(f"segmentor.{prefix.rstrip('.')}" for prefix in TRAINED_PREFIXES) + (
    "head", "coarse_heads", "colour_heads")


def mask_pooled_features(features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """`features` (C, h, w) averaged over each of `masks` (N, H, W) (area-weighted at the feature resolution): (N, C).
    A mask with no pixel gives a zero row."""
    cover = F.interpolate(masks[:, None].to(features.dtype), size=features.shape[-2:], mode="area")[:, 0]
    return torch.einsum("nhw,chw->nc", cover, features) / cover.sum((1, 2)).clamp(min=1e-6)[:, None]


class EncoderWarmupModel(nn.Module):
    """An S1-form X-SAM with a linear class head over mask-pooled finest-level features (with `classify_every_level`,
    one over each pyramid level) and, when `colour_weight` > 0, a linear colour head per pyramid level (the decoder is
    not used)."""

    def __init__(self, segmentor: nn.Module, num_classes: int, colour_weight: float = 0.0,
                 classify_every_level: bool = False) -> None:
        super().__init__()
        if colour_weight < 0:
            raise ValueError(f"warmup.colour_weight must be >= 0, got {colour_weight}.")
        self.segmentor = segmentor
        self.config = segmentor.config  # XSamTrainer reads the loss weights here
        widths = segmentor.config.decoder_config.feature_channels  # the connector's levels, finest first
        self.head = nn.Linear(widths[0], num_classes)
        self.coarse_heads = (nn.ModuleList(nn.Linear(width, num_classes) for width in widths[1:])
                             if classify_every_level else None)
        self.colour_weight = colour_weight
        channels = segmentor.config.segmentation_encoder_config.num_channels
        self.colour_heads = nn.ModuleList(nn.Linear(width, channels) for width in widths) if colour_weight else None

    def _pooled(self, extra_pixel_values: torch.Tensor, mask_labels: list[torch.Tensor]):
        """Per pyramid level, every segment's mask-pooled features (sum of N_b, C_level), and the segments' mean
        input pixels (sum of N_b, channels)."""
        pyramid = self.segmentor.get_image_features(extra_pixel_values=extra_pixel_values).feature_pyramid
        images = [b for b, masks in enumerate(mask_labels) if len(masks)]
        if not images:
            raise ValueError("The batch has no ground-truth segment to classify.")
        masks = {b: mask_labels[b].to(extra_pixel_values.device) for b in images}
        levels = [torch.cat([mask_pooled_features(level[b], masks[b]) for b in images]) for level in pyramid]
        colours = torch.cat([mask_pooled_features(extra_pixel_values[b], masks[b]) for b in images])
        return levels, colours

    def segment_logits(self, extra_pixel_values: torch.Tensor, mask_labels: list[torch.Tensor]) -> torch.Tensor:
        """The class head's logits for every segment of `mask_labels` (one (N_b, H, W) tensor per image), image by
        image: (sum of N_b, num_classes)."""
        return self.head(self._pooled(extra_pixel_values, mask_labels)[0][0])

    def forward(self, extra_pixel_values: torch.Tensor, mask_labels: list[torch.Tensor],
                class_labels: list[torch.Tensor], **_: Any) -> XSamSegmentationOutput:
        levels, colours = self._pooled(extra_pixel_values, mask_labels)
        targets = torch.cat([labels for labels in class_labels if len(labels)]).to(levels[0].device)
        heads = [self.head, *(self.coarse_heads or ())]
        per_level = [F.cross_entropy(head(level), targets) for head, level in zip(heads, levels)]
        loss = loss_ce = torch.stack(per_level).mean()
        losses = {"loss_cross_entropy": loss_ce}
        if self.colour_heads is not None:
            # the target is the input itself: no gradient flows into it
            loss_colour = torch.stack([F.mse_loss(head(level), colours.detach())
                                       for head, level in zip(self.colour_heads, levels)]).mean()
            losses["loss_colour"] = loss_colour
            loss = loss + self.colour_weight * loss_colour
        return XSamSegmentationOutput(loss=loss, seg_loss=loss, loss_dict=losses)


def freeze_for_warmup(model: EncoderWarmupModel) -> FreezeReport:
    """Train only the SAM encoder, the connector and the head (the stage's fixed policy)."""
    return apply_stage_freezing(model, TRAINED_MODULES, freeze_unreached=False)


def warmup_settings(recipe: Mapping[str, Any], warmup: bool) -> dict[str, Any]:
    """The recipe's `warmup: {colour_weight, classify_every_level}` as `EncoderWarmupModel` keyword arguments (empty
    without the section); the section belongs to the warm-up stage only."""
    section = recipe.get("warmup")
    if section is None:
        return {}
    if not warmup:
        raise ValueError(f"A `warmup:` section applies to the {WARMUP_STAGE} stage only, not {recipe.get('stage')!r}.")
    unknown = set(section) - {"colour_weight", "classify_every_level"}
    if unknown:
        raise ValueError(f"`warmup:` takes only colour_weight and classify_every_level, got {sorted(unknown)}.")
    return {"colour_weight": float(section.get("colour_weight", 0.0)),
            "classify_every_level": recipe_flag(section, "classify_every_level", "warmup")}


def check_warmup_recipe(recipe: Mapping[str, Any]) -> None:
    """The warm-up trains the full-precision encoder and connector on whole segments: nothing else applies."""
    for key, why in (("lora", "it trains no LLM"), ("quantization", "it trains no LLM"),
                     ("freeze", "it always trains exactly the encoder and connector"),
                     ("augmentation", "it reads whole segments")):
        if recipe.get(key):
            raise ValueError(f"The {WARMUP_STAGE} stage takes no `{key}:` section ({why}).")


__all__ = ["EncoderWarmupModel", "TRAINED_MODULES", "TRAINED_PREFIXES", "WARMUP_STAGE", "check_warmup_recipe",
           "freeze_for_warmup", "mask_pooled_features", "warmup_settings"]
