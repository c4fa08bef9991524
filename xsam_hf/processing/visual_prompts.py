"""Visual prompts (points, scribbles, boxes, masks) and their masks on the SAM canvas.

Coordinates are in pixels of the ORIGINAL image: a point is `(x, y)`, a box is `(x0, y0, x1, y1)` (XYXY), a scribble
is a polyline `[(x, y), ...]`, a mask is a `(H, W)` boolean array. The image spans `[0, W] x [0, H]` and pixel
`(row, col)` has its centre at `(col + 0.5, row + 0.5)`.

Rasterisation follows the data the released model was trained on (COCO-Interactive / COCO-VGD): a point is a disc of
radius 10 px and a scribble is its polyline dilated by a disc of radius 5 px, both drawn at the original resolution;
a box is filled. The mask is then resized to the SAM canvas exactly like the image (same scale, nearest neighbour)
and zero-padded at the bottom/right.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

PromptKind = Literal["point", "scribble", "box", "mask"]
PROMPT_KINDS: tuple[str, ...] = ("point", "scribble", "box", "mask")

POINT_RADIUS = 10
SCRIBBLE_RADIUS = 5


@dataclass(frozen=True, eq=False)
class VisualPrompt:
    """One visual prompt, in original-image pixel coordinates.

    Build with `VisualPrompt.point(x, y)`, `.box(x0, y0, x1, y1)`, `.scribble([(x, y), ...])` or `.mask(array)`.
    `image` is the image the prompt is drawn on when it is not the sample's own image (cross-image VGD); `None`
    means the sample's image.
    """

    kind: PromptKind
    data: np.ndarray
    image: Any = None

    def __post_init__(self) -> None:
        if self.kind not in PROMPT_KINDS:
            raise ValueError(f"Unknown visual prompt kind {self.kind!r}; expected one of {PROMPT_KINDS}.")

    @classmethod
    def point(cls, x: float, y: float, image: Any = None) -> VisualPrompt:
        return cls("point", _finite_array([x, y], (2,), "A point"), image)

    @classmethod
    def box(cls, x0: float, y0: float, x1: float, y1: float, image: Any = None) -> VisualPrompt:
        return cls("box", _finite_array([x0, y0, x1, y1], (4,), "A box"), image)

    @classmethod
    def scribble(cls, points: Sequence[Sequence[float]] | np.ndarray, image: Any = None) -> VisualPrompt:
        array = np.asarray(points, dtype=np.float64)
        if array.ndim != 2 or array.shape[1] != 2 or len(array) == 0:
            raise ValueError(f"A scribble is a polyline of (x, y) points, shape (N, 2) with N >= 1; got {array.shape}.")
        return cls("scribble", _finite_array(array, array.shape, "A scribble"), image)

    @classmethod
    def mask(cls, mask: Any, image: Any = None) -> VisualPrompt:
        array = _as_bool_mask(mask)
        return cls("mask", array, image)

    @classmethod
    def coerce(cls, value: Any) -> VisualPrompt:
        """Accept a `VisualPrompt`, a dict with one of the keys point/box/scribble/mask (plus an optional
        `image`), or a 2-D boolean array / tensor (a mask)."""
        if isinstance(value, VisualPrompt):
            return value
        if isinstance(value, Mapping):
            kinds = [key for key in PROMPT_KINDS if key in value]
            unknown = set(value) - set(PROMPT_KINDS) - {"image"}
            if len(kinds) != 1 or unknown:
                raise ValueError(
                    "A visual prompt dict needs exactly one of the keys 'point', 'box', 'scribble', 'mask' "
                    f"(and optionally 'image'); got keys {sorted(value)}."
                )
            kind, image = kinds[0], value.get("image")
            if kind == "point":
                return cls.point(*_unpack(value[kind], 2, "A point"), image=image)
            if kind == "box":
                return cls.box(*_unpack(value[kind], 4, "A box"), image=image)
            if kind == "scribble":
                return cls.scribble(value[kind], image=image)
            return cls.mask(value[kind], image=image)
        if isinstance(value, (np.ndarray, torch.Tensor)) and value.ndim == 2:
            return cls.mask(value)
        raise TypeError(
            f"Cannot read a visual prompt from {type(value).__name__}: use VisualPrompt.point/box/scribble/mask, "
            "a dict such as {'box': (x0, y0, x1, y1)}, or a 2-D boolean mask."
        )


def rasterize(prompt: VisualPrompt, height: int, width: int) -> np.ndarray:
    """Draw a prompt as a `(height, width)` boolean mask on its (original-size) image, validating it."""
    if prompt.kind == "mask":
        if prompt.data.shape != (height, width):
            raise ValueError(
                f"The mask prompt has shape {prompt.data.shape} but its image is {height}x{width} (H x W)."
            )
        if not prompt.data.any():
            raise ValueError("The mask prompt is empty (no pixel is set).")
        return prompt.data.copy()
    if prompt.kind == "point":
        _check_inside(prompt.data[None], height, width, "Point")
        return _disc_union(prompt.data[None], POINT_RADIUS, height, width)
    if prompt.kind == "scribble":
        _check_inside(prompt.data, height, width, "Scribble point")
        return _polyline_mask(prompt.data, SCRIBBLE_RADIUS, height, width)
    return _box_mask(prompt.data, height, width)


def bounding_box(mask: np.ndarray | torch.Tensor) -> tuple[int, int, int, int] | None:
    """Pixel-extent XYXY box `(x0, y0, x1, y1)` of a boolean mask (x1, y1 exclusive); `None` if empty."""
    array = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    rows = np.flatnonzero(array.any(axis=1))
    if len(rows) == 0:
        return None
    cols = np.flatnonzero(array.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def mask_to_canvas(mask: np.ndarray, reshaped_size: tuple[int, int], canvas_size: int) -> torch.Tensor:
    """Resize an original-size mask like the image (nearest) and pad it onto the square SAM canvas."""
    new_height, new_width = reshaped_size
    resized = np.asarray(
        Image.fromarray(mask.astype(np.uint8) * 255).resize((new_width, new_height), Image.Resampling.NEAREST)
    ) > 127
    if not resized.any():
        # A prompt thinner than one canvas pixel can vanish under nearest resizing; keep the pixels it falls in.
        rows, cols = np.nonzero(mask)
        scale_y, scale_x = new_height / mask.shape[0], new_width / mask.shape[1]
        resized[np.minimum((rows * scale_y).astype(int), new_height - 1),
                np.minimum((cols * scale_x).astype(int), new_width - 1)] = True
    canvas = torch.zeros((canvas_size, canvas_size), dtype=torch.bool)
    canvas[:new_height, :new_width] = torch.from_numpy(resized)
    return canvas


def _finite_array(values: Any, shape: tuple[int, ...], what: str) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64).reshape(shape)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{what} needs {int(np.prod(shape))} numbers, got {values!r}.") from error
    if not np.isfinite(array).all():
        raise ValueError(f"{what} has non-finite coordinates: {values!r}.")
    return array


def _unpack(values: Any, count: int, what: str) -> list[float]:
    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    if flat.size != count:
        raise ValueError(f"{what} needs {count} numbers, got {values!r}.")
    return flat.tolist()


def _as_bool_mask(mask: Any) -> np.ndarray:
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    elif isinstance(mask, Image.Image):
        mask = np.asarray(mask.convert("L")) > 0
    array = np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(f"A mask prompt must be a 2-D (H, W) array, got shape {array.shape}.")
    if array.dtype == np.bool_:
        return array
    if np.issubdtype(array.dtype, np.integer):  # 0/1 or 0/255 label images: non-zero is inside
        return array != 0
    if np.issubdtype(array.dtype, np.floating) and np.isin(array, (0.0, 1.0)).all():
        return array != 0
    raise ValueError(f"A mask prompt must be boolean, integer or 0/1 float; got dtype {array.dtype}.")


def _check_inside(points: np.ndarray, height: int, width: int, what: str) -> None:
    for x, y in points:
        if not (0.0 <= x <= width and 0.0 <= y <= height):
            raise ValueError(
                f"{what} ({x:g}, {y:g}) lies outside the image (x in [0, {width}], y in [0, {height}])."
            )


def _pixel_grid(y_range: tuple[int, int], x_range: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    rows = np.arange(*y_range, dtype=np.float64)[:, None] + 0.5
    cols = np.arange(*x_range, dtype=np.float64)[None, :] + 0.5
    return rows, cols


def _window(center_lo: float, center_hi: float, radius: float, size: int) -> tuple[int, int]:
    return max(0, int(np.floor(center_lo - radius)) - 1), min(size, int(np.ceil(center_hi + radius)) + 1)


def _disc_union(centres: np.ndarray, radius: float, height: int, width: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    for x, y in centres:
        y0, y1 = _window(y, y, radius, height)
        x0, x1 = _window(x, x, radius, width)
        rows, cols = _pixel_grid((y0, y1), (x0, x1))
        mask[y0:y1, x0:x1] |= (cols - x) ** 2 + (rows - y) ** 2 <= radius**2
    return mask


def _polyline_mask(points: np.ndarray, radius: float, height: int, width: int) -> np.ndarray:
    if len(points) == 1:
        return _disc_union(points, radius, height, width)
    mask = np.zeros((height, width), dtype=bool)
    for (ax, ay), (bx, by) in zip(points[:-1], points[1:]):
        y0, y1 = _window(min(ay, by), max(ay, by), radius, height)
        x0, x1 = _window(min(ax, bx), max(ax, bx), radius, width)
        rows, cols = _pixel_grid((y0, y1), (x0, x1))
        dx, dy = bx - ax, by - ay
        length_sq = dx * dx + dy * dy
        # Distance from each pixel centre to the segment: project onto it, clamp to the end points.
        if length_sq == 0:
            t = np.zeros((rows.shape[0], cols.shape[1]))
        else:
            t = np.clip(((cols - ax) * dx + (rows - ay) * dy) / length_sq, 0.0, 1.0)
        mask[y0:y1, x0:x1] |= (cols - (ax + t * dx)) ** 2 + (rows - (ay + t * dy)) ** 2 <= radius**2
    return mask


def _box_mask(box: np.ndarray, height: int, width: int) -> np.ndarray:
    x0, y0, x1, y1 = box.tolist()
    if not (x0 < x1 and y0 < y1):
        raise ValueError(f"A box must be (x0, y0, x1, y1) with x0 < x1 and y0 < y1; got {tuple(box.tolist())}.")
    if not (0 <= x0 and 0 <= y0 and x1 <= width and y1 <= height):
        raise ValueError(
            f"The box {tuple(box.tolist())} reaches outside the image (x in [0, {width}], y in [0, {height}])."
        )
    # Pixels whose centre lies in the box; a box thinner than a pixel still marks the pixel holding its centre.
    c0, c1 = int(np.ceil(x0 - 0.5)), int(np.floor(x1 - 0.5)) + 1
    r0, r1 = int(np.ceil(y0 - 0.5)), int(np.floor(y1 - 0.5)) + 1
    if c1 <= c0:
        c0 = min(int((x0 + x1) / 2), width - 1)
        c1 = c0 + 1
    if r1 <= r0:
        r0 = min(int((y0 + y1) / 2), height - 1)
        r1 = r0 + 1
    mask = np.zeros((height, width), dtype=bool)
    mask[r0:r1, c0:c1] = True
    return mask
