"""Seeded synthetic masks and scenes for the evaluation tests (no data set ships annotations)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def blob_mask(rng: np.random.Generator, height: int, width: int, max_parts: int = 3) -> np.ndarray:
    """A non-empty ``(H, W)`` bool mask: the union of 1..max_parts random ellipses and rectangles."""
    rows, columns = np.ogrid[:height, :width]
    mask = np.zeros((height, width), dtype=bool)
    for _ in range(int(rng.integers(1, max_parts + 1))):
        center_y, center_x = rng.uniform(0, height), rng.uniform(0, width)
        radius_y, radius_x = rng.uniform(2, height / 3), rng.uniform(2, width / 3)
        if rng.random() < 0.5:
            mask |= ((rows - center_y) / radius_y) ** 2 + ((columns - center_x) / radius_x) ** 2 <= 1.0
        else:
            mask |= (np.abs(rows - center_y) <= radius_y) & (np.abs(columns - center_x) <= radius_x)
    if not mask.any():
        mask[int(rng.integers(height)), int(rng.integers(width))] = True
    return mask


def perturb_mask(rng: np.random.Generator, mask: np.ndarray) -> np.ndarray:
    """A noisy copy of ``mask``: shifted, grown or shrunk, with some pixels flipped near the border."""
    shifted = np.roll(mask, (int(rng.integers(-3, 4)), int(rng.integers(-3, 4))), axis=(0, 1))
    operation = rng.integers(3)
    if operation == 0:
        shifted = ndimage.binary_dilation(shifted, iterations=int(rng.integers(1, 3)))
    elif operation == 1:
        shifted = ndimage.binary_erosion(shifted, iterations=1)
    noise = rng.random(mask.shape) < 0.03
    return shifted ^ (noise & ndimage.binary_dilation(mask, iterations=2))


def random_binary_pairs(rng: np.random.Generator, count: int, height: int = 24, width: int = 32):
    """``count`` (prediction, reference) mask pairs, including empty masks and empty unions."""
    pairs = []
    for index in range(count):
        reference = blob_mask(rng, height, width) if index % 7 != 3 else np.zeros((height, width), bool)
        if index % 11 == 5:
            prediction = np.zeros((height, width), bool)
        elif index % 5 == 2:
            prediction = blob_mask(rng, height, width)
        else:
            prediction = perturb_mask(rng, reference)
        pairs.append((prediction, reference))
    return pairs
