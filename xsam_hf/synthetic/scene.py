"""One scene of the synthetic world: sampled from a seeded generator, then rendered with exact masks.

A scene is stuff (sky above a wavy horizon; ground and/or water below it) plus up to :data:`MAX_OBJECTS` coloured
shapes painted back to front, so later objects occlude earlier ones. Rendering first builds the panoptic id map (which
segment owns each pixel) and then colours every pixel from its owner, so the image and the masks agree exactly: a
mask is ``id_map == segment_id``, with no anti-aliased edge. Mild texture (stuff patterns, object shading, pixel
noise) keeps a colour lookup from solving the tasks.

Every scene depends only on ``(seed, split, index)``, so scenes can be made in any order or in parallel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from .vocabulary import (CANVAS_SIZE, CATEGORY_ID, COLOURS, GROUND_COLOURS, MAX_OBJECTS, SHAPES, SIZES, SKY_COLOURS,
                         STUFF, WATER_COLOUR)

SPLIT_CODES: dict[str, int] = {"train": 0, "val": 1}
VAL_IMAGE_ID_OFFSET = 1_000_000  # val image ids are disjoint from train ids, as in COCO
OBJECT_COUNT_PROBABILITIES = (0.05, 0.15, 0.2, 0.2, 0.2, 0.2)  # 1..MAX_OBJECTS objects
SIZE_PROBABILITIES = (0.4, 0.35, 0.25)  # small, medium, large
# Twins (an attribute copied from an earlier object) make attribute-only descriptions ambiguous, which is what
# referring relations are for.
COPY_BOTH_PROBABILITY, COPY_SHAPE_PROBABILITY, COPY_COLOUR_PROBABILITY = 0.15, 0.15, 0.1
NEAR_PLACEMENT_PROBABILITY = 0.35  # place next to an earlier object, so occlusion and "next to" happen often
MIN_VISIBLE_FRACTION = 0.55  # an occluded object keeps at least this share of its pixels
MIN_VISIBLE_PIXELS = 40
MIN_STUFF_PIXELS = 64
PLACEMENT_TRIES = 30
STUFF_SEGMENT_ID_BASE = 100  # stuff segment id = 100 + index in STUFF; object segment ids are 1..6
PIXEL_NOISE_SIGMA = 3.0


@dataclass
class SceneObject:
    """One shape. ``mask`` is the visible part (after occlusion); ``full_mask`` the whole drawn shape."""

    shape: str
    colour: str
    size: str
    centre: tuple[float, float]  # (x, y) pixels
    half_extent: float
    angle: float  # radians, the shape's rotation
    rgb: tuple[int, int, int]
    full_mask: np.ndarray
    segment_id: int = 0
    mask: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=bool))

    @property
    def area(self) -> int:
        return int(self.mask.sum())

    @property
    def centroid(self) -> tuple[float, float]:
        """(x, y) of the visible pixels' centres."""
        ys, xs = np.nonzero(self.mask)
        return float(xs.mean()) + 0.5, float(ys.mean()) + 0.5

    @property
    def bbox(self) -> list[float]:
        """COCO ``[x, y, width, height]`` of the visible mask."""
        ys, xs = np.nonzero(self.mask)
        return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]

    @property
    def category_id(self) -> int:
        return CATEGORY_ID[self.shape]


@dataclass
class StuffRegion:
    name: str
    mask: np.ndarray  # visible pixels (objects removed)
    segment_id: int

    @property
    def area(self) -> int:
        return int(self.mask.sum())

    @property
    def category_id(self) -> int:
        return CATEGORY_ID[self.name]


@dataclass
class Scene:
    split: str
    index: int
    image_id: int
    image: np.ndarray  # (H, W, 3) uint8, before JPEG encoding
    segment_ids: np.ndarray  # (H, W) int32 panoptic id map; every pixel belongs to one segment
    objects: list[SceneObject]  # back to front
    stuff: list[StuffRegion]  # in STUFF order, present ones only
    sky_colour: str | None

    @property
    def file_name(self) -> str:
        return image_file_name(self.image_id)

    @property
    def stuff_names(self) -> list[str]:
        return [region.name for region in self.stuff]


def image_id_for(split: str, index: int) -> int:
    return index + 1 + (VAL_IMAGE_ID_OFFSET if split == "val" else 0)


