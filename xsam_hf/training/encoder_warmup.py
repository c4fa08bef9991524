"""An encoder warm-up for a SAM encoder trained from random initialisation (`stage: encoder_warmup`).

X-SAM starts from a pretrained SAM-L, whose features already describe shapes. A SAM ViT trained from scratch (the
synthetic world's default model) does not get there through the Mask2Former losses of S1 in a CPU budget: its
features encode colour and position but an object's shape stays unreadable (`bench/world_shape_probe.py`: a linear
probe on mask-pooled features reads 34% of the shapes after 2,000 S1 steps, chance being 17%). This stage stands in
for the missing pretraining with the most direct signal available: each ground-truth segment's feature on the connector's finest pyramid level,
averaged over its mask, is classified by a linear head into the data set's closed-set categories (cross-entropy).
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
from .stages import FreezeReport, apply_stage_freezing

WARMUP_STAGE = "encoder_warmup"
TRAINED_PREFIXES = ("segmentation_encoder.", "connector.")
# What the warm-up trains, as `apply_stage_freezing` module names on the wrapped model.
TRAINED_MODULES = tuple(f"segmentor.{prefix.rstrip('.')}" for prefix in TRAINED_PREFIXES) + ("head",)


def mask_pooled_features(features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """`features` (C, h, w) averaged over each of `masks` (N, H, W) (area-weighted at the feature resolution): (N, C).
    A mask with no pixel gives a zero row."""
    cover = F.interpolate(masks[:, None].to(features.dtype), size=features.shape[-2:], mode="area")[:, 0]
    return torch.einsum("nhw,chw->nc", cover, features) / cover.sum((1, 2)).clamp(min=1e-6)[:, None]


class EncoderWarmupModel(nn.Module):
    """An S1-form X-SAM with a linear head over mask-pooled finest-level features (the decoder is not used)."""

    def __init__(self, segmentor: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.segmentor = segmentor
        self.config = segmentor.config  # XSamTrainer reads the loss weights here
        finest_width = segmentor.config.decoder_config.feature_channels[0]  # the connector's finest level
        self.head = nn.Linear(finest_width, num_classes)

    def segment_logits(self, extra_pixel_values: torch.Tensor, mask_labels: list[torch.Tensor]) -> torch.Tensor:
        """The head's logits for every segment of `mask_labels` (one (N_b, H, W) tensor per image), image by image:
        (sum of N_b, num_classes)."""
        finest = self.segmentor.get_image_features(extra_pixel_values=extra_pixel_values).feature_pyramid[0]
        pooled = [mask_pooled_features(finest[b], masks.to(finest.device))
                  for b, masks in enumerate(mask_labels) if len(masks)]
        if not pooled:
            raise ValueError("The batch has no ground-truth segment to classify.")
        return self.head(torch.cat(pooled))

    def forward(self, extra_pixel_values: torch.Tensor, mask_labels: list[torch.Tensor],
                class_labels: list[torch.Tensor], **_: Any) -> XSamSegmentationOutput:
        logits = self.segment_logits(extra_pixel_values, mask_labels)
        targets = torch.cat([labels for labels in class_labels if len(labels)]).to(logits.device)
        loss = F.cross_entropy(logits, targets)
        return XSamSegmentationOutput(loss=loss, seg_loss=loss, loss_dict={"loss_cross_entropy": loss})


def freeze_for_warmup(model: EncoderWarmupModel) -> FreezeReport:
    """Train only the SAM encoder, the connector and the head (the stage's fixed policy)."""
    return apply_stage_freezing(model, TRAINED_MODULES, freeze_unreached=False)


def check_warmup_recipe(recipe: Mapping[str, Any]) -> None:
    """The warm-up trains the full-precision encoder and connector on whole segments: nothing else applies."""
    for key, why in (("lora", "it trains no LLM"), ("quantization", "it trains no LLM"),
                     ("freeze", "it always trains exactly the encoder and connector"),
                     ("augmentation", "it reads whole segments")):
        if recipe.get(key):
            raise ValueError(f"The {WARMUP_STAGE} stage takes no `{key}:` section ({why}).")


__all__ = ["EncoderWarmupModel", "TRAINED_MODULES", "TRAINED_PREFIXES", "WARMUP_STAGE", "check_warmup_recipe",
           "freeze_for_warmup", "mask_pooled_features"]
