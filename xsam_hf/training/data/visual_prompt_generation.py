"""Generating training visual prompts (point, scribble, box, mask) from an instance mask.

Each connected component of the instance with more than ``MIN_COMPONENT_AREA`` pixels gets its own prompt shape;
the shapes of one type are unioned into one canvas-size mask per type. All randomness comes from the
``numpy.random.Generator`` passed in, so a seeded generator gives the same prompts every time.

Rules per type (component = one connected region, bbox = its bounding box):

* point: up to ``POINT_TRIES`` draws of a pixel at a random angle and a random distance of at most half the smaller
  bbox side from the centroid, until one lies inside the component (fallback: a random pixel of the component);
  then a disc of radius ``POINT_RADIUS``.
* scribble: a box around the centroid whose sides are the bbox sides scaled by U(0.5, 1.2), redrawn until its IoU
  with the bbox is at least 0.5 (fallback: the bbox); a line between two opposite corners, bent sideways by
  ``A·sin(2π·f·t + φ)`` with A ~ U(10, 20) px, f ~ U(0.2, 1) cycles over the line, φ ~ U(0, 2π); dilated with
  radius ``SCRIBBLE_RADIUS``.
* box: the bbox with width and height scaled by U(0.9, 1.1) about its centre, filled.
* mask: the component blurred with a Gaussian (σ = 2) and thresholded at the mean of the blurred values over the
  blur's support (values above 1e-3), which gives a smoothed outline of about the object's size.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage

from .schema import PROMPT_TYPES

MIN_COMPONENT_AREA = 5
POINT_TRIES = 1000
POINT_RADIUS = 10
SCRIBBLE_RADIUS = 5
SCRIBBLE_BOX_TRIES = 100
MASK_BLUR_SIGMA = 2.0


def disc(radius: int) -> np.ndarray:
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return xx * xx + yy * yy <= radius * radius


@functools.lru_cache(maxsize=None)
def _disc_stencil(radius: int) -> np.ndarray:
    stencil = disc(radius)
    stencil.flags.writeable = False
    return stencil


def stamp_discs(shape: tuple[int, int], ys: np.ndarray, xs: np.ndarray, radius: int) -> np.ndarray:
    """Union of discs of ``radius`` centred at integer pixels ``(ys, xs)``, clipped to ``shape``.

    The same result as a binary dilation of the points by the disc, computed by pasting the disc at each distinct
    point: prompts have few points, and a dilation over the whole canvas cost ~20 ms per prompt.
    """
    height, width = shape
    size = 2 * radius + 1
    padded = np.zeros((height + 2 * radius, width + 2 * radius), dtype=bool)
    inside = (ys >= 0) & (ys < height) & (xs >= 0) & (xs < width)
    stencil = _disc_stencil(radius)
    for y, x in set(zip(ys[inside].tolist(), xs[inside].tolist())):
        padded[y : y + size, x : x + size] |= stencil
    return padded[radius : radius + height, radius : radius + width]


def connected_components(mask: np.ndarray, min_area: int = MIN_COMPONENT_AREA) -> list[np.ndarray]:
    """8-connected components with more than ``min_area`` pixels, each as a full-size ``bool`` mask."""
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    areas = ndimage.sum_labels(np.ones_like(labels), labels, index=np.arange(1, count + 1))
    return [labels == k + 1 for k in range(count) if areas[k] > min_area]


def _bbox(component: np.ndarray) -> tuple[int, int, int, int]:
    """``(y0, x0, y1, x1)`` with exclusive ends."""
    ys, xs = np.nonzero(component)
    return int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1


def click_point(component: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    """The clicked pixel ``(y, x)``: a random offset from the centroid that lands inside the component."""
    cy, cx = ndimage.center_of_mass(component)
    y0, x0, y1, x1 = _bbox(component)
    max_radius = 0.5 * min(y1 - y0, x1 - x0)
    height, width = component.shape
    for _ in range(POINT_TRIES):
        angle, distance = rng.uniform(0.0, 2 * np.pi), rng.uniform(0.0, max_radius)
        y, x = int(round(cy + distance * np.sin(angle))), int(round(cx + distance * np.cos(angle)))
        if 0 <= y < height and 0 <= x < width and component[y, x]:
            return y, x
    ys, xs = np.nonzero(component)
    pick = int(rng.integers(len(ys)))
    return int(ys[pick]), int(xs[pick])


def point_prompt(component: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, list[float]]:
    """Returns the disc mask and the clicked ``[x, y]``."""
    y, x = click_point(component, rng)
    return stamp_discs(component.shape, np.array([y]), np.array([x]), POINT_RADIUS), [float(x), float(y)]


def _box_iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    iy = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ix = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iy * ix
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def scribble_polyline(component: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The scribble's pixels ``(ys, xs)`` before dilation: a sine-deformed diagonal of a jittered box."""
    cy, cx = ndimage.center_of_mass(component)
    y0, x0, y1, x1 = _bbox(component)
    bbox = (float(y0), float(x0), float(y1), float(x1))
    box = bbox
    for _ in range(SCRIBBLE_BOX_TRIES):
        half_h = 0.5 * (y1 - y0) * rng.uniform(0.5, 1.2)
        half_w = 0.5 * (x1 - x0) * rng.uniform(0.5, 1.2)
        candidate = (cy - half_h, cx - half_w, cy + half_h, cx + half_w)
        if _box_iou(candidate, bbox) >= 0.5:
            box = candidate
            break
    # One of the two diagonals, in a random direction.
    corners = [(box[0], box[1]), (box[2], box[3])] if rng.random() < 0.5 else [(box[0], box[3]), (box[2], box[1])]
    if rng.random() < 0.5:
        corners.reverse()
    (ya, xa), (yb, xb) = corners
    length = float(np.hypot(yb - ya, xb - xa))
    steps = max(2, int(np.ceil(length)) * 2)
    t = np.linspace(0.0, 1.0, steps)
    amplitude, frequency, phase = rng.uniform(10, 20), rng.uniform(0.2, 1.0), rng.uniform(0, 2 * np.pi)
    offset = amplitude * np.sin(2 * np.pi * frequency * t + phase)
    normal_y, normal_x = (xb - xa) / max(length, 1e-6), -(yb - ya) / max(length, 1e-6)
    ys = np.round(ya + t * (yb - ya) + offset * normal_y).astype(int)
    xs = np.round(xa + t * (xb - xa) + offset * normal_x).astype(int)
    return ys, xs