def image_file_name(image_id: int) -> str:
    return f"{image_id:012d}.jpg"


def scene_rng(seed: int, split: str, index: int, stream: int = 0) -> np.random.Generator:
    """The generator of one scene (stream 0: geometry and pixels; other streams: its texts and prompts)."""
    return np.random.default_rng([seed, SPLIT_CODES[split], index, stream])


# ---- shape masks ------------------------------------------------------------------------------------------------
_YY, _XX = np.mgrid[0:CANVAS_SIZE, 0:CANVAS_SIZE]
_PIXEL_Y, _PIXEL_X = _YY + 0.5, _XX + 0.5  # pixel centres
_ROWS = _YY.astype(np.float32)
_RIPPLE_BASE = (2 * np.pi * _YY / 5.0 + 0.6 * np.sin(_XX / 9.0)).astype(np.float32)  # water ripples before the phase


def _polygon_mask(vertices: list[tuple[float, float]]) -> np.ndarray:
    canvas = Image.new("L", (CANVAS_SIZE, CANVAS_SIZE), 0)
    # PIL puts pixel centres on integer coordinates; the vertices are in pixel-corner coordinates.
    ImageDraw.Draw(canvas).polygon([(x - 0.5, y - 0.5) for x, y in vertices], fill=1)
    return np.asarray(canvas, dtype=bool)


def _rotated(points: list[tuple[float, float]], centre: tuple[float, float], angle: float) -> list[tuple[float, float]]:
    cos, sin = math.cos(angle), math.sin(angle)
    cx, cy = centre
    return [(cx + x * cos - y * sin, cy + x * sin + y * cos) for x, y in points]


