"""The Mask2Former segmentation loss with X-SAM's per-batch classes, reusing transformers' implementation.

X-SAM's classes are the prompt's conditions, so their number changes from batch to batch. Class logits arrive as
`(N, Q, C_max + 1)`: each instance's conditions, padding (very negative logits), and the background last. That is
exactly what transformers' `Mask2FormerLoss(num_labels=C_max)` expects, so the upstream loss is reused as is: one
cross-entropy weight-normalised over all N x Q queries (background weight 0.1), Hungarian matching with costs 2/5/5
on 12,544 shared random points, BCE and dice on uncertainty-sampled points, deep supervision over every decoder layer.

Two changes: the number of classes is taken from each call's logits, and `num_masks` is averaged correctly across
processes (upstream averages the all-reduced count and then divides by the world size again, which makes the mask
and dice terms world-size times too large).
"""

from __future__ import annotations

import torch
from torch import distributed as dist
from transformers.models.mask2former.modeling_mask2former import Mask2FormerConfig, Mask2FormerLoss


class XSamSegmentationLoss(Mask2FormerLoss):
    def __init__(self, decoder_config: Mask2FormerConfig):
        super().__init__(
            decoder_config,
            weight_dict={
                "loss_cross_entropy": decoder_config.class_weight,
                "loss_mask": decoder_config.mask_weight,
                "loss_dice": decoder_config.dice_weight,
            },
        )

    def forward(
        self,
        masks_queries_logits: torch.Tensor,
        class_queries_logits: torch.Tensor,
        mask_labels: list[torch.Tensor],
        class_labels: list[torch.Tensor],
        auxiliary_predictions: list[dict[str, torch.Tensor]] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Unweighted loss terms (`loss_cross_entropy`, `loss_mask`, `loss_dice`, and `_{i}` for auxiliary layer i).

        Args:
            masks_queries_logits: `(N, Q, h, w)` mask logits of the last decoder layer.
            class_queries_logits: `(N, Q, C_max + 1)`, background last.
            mask_labels: N tensors `(n_i, H, W)`, the target masks of each decoder instance (any resolution: both
                sides are sampled at normalised point coordinates).
            class_labels: N long tensors `(n_i,)` in `[0, C_max)`.
        """
        num_classes = class_queries_logits.shape[-1] - 1
        for labels in class_labels:
            if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
                raise ValueError(f"class_labels must lie in [0, {num_classes}), got {labels.tolist()}.")
        self.num_labels = num_classes
        empty_weight = torch.ones(num_classes + 1, device=class_queries_logits.device)
        empty_weight[-1] = self.eos_coef
        self.empty_weight = empty_weight
        mask_labels = [m.to(masks_queries_logits.dtype) for m in mask_labels]
        return super().forward(
            masks_queries_logits, class_queries_logits, mask_labels, class_labels, auxiliary_predictions
        )

    def weighted_sum(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        """Sum of the terms, each weighted by the entry of `weight_dict` its name starts with (all layers)."""
        total = 0
        for name, value in losses.items():
            weight = next(w for key, w in self.weight_dict.items() if name.startswith(key))
            total = total + weight * value
        return total

    def get_num_masks(self, class_labels: list[torch.Tensor], device: torch.device) -> torch.Tensor:
        num_masks = torch.as_tensor(float(sum(len(c) for c in class_labels)), device=device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(num_masks)
            num_masks = num_masks / dist.get_world_size()
        return torch.clamp(num_masks, min=1)
