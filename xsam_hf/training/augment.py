"""The S1 augmentation of X-SAM: a random scale of the SAM canvas, then a centre crop (architecture spec §1.2).

The released S1 recipe draws `s ~ U(0.1, 2.0)` per image, resizes the image (bilinear) so that it fits a square of
side `s * canvas` (aspect ratio kept, so the longest side becomes `s * canvas`), crops the centre to at most
`canvas x canvas` and pads the result at the bottom/right to the canvas, exactly like the un-augmented SAM input. The
ground-truth masks go through the same resize (nearest), crop and zero padding. No flipping is used anywhere.

`CanvasGeometry` describes that mapping for one image, so the image, its masks and anything else drawn on it share
one transform. `CanvasGeometry.identity(...)` is the plain SAM preprocessing (longest side = canvas, no crop).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ..processing.image_processing import IMAGENET_MEAN, IMAGENET_STD, resized_size


@dataclass(frozen=True)
class CanvasGeometry:
    """How one image maps onto the square SAM canvas: resize to `resized`, keep the window `crop`, pad to `canvas`.

    Attributes:
        original: `(height, width)` of the source image.
        resized: `(height, width)` after resizing.
        crop: `(top, left, height, width)` window of the resized image that is kept (the whole image when it fits).
        canvas: side of the square canvas.
    """

    original: tuple[int, int]
    resized: tuple[int, int]
    crop: tuple[int, int, int, int]
    canvas: int

    @classmethod
    def identity(cls, height: int, width: int, canvas: int) -> CanvasGeometry:
        """The un-augmented SAM preprocessing: longest side resized to the canvas, nothing cropped."""
        new_height, new_width = resized_size(height, width, canvas)
        return cls((height, width), (new_height, new_width), (0, 0, new_height, new_width), canvas)

    @classmethod
    def scaled(cls, height: int, width: int, canvas: int, scale: float) -> CanvasGeometry:
        """Fit the image into a `scale * canvas` square (longest side = `scale * canvas`), then centre-crop to the
        canvas where it is larger."""
        target = scale * canvas
        factor = min(target / height, target / width)
        new_height = max(1, int(height * factor + 0.5))
        new_width = max(1, int(width * factor + 0.5))
        kept_height, kept_width = min(new_height, canvas), min(new_width, canvas)
        top, left = (new_height - kept_height) // 2, (new_width - kept_width) // 2
        return cls((height, width), (new_height, new_width), (top, left, kept_height, kept_width), canvas)

    @property
    def valid_size(self) -> tuple[int, int]:
        """`(height, width)` of the image content on the canvas (the rest is padding)."""
        return self.crop[2], self.crop[3]

    def image_to_canvas(
        self,
        image: Image.Image,
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
    ) -> torch.Tensor:
        """`(3, canvas, canvas)` float32: resized (bilinear), cropped, rescaled to [0, 1], normalised, zero padded
        (the SAM processor pads after normalising, so the padding is 0 in normalised units too)."""
        rgb = image.convert("RGB") if image.mode != "RGB" else image
        resized = rgb.resize((self.resized[1], self.resized[0]), Image.Resampling.BILINEAR)
        top, left, height, width = self.crop
        pixels = np.asarray(resized, dtype=np.float32)[top : top + height, left : left + width] * np.float32(1 / 255)
        mean = np.asarray(image_mean, dtype=np.float32)
        std = np.asarray(image_std, dtype=np.float32)
        pixels = (pixels - mean) / std
        canvas = torch.zeros((3, self.canvas, self.canvas), dtype=torch.float32)
        canvas[:, :height, :width] = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))
        return canvas

    def mask_to_canvas(self, mask: np.ndarray) -> torch.Tensor:
        """`(canvas, canvas)` bool: an original-size mask resized (nearest), cropped and zero padded like the image."""
        if mask.shape != self.original:
            raise ValueError(f"Mask of shape {mask.shape} for an image of size {self.original}.")
        resized = Image.fromarray(mask.astype(np.uint8) * 255).resize(
            (self.resized[1], self.resized[0]), Image.Resampling.NEAREST
        )
        top, left, height, width = self.crop
        kept = np.asarray(resized)[top : top + height, left : left + width] > 127
        canvas = torch.zeros((self.canvas, self.canvas), dtype=torch.bool)
        canvas[:height, :width] = torch.from_numpy(np.ascontiguousarray(kept))
        return canvas


@dataclass(frozen=True)
class RandomScaleCenterCrop:
    """S1's large-scale jitter: `scale ~ U(min_scale, max_scale)` of the canvas, then a centre crop."""

    min_scale: float = 0.1
    max_scale: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.min_scale <= self.max_scale:
            raise ValueError(f"Need 0 < min_scale <= max_scale, got {self.min_scale} and {self.max_scale}.")

    def sample(self, height: int, width: int, canvas: int, rng: np.random.Generator) -> CanvasGeometry:
        """Draw the geometry of one image."""
        scale = float(rng.uniform(self.min_scale, self.max_scale))
        return CanvasGeometry.scaled(height, width, canvas, scale)


__all__ = ["CanvasGeometry", "RandomScaleCenterCrop"]
