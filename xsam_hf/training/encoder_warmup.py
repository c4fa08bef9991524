"""An encoder warm-up for a SAM encoder trained from random initialisation (`stage: encoder_warmup`).

X-SAM starts from a pretrained SAM-L, whose features already describe shapes. A SAM ViT trained from scratch (the
synthetic world's default model) does not get there through the Mask2Former losses of S1 in a CPU budget: its
features encode colour and position but an object's shape stays unreadable (`bench/world_shape_probe.py`: a linear
probe on mask-pooled features is near chance after 2,000 S1 steps). This stage stands in for the missing pretraining
with the most direct signal available: each ground-truth segment's feature on the connector's finest pyramid level,
averaged over its mask, is classified by a linear head into the data set's closed-set categories (cross-entropy).
It reads the S1 data (panoptic segments, the same loader and collator) and trains only the SAM encoder and the
connector; the result is an S1-form checkpoint whose `segmentation_encoder.*` and `connector.*` initialise S1
(`init_from` with those prefixes). Not part of the paper's recipe.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..modeling.modeling_xsam import XSamSegmentationOutput

WARMUP_STAGE = "encoder_warmup"
TRAINED_PREFIXES = ("segmentation_encoder.", "connector.")


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
        with torch.no_grad():
            canvas = segmentor.config.segmentation_encoder_config.image_size
            probe = torch.zeros(1, 3, canvas, canvas, dtype=segmentor.dtype, device=segmentor.device)
            width = segmentor.get_image_features(extra_pixel_values=probe).feature_pyramid[0].shape[1]
        self.head = nn.Linear(width, num_classes)
        for name, parameter in segmentor.named_parameters():
            parameter.requires_grad_(name.startswith(TRAINED_PREFIXES))

    def forward(self, extra_pixel_values: torch.Tensor, mask_labels: list[torch.Tensor],
                class_labels: list[torch.Tensor], **_: Any) -> XSamSegmentationOutput:
        finest = self.segmentor.get_image_features(extra_pixel_values=extra_pixel_values).feature_pyramid[0]
        pooled = [mask_pooled_features(finest[b], masks) for b, masks in enumerate(mask_labels) if len(masks)]
        targets = [labels.to(finest.device) for labels in class_labels if len(labels)]
        if not pooled:
            raise ValueError("The batch has no ground-truth segment to classify.")
        loss = F.cross_entropy(self.head(torch.cat(pooled)), torch.cat(targets))
        return XSamSegmentationOutput(loss=loss, seg_loss=loss, loss_dict={"loss_cross_entropy": loss})


def run_encoder_warmup(recipe: Mapping[str, Any]) -> dict[str, Any]:
    """Train the warm-up of `recipe` (an S1-style recipe with `stage: encoder_warmup`); save `output_dir/final`."""
    from transformers import set_seed

    from .collator import XSamDataCollator
    from .data.skips import SkipCounter
    from .train import build_model, build_processor, build_train_dataset, build_training_arguments
    from .trainer import XSamTrainer

    recipe = copy.deepcopy(dict(recipe))
    if recipe.get("stage") != WARMUP_STAGE:
        raise ValueError(f"run_encoder_warmup trains `stage: {WARMUP_STAGE}`, got {recipe.get('stage')!r}.")
    if recipe.get("augmentation"):
        raise ValueError("The encoder warm-up takes no augmentation (it reads whole segments).")
    s1_recipe = {**recipe, "stage": "s1"}  # the S1 data, processor and model form
    args = build_training_arguments(s1_recipe)
    args.module_lr_multipliers = {}
    set_seed(args.seed)
    counter = SkipCounter()
    dataset = build_train_dataset(s1_recipe, counter)
    processor = build_processor(s1_recipe)
    num_classes = len(dataset[0].example.class_names)
    segmentor, init_report = build_model(s1_recipe, num_closed_set_classes=num_classes)
    model = EncoderWarmupModel(segmentor, num_classes)
    collator = XSamDataCollator(processor, stage="s1", seed=int((recipe.get("data") or {}).get("seed", 0)),
                                counter=counter)
    trainer = XSamTrainer(model=model, args=args, train_dataset=dataset, data_collator=collator)
    result = trainer.train()

    final_dir = Path(args.output_dir) / "final"
    summary = {
        "stage": WARMUP_STAGE,
        "global_step": trainer.state.global_step,
        "training_loss": result.training_loss,
        "skipped_samples": trainer.skipped_samples,
        "skipped_by_source": counter.report(),
        "initialisation": init_report,
        "trained_prefixes": list(TRAINED_PREFIXES),
        "log_history": trainer.state.log_history,
    }
    if args.process_index == 0:
        segmentor.save_pretrained(final_dir)
        processor.save_pretrained(final_dir)
        (final_dir / "training_summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary


__all__ = ["EncoderWarmupModel", "TRAINED_PREFIXES", "WARMUP_STAGE", "mask_pooled_features", "run_encoder_warmup"]
