"""Moving features between spaces: pixel shuffle, the projector MLP, and the `<region>` sampler."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from transformers.activations import ACT2FN


def pixel_shuffle(features: torch.Tensor, scale: float) -> torch.Tensor:
    """X-SAM's pixel shuffle on channels-last maps, `(B, H, W, C) -> (B, H*s, W*s, C/s**2)`.

    The element order is the one the released projector and connector weights were trained with, which is not
    `torch.nn.functional.pixel_(un)shuffle`'s:
    - `scale < 1` (space-to-depth, e.g. 0.5): each output channel block is ordered (row offset, column offset, c).
    - `scale > 1` (depth-to-space, e.g. 2): input channels are read as (column offset, row offset, c).
    The two directions are therefore not inverses of each other.
    """
    if scale == 1:
        return features
    batch, height, width, channels = features.shape
    if scale < 1:
        factor = round(1 / scale)
        if height % factor or width % factor:
            raise ValueError(f"pixel_shuffle({scale}) needs H and W divisible by {factor}, got {height}x{width}.")
        blocks = features.reshape(batch, height // factor, factor, width // factor, factor, channels)
        return blocks.permute(0, 1, 3, 2, 4, 5).reshape(
            batch, height // factor, width // factor, factor * factor * channels
        )
    factor = round(scale)
    if channels % (factor * factor):
        raise ValueError(f"pixel_shuffle({scale}) needs channels divisible by {factor * factor}, got {channels}.")
    blocks = features.reshape(batch, height, width, factor, factor, channels // (factor * factor))
    return blocks.permute(0, 1, 4, 2, 3, 5).reshape(
        batch, height * factor, width * factor, channels // (factor * factor)
    )


class XSamProjector(nn.Module):
    """Two-layer MLP (Linear, activation, Linear), the form of all three X-SAM projectors."""

    def __init__(self, in_features: int, out_features: int, hidden_act: str = "gelu"):
        super().__init__()
        self.linear_1 = nn.Linear(in_features, out_features)
        self.act = ACT2FN[hidden_act]
        self.linear_2 = nn.Linear(out_features, out_features)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(hidden_states)))


def _mask_seed(mask: torch.Tensor) -> int:
    """A seed that depends only on the mask's pixels, so inference picks the same points for the same prompt."""
    flat = mask.flatten().nonzero().flatten()
    return int((flat.sum() * 1_000_003 + flat.numel() * 7919 + flat[:1].sum()) % (2**31 - 1))


def sample_region_points(mask: torch.Tensor, num_points: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Choose `num_points` pixels inside a visual-prompt mask, as normalised (x, y) in [-1, 1].

    A random subset without replacement if the mask has more pixels than `num_points`; all of its pixels plus random
    repeats if it has fewer. Coordinates are the pixel index divided by the canvas size (then mapped to [-1, 1]), the
    convention of the released sampler.

    Args:
        mask: `(H, W)` bool/0-1 mask on the segmentation canvas; must not be empty.
        generator: a CPU generator; `None` uses the global RNG (training).
    Returns:
        `(num_points, 2)` float tensor of (x, y) grid coordinates.
    """
    ys, xs = torch.nonzero(mask, as_tuple=True)
    count = ys.numel()
    if count == 0:
        raise ValueError("A visual prompt mask is empty: it selects no pixel of the image.")
    if count >= num_points:
        chosen = torch.randperm(count, generator=generator)[:num_points]
    else:
        extra = torch.randint(count, (num_points - count,), generator=generator)
        chosen = torch.cat([torch.arange(count), extra])
    chosen = chosen.to(ys.device)
    height, width = mask.shape[-2:]
    y = ys[chosen].float() / height
    x = xs[chosen].float() / width
    return torch.stack([x, y], dim=-1) * 2 - 1


def region_features(
    feature_map: torch.Tensor,
    masks: torch.Tensor,
    num_points: int,
    deterministic: bool,
) -> torch.Tensor:
    """Pool one token per visual prompt: sample points in the mask, read the feature map there, max-pool.

    Args:
        feature_map: `(R, D, h, w)`: for each prompt, the feature grid of its source image (the seg-projector tokens
            laid out on their `h x w` grid).
        masks: `(R, H, W)` prompt masks on the segmentation canvas.
        deterministic: seed each prompt's point subset from its mask (inference) instead of the global RNG.
    Returns:
        `(R, D)` region tokens.
    """
    if masks.shape[0] == 0:
        return feature_map.new_zeros(0, feature_map.shape[1])
    grids = []
    for mask in masks:
        generator = torch.Generator().manual_seed(_mask_seed(mask.cpu())) if deterministic else None
        grids.append(sample_region_points(mask.cpu(), num_points, generator))
    grid = torch.stack(grids).to(device=feature_map.device, dtype=feature_map.dtype)  # (R, P, 2)
    sampled = F.grid_sample(feature_map, grid.unsqueeze(1), mode="bilinear", align_corners=True)  # (R, D, 1, P)
    return sampled.squeeze(2).amax(dim=-1)
