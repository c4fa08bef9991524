"""Visual prompts of the world's objects, by the official rules.

:func:`object_prompts` draws with the data layer's own steps (`xsam_hf.training.data.visual_prompt_generation`),
in the same order and from the same generator as its `generate_visual_prompts` (a test checks equality), and also
returns the thin prompts that COCO-Interactive (PSALM) stores: the clicked pixels and the undilated scribble
polyline, which its loader dilates with the same radii (10 and 5).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ..training.data.visual_prompt_generation import (
    POINT_RADIUS,
    SCRIBBLE_RADIUS,
    box_prompt,
    click_point,
    connected_components,
    mask_prompt,
    scribble_polyline,
    stamp_discs,
)


@dataclass
class ObjectPrompts:
    """Canvas-size masks per prompt type (dilated as COCO-VGD stores them) plus the thin PSALM forms."""

    masks: dict[str, np.ndarray]  # point, scribble, box, mask
    points: list[list[float]] | None  # raw clicks [x, y]
    box: list[float] | None  # raw XYXY box (single-component objects only)
    thin_point: np.ndarray  # the clicked pixels
    thin_scribble: np.ndarray  # the scribble polyline, one pixel wide


def object_prompts(mask: np.ndarray, rng: np.random.Generator) -> ObjectPrompts:
    """Prompts of one instance mask (each connected component above 5 pixels gets its own shapes)."""
    shape = mask.shape
    masks = {name: np.zeros(shape, dtype=bool) for name in ("point", "scribble", "box", "mask")}
    thin_point, thin_scribble = np.zeros(shape, dtype=bool), np.zeros(shape, dtype=bool)
    points: list[list[float]] = []
    boxes: list[list[float]] = []
    for component in connected_components(mask.astype(bool)):
        y, x = click_point(component, rng)
        thin_point[y, x] = True
        masks["point"] |= stamp_discs(shape, np.array([y]), np.array([x]), POINT_RADIUS)
        points.append([float(x), float(y)])
        ys, xs = scribble_polyline(component, rng)
        inside = (ys >= 0) & (ys < shape[0]) & (xs >= 0) & (xs < shape[1])
        thin_scribble[ys[inside], xs[inside]] = True
        masks["scribble"] |= stamp_discs(shape, ys, xs, SCRIBBLE_RADIUS)
        box_mask, box = box_prompt(component, rng)
        masks["box"] |= box_mask
        boxes.append(box)
        masks["mask"] |= mask_prompt(component)
    return ObjectPrompts(masks=masks, points=points or None, box=boxes[0] if len(boxes) == 1 else None,
                         thin_point=thin_point, thin_scribble=thin_scribble)