def scribble_prompt(component: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    ys, xs = scribble_polyline(component, rng)
    return stamp_discs(component.shape, ys, xs, SCRIBBLE_RADIUS)


def box_prompt(component: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, list[float]]:
    """Returns the filled box and its ``[x0, y0, x1, y1]`` (clipped to the image)."""
    y0, x0, y1, x1 = _bbox(component)
    cy, cx = 0.5 * (y0 + y1), 0.5 * (x0 + x1)
    half_h, half_w = 0.5 * (y1 - y0) * rng.uniform(0.9, 1.1), 0.5 * (x1 - x0) * rng.uniform(0.9, 1.1)
    height, width = component.shape
    top, bottom = max(0, int(round(cy - half_h))), min(height, int(round(cy + half_h)))
    left, right = max(0, int(round(cx - half_w))), min(width, int(round(cx + half_w)))
    canvas = np.zeros(component.shape, dtype=bool)
    canvas[top:max(bottom, top + 1), left:max(right, left + 1)] = True
    return canvas, [float(left), float(top), float(max(right, left + 1)), float(max(bottom, top + 1))]


def mask_prompt(component: np.ndarray) -> np.ndarray:
    blurred = ndimage.gaussian_filter(component.astype(np.float32), sigma=MASK_BLUR_SIGMA)
    support = blurred > 1e-3
    return blurred > blurred[support].mean() if support.any() else component.copy()


def generate_visual_prompts(mask: np.ndarray, rng: np.random.Generator) -> dict[str, dict[str, object]]:
    """Instance mask -> ``{type: {"mask": bool array, "points": [[x, y], ...] | None, "box": XYXY | None}}``.

    Types whose mask came out empty (no component above the area threshold) map to an all-False mask.
    """
    shape = mask.shape
    prompts: dict[str, dict[str, object]] = {t: {"mask": np.zeros(shape, dtype=bool), "points": None, "box": None}
                                             for t in PROMPT_TYPES}
    points: list[list[float]] = []
    boxes: list[list[float]] = []
    for component in connected_components(mask.astype(bool)):
        point_mask, point = point_prompt(component, rng)
        prompts["point"]["mask"] |= point_mask  # type: ignore[operator]
        points.append(point)
        prompts["scribble"]["mask"] |= scribble_prompt(component, rng)  # type: ignore[operator]
        box_mask, box = box_prompt(component, rng)
        prompts["box"]["mask"] |= box_mask  # type: ignore[operator]
        boxes.append(box)
        prompts["mask"]["mask"] |= mask_prompt(component)  # type: ignore[operator]
    if points:
        prompts["point"]["points"] = points
    if len(boxes) == 1:  # a raw box is only meaningful for a single-component instance
        prompts["box"]["box"] = boxes[0]
    return prompts