def shape_mask(shape: str, centre: tuple[float, float], half_extent: float, angle: float) -> np.ndarray:
    """The full (unoccluded) mask of a shape on the canvas. ``half_extent`` is the centre-to-outline distance."""
    cx, cy = centre
    r = half_extent
    if shape in ("circle", "ring"):
        distance2 = (_PIXEL_X - cx) ** 2 + (_PIXEL_Y - cy) ** 2
        mask = distance2 <= r * r
        return mask & (distance2 > (0.5 * r) ** 2) if shape == "ring" else mask
    if shape == "square":
        s = 0.85 * r
        points = [(-s, -s), (s, -s), (s, s), (-s, s)]
    elif shape == "triangle":  # equilateral, pointing up (y grows downwards); centred on its bounding box
        points = [(r * math.cos(a), r * math.sin(a) + 0.25 * r) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
    elif shape == "star":
        points = [((r if k % 2 == 0 else 0.45 * r) * math.cos(-math.pi / 2 + k * math.pi / 5),
                   (r if k % 2 == 0 else 0.45 * r) * math.sin(-math.pi / 2 + k * math.pi / 5)) for k in range(10)]
    elif shape == "cross":
        w = 0.34 * r
        points = [(-w, -r), (w, -r), (w, -w), (r, -w), (r, w), (w, w), (w, r), (-w, r), (-w, w), (-r, w), (-r, -w),
                  (-w, -w)]
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return _polygon_mask(_rotated(points, centre, angle))


MAX_ROTATION: dict[str, float] = {"circle": 0.0, "ring": 0.0, "square": 0.26, "triangle": 0.14, "star": 0.26,
                                  "cross": 0.2}


# ---- stuff layout --------------------------------------------------------------------------------------------
def _stuff_label_map(rng: np.random.Generator) -> tuple[np.ndarray, str | None]:
    """(H, W) index into STUFF for every pixel, and the sky's colour name (``None`` without sky)."""
    size = CANVAS_SIZE
    labels = np.full((size, size), STUFF.index("ground"), dtype=np.int8)
    has_sky = rng.random() < 0.85
    horizon = np.zeros(size)
    if has_sky:
        level, amplitude = rng.uniform(36, 76), rng.uniform(0, 5)
        wavelength, phase = rng.uniform(60, 160), rng.uniform(0, 2 * np.pi)
        horizon = level + amplitude * np.sin(2 * np.pi * (np.arange(size) + 0.5) / wavelength + phase)
        labels[_PIXEL_Y < horizon[None, :]] = STUFF.index("sky")
    lower = rng.choice(["ground", "water", "both"], p=[0.35, 0.25, 0.4])
    below = _PIXEL_Y >= horizon[None, :]
    if lower == "water":
        labels[below] = STUFF.index("water")
    elif lower == "both":
        if rng.random() < 0.5:  # a band of water at the bottom
            top = float(horizon.max()) + 16
            level = rng.uniform(top, max(top, size - 16))
            shore = level + rng.uniform(0, 3) * np.sin(2 * np.pi * (np.arange(size) + 0.5) / rng.uniform(30, 90))
            labels[below & (_PIXEL_Y >= shore[None, :])] = STUFF.index("water")
        else:  # water on the left or right side
            edge = rng.uniform(36, size - 36)
            shore = edge + rng.uniform(0, 4) * np.sin(2 * np.pi * (np.arange(size) + 0.5) / rng.uniform(30, 90))
            side = _PIXEL_X < shore[:, None] if rng.random() < 0.5 else _PIXEL_X >= shore[:, None]
            labels[below & side] = STUFF.index("water")
    sky_colour = str(rng.choice(list(SKY_COLOURS))) if has_sky else None
    return labels, sky_colour


def _smooth_noise(rng: np.random.Generator, cells: int) -> np.ndarray:
    """Low-frequency noise in about [-1, 1] on the canvas (a coarse random grid, bilinearly upsampled)."""
    coarse = rng.normal(size=(cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(coarse, mode="F").resize((CANVAS_SIZE, CANVAS_SIZE), Image.BILINEAR))


def _stuff_pixels(rng: np.random.Generator, labels: np.ndarray, sky_colour: str | None) -> np.ndarray:
    size = CANVAS_SIZE
    # sky: lighter towards the horizon, with soft clouds
    sky = np.asarray(SKY_COLOURS[sky_colour] if sky_colour else (0, 0, 0), dtype=np.float32)
    sky_pixels = sky * (0.9 + 0.12 * (_ROWS / size))[..., None] + 10 * _smooth_noise(rng, 6)[..., None]
    # ground: blotchy earth
    ground = np.asarray(GROUND_COLOURS[int(rng.integers(len(GROUND_COLOURS)))], dtype=np.float32)
    ground_pixels = ground + 16 * _smooth_noise(rng, 12)[..., None]
    # water: horizontal ripples
    phase = np.float32(rng.uniform(0, 2 * np.pi))
    ripples = np.sin(_RIPPLE_BASE + phase)
    water_pixels = np.asarray(WATER_COLOUR, dtype=np.float32) + 14 * ripples[..., None]
    layers = [labels[..., None] == STUFF.index(name) for name in ("sky", "ground", "water")]
    return np.select(layers, [sky_pixels, ground_pixels, water_pixels]).astype(np.float32)


# ---- objects -------------------------------------------------------------------------------------------------
def _object_attributes(rng: np.random.Generator, placed: list[SceneObject]) -> tuple[str, str, str]:
    shape, colour = str(rng.choice(SHAPES)), str(rng.choice(list(COLOURS)))
    if placed:
        model = placed[int(rng.integers(len(placed)))]
        draw = rng.random()
        if draw < COPY_BOTH_PROBABILITY:
            shape, colour = model.shape, model.colour
        elif draw < COPY_BOTH_PROBABILITY + COPY_SHAPE_PROBABILITY:
            shape = model.shape
        elif draw < COPY_BOTH_PROBABILITY + COPY_SHAPE_PROBABILITY + COPY_COLOUR_PROBABILITY:
            colour = model.colour
    size = str(rng.choice(list(SIZES), p=SIZE_PROBABILITIES))
    return shape, colour, size


def _place(rng: np.random.Generator, shape: str, half_extent: float, angle: float,
           placed: list[SceneObject]) -> np.ndarray | None:
    """A full mask for the new object that leaves every earlier object visible enough, or ``None``."""
    margin = half_extent + 1
    for _ in range(PLACEMENT_TRIES):
        if placed and rng.random() < NEAR_PLACEMENT_PROBABILITY:
            anchor = placed[int(rng.integers(len(placed)))]
            direction = rng.uniform(0, 2 * np.pi)
            distance = (anchor.half_extent + half_extent) * rng.uniform(0.6, 1.05)
            cx = anchor.centre[0] + distance * math.cos(direction)
            cy = anchor.centre[1] + distance * math.sin(direction)
        else:
            cx, cy = rng.uniform(margin, CANVAS_SIZE - margin, size=2)
        if not (margin <= cx <= CANVAS_SIZE - margin and margin <= cy <= CANVAS_SIZE - margin):
            continue
        mask = shape_mask(shape, (float(cx), float(cy)), half_extent, angle)
        if mask.sum() < MIN_VISIBLE_PIXELS:
            continue
        # The new object is drawn on top: every earlier object must keep enough of its visible part.
        if all((earlier.mask & ~mask).sum() >= max(MIN_VISIBLE_PIXELS, MIN_VISIBLE_FRACTION * earlier.full_mask.sum())
               for earlier in placed):
            return mask
    return None


def _shade(rng: np.random.Generator, obj: SceneObject) -> np.ndarray:
    """Per-pixel colour of an object over the canvas: its RGB with a soft directional shading."""
    direction = rng.uniform(0, 2 * np.pi)
    along = ((_PIXEL_X - obj.centre[0]) * math.cos(direction) + (_PIXEL_Y - obj.centre[1]) * math.sin(direction))
    shading = 16.0 * np.clip(along / max(obj.half_extent, 1.0), -1.0, 1.0)
    return np.asarray(obj.rgb, dtype=np.float32)[None, None, :] + shading[..., None]


def generate_scene(seed: int, split: str, index: int) -> Scene:
    """The scene ``index`` of ``split`` for ``seed`` (pure function of the three)."""
    rng = scene_rng(seed, split, index)
    while True:  # redraw the rare layout whose stuff is almost entirely hidden
        scene = _draw_scene(rng, split, index)
        if all(region.area >= MIN_STUFF_PIXELS for region in scene.stuff):
            return scene


def _draw_scene(rng: np.random.Generator, split: str, index: int) -> Scene:
    labels, sky_colour = _stuff_label_map(rng)
    image = _stuff_pixels(rng, labels, sky_colour)
    count = int(rng.choice(np.arange(1, MAX_OBJECTS + 1), p=OBJECT_COUNT_PROBABILITIES))
    objects: list[SceneObject] = []
    for _ in range(count):
        shape, colour, size = _object_attributes(rng, objects)
        low, high = SIZES[size]
        half_extent = float(rng.uniform(low, high))
        angle = float(rng.uniform(-MAX_ROTATION[shape], MAX_ROTATION[shape]))
        full_mask = _place(rng, shape, half_extent, angle, objects)
        if full_mask is None:
            continue
        jitter = rng.integers(-12, 13, size=3)
        rgb = tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(COLOURS[colour], jitter))
        ys, xs = np.nonzero(full_mask)
        obj = SceneObject(shape=shape, colour=colour, size=size, centre=(float(xs.mean()) + 0.5,
                                                                          float(ys.mean()) + 0.5),
                          half_extent=half_extent, angle=angle, rgb=rgb, full_mask=full_mask,  # type: ignore[arg-type]
                          mask=full_mask.copy())
        for earlier in objects:
            earlier.mask &= ~full_mask
        objects.append(obj)

    segment_ids = (STUFF_SEGMENT_ID_BASE + labels).astype(np.int32)
    for number, obj in enumerate(objects, start=1):
        obj.segment_id = number
        segment_ids[obj.full_mask] = number  # back to front: later objects overwrite
        image[obj.full_mask] = _shade(rng, obj)[obj.full_mask]
    for obj in objects:
        obj.mask = segment_ids == obj.segment_id
    stuff = [StuffRegion(name=name, mask=segment_ids == STUFF_SEGMENT_ID_BASE + k,
                         segment_id=STUFF_SEGMENT_ID_BASE + k)
             for k, name in enumerate(STUFF) if (segment_ids == STUFF_SEGMENT_ID_BASE + k).any()]
    image += rng.normal(0.0, PIXEL_NOISE_SIGMA, size=image.shape).astype(np.float32)
    pixels = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return Scene(split=split, index=index, image_id=image_id_for(split, index), image=pixels,
                 segment_ids=segment_ids, objects=objects, stuff=stuff,
                 sky_colour=sky_colour if any(r.name == "sky" for r in stuff) else None)
