"""What the demo page's canvases give (clicks, painted brush layers) turned into visual prompts in ORIGINAL-image
pixels, and the markers drawn back on the image so people see what they placed.

No Gradio here: these are plain functions on PIL images and numpy arrays, tested without a browser.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw

ClickMode = Literal["point", "box"]
Point = tuple[float, float]
Box = tuple[float, float, float, float]

MARKER_COLOUR = (255, 40, 40)
PENDING_CORNER_COLOUR = (255, 200, 0)
# Scribbles become polylines of at most this many points: enough to follow a hand-drawn stroke, short in the JSON.
MAX_SCRIBBLE_POINTS = 64


@dataclass(frozen=True)
class ClickPrompts:
    """Points and boxes placed on one image: a box comes from a drag (the page's script reports it, see
    `parse_dragged_box`) or from two clicks on opposite corners; `pending_corner` holds the first corner until the
    second click comes."""

    points: tuple[Point, ...] = ()
    boxes: tuple[Box, ...] = ()
    pending_corner: Point | None = None

    def is_empty(self) -> bool:
        return not self.points and not self.boxes and self.pending_corner is None


def add_click(clicks: ClickPrompts, x: float, y: float, mode: ClickMode) -> ClickPrompts:
    """The prompts after one more click at original-image pixel (x, y)."""
    if mode == "point":
        return replace(clicks, points=clicks.points + ((float(x), float(y)),))
    if mode != "box":
        raise ValueError(f"Unknown click mode {mode!r}; expected 'point' or 'box'.")
    if clicks.pending_corner is None:
        return replace(clicks, pending_corner=(float(x), float(y)))
    (x0, y0), (x1, y1) = clicks.pending_corner, (float(x), float(y))
    box = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
    return replace(clicks, boxes=clicks.boxes + (box,), pending_corner=None)


def add_box(clicks: ClickPrompts, box: Box) -> ClickPrompts:
    """The prompts with one more box (any two opposite corners, original-image pixels), stored as XYXY."""
    x0, y0, x1, y1 = (float(value) for value in box)
    ordered = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
    return replace(clicks, boxes=clicks.boxes + (ordered,))


def parse_dragged_box(text: str | None, size: tuple[int, int]) -> Box | None:
    """The box a drag on the image reported, as the page's script writes it (JSON with "box": [x0, y0, x1, y1] in
    original-image pixels), clamped to the image of `size` (width, height); None for an empty or malformed value or
    a box with no area, so a stray event never adds a prompt."""
    import json
    import math

    try:
        corners = json.loads(text or "")["box"]
        x0, y0, x1, y1 = (float(value) for value in corners)
    except (ValueError, TypeError, KeyError):
        return None
    if not all(math.isfinite(value) for value in (x0, y0, x1, y1)):
        return None
    width, height = size
    x0, x1 = sorted((min(max(x0, 0.0), width), min(max(x1, 0.0), width)))
    y0, y1 = sorted((min(max(y0, 0.0), height), min(max(y1, 0.0), height)))
    if x1 - x0 < 1 or y1 - y0 < 1:
        return None
    return (x0, y0, x1, y1)


def describe_clicks(clicks: ClickPrompts) -> str:
    """One line per prompt, in original-image pixels (shown under the image)."""
    lines = [f"point ({x:.0f}, {y:.0f})" for x, y in clicks.points]
    lines += [f"box ({x0:.0f}, {y0:.0f}) - ({x1:.0f}, {y1:.0f})" for x0, y0, x1, y1 in clicks.boxes]
    if clicks.pending_corner is not None:
        x, y = clicks.pending_corner
        lines.append(f"box corner ({x:.0f}, {y:.0f}): click the opposite corner")
    return "\n".join(f"- {line}" for line in lines) if lines else "No clicked prompts yet."


def draw_click_markers(image: Image.Image, clicks: ClickPrompts) -> Image.Image:
    """A copy of `image` at its own size (so click coordinates stay original-image pixels) with the prompts drawn."""
    marked = image.convert("RGB")
    draw = ImageDraw.Draw(marked)
    radius = max(4, min(marked.size) // 80)
    line_width = max(2, radius // 2)
    for x, y in clicks.points:
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=MARKER_COLOUR, outline="white",
                     width=max(1, line_width // 2))
    for x0, y0, x1, y1 in clicks.boxes:
        draw.rectangle([x0, y0, x1, y1], outline=MARKER_COLOUR, width=line_width)
    if clicks.pending_corner is not None:
        x, y = clicks.pending_corner
        draw.line([x - 2 * radius, y, x + 2 * radius, y], fill=PENDING_CORNER_COLOUR, width=line_width)
        draw.line([x, y - 2 * radius, x, y + 2 * radius], fill=PENDING_CORNER_COLOUR, width=line_width)
    return marked


def painted_masks(layers: Sequence[Image.Image | np.ndarray | None], size: tuple[int, int]) -> list[np.ndarray]:
    """One boolean mask per non-empty brush layer, at the image's `size` (width, height).

    A layer is painted where its alpha is non-zero. The editor's canvas normally has the image's size; a layer of
    another size (a resized canvas) is scaled back with nearest neighbour so the mask covers the same region.
    """
    masks = []
    width, height = size
    for layer in layers:
        if layer is None:
            continue
        array = np.asarray(layer)
        if array.ndim == 3 and array.shape[2] == 4:
            painted = array[..., 3] > 0
        elif array.ndim == 3:
            painted = array.max(axis=2) > 0
        else:
            painted = array > 0
        if not painted.any():
            continue
        if painted.shape != (height, width):
            painted = np.asarray(
                Image.fromarray(painted.astype(np.uint8) * 255).resize((width, height), Image.Resampling.NEAREST)
            ) > 0
        masks.append(painted)
    return masks


def scribble_polylines(masks: Sequence[np.ndarray]) -> list[list[Point]]:
    """The painted strokes as polylines: one per connected stroke, following its centre line."""
    from scipy import ndimage

    polylines = []
    for mask in masks:
        components, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
        for index in range(1, count + 1):
            polylines.append(_centre_line(components == index))
    return polylines


def _centre_line(stroke: np.ndarray) -> list[Point]:
    """A polyline along one stroke's skeleton, walked from an end, in pixel-centre (x, y) coordinates."""
    from skimage.morphology import skeletonize

    skeleton = skeletonize(stroke)
    rows, cols = np.nonzero(skeleton if skeleton.any() else stroke)
    pixels = np.stack([cols + 0.5, rows + 0.5], axis=1)
    if len(pixels) == 1:
        return [tuple(pixels[0].tolist())]
    # Start at an end of the stroke: the pixel farthest from the stroke's centroid is one for a line-like stroke.
    start = int(np.argmax(((pixels - pixels.mean(axis=0)) ** 2).sum(axis=1)))
    order = [start]
    remaining = np.ones(len(pixels), dtype=bool)
    remaining[start] = False
    current = pixels[start]
    while remaining.any():
        candidates = np.flatnonzero(remaining)
        nearest = candidates[np.argmin(((pixels[candidates] - current) ** 2).sum(axis=1))]
        order.append(int(nearest))
        remaining[nearest] = False
        current = pixels[nearest]
    walked = pixels[order]
    step = max(1, int(np.ceil(len(walked) / MAX_SCRIBBLE_POINTS)))
    kept = walked[::step]
    if not np.array_equal(kept[-1], walked[-1]):
        kept = np.vstack([kept, walked[-1:]])
    return [(float(x), float(y)) for x, y in kept]


@dataclass
class VisualPromptArguments:
    """The pipeline's visual-prompt keyword arguments gathered from clicks and painting."""

    points: list[Point] = field(default_factory=list)
    boxes: list[Box] = field(default_factory=list)
    scribbles: list[list[Point]] = field(default_factory=list)
    masks: list[np.ndarray] = field(default_factory=list)

    def as_pipeline_kwargs(self) -> dict:
        named = {"points": self.points, "boxes": self.boxes, "scribbles": self.scribbles, "masks": self.masks}
        return {key: value for key, value in named.items() if len(value)}


def gather_visual_prompts(clicks: ClickPrompts, layers: Sequence[Image.Image | np.ndarray | None],
                          size: tuple[int, int], paint_as: Literal["scribble", "mask"]) -> VisualPromptArguments:
    """Clicked points and boxes plus painted layers read as scribbles or masks, all on an image of `size`."""
    if clicks.pending_corner is not None:
        raise ValueError("A box needs two clicks: click the opposite corner, or clear the prompts.")
    masks = painted_masks(layers, size)
    return VisualPromptArguments(
        points=list(clicks.points),
        boxes=list(clicks.boxes),
        scribbles=scribble_polylines(masks) if paint_as == "scribble" else [],
        masks=masks if paint_as == "mask" else [],
    )
