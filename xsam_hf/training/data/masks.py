"""Mask encodings: COCO RLE in and out, polygons, and the panoptic PNG colour code."""

from __future__ import annotations

from typing import Any

import numpy as np
from pycocotools import mask as coco_mask

from .schema import Rle


def encode_mask(mask: np.ndarray) -> Rle:
    """Binary ``(H, W)`` array -> compact RLE with text counts (JSON and Arrow friendly)."""
    if mask.ndim != 2:
        raise ValueError(f"expected a 2-D mask, got shape {mask.shape}")
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def decode_rle(rle: Rle) -> np.ndarray:
    """Compact (or uncompressed) RLE -> ``bool`` array of shape ``(height, width)``."""
    return decode_mask(rle)


def _to_compressed(rle: dict[str, Any]) -> dict[str, Any]:
    height, width = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, list):  # uncompressed RLE (COCO iscrowd style)
        return coco_mask.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    return {"size": [height, width], "counts": counts}


def decode_mask(segmentation: Any, height: int | None = None, width: int | None = None) -> np.ndarray:
    """Any COCO segmentation -> ``bool`` ``(H, W)``.

    Accepts an RLE dict (compressed or uncompressed counts), a list of RLE dicts (unioned), or polygons
    (a list of flat ``[x0, y0, x1, y1, ...]`` lists, which need ``height`` and ``width``).
    """
    if isinstance(segmentation, dict):
        return coco_mask.decode(_to_compressed(segmentation)).astype(bool)
    if isinstance(segmentation, list) and segmentation and isinstance(segmentation[0], dict):
        masks = [decode_mask(part) for part in segmentation]
        return np.logical_or.reduce(masks)
    if isinstance(segmentation, list):
        if height is None or width is None:
            raise ValueError("polygon segmentation needs the image height and width")
        polygons = [[float(v) for v in poly] for poly in segmentation if len(poly) >= 6]
        if not polygons:
            return np.zeros((height, width), dtype=bool)
        merged = coco_mask.merge(coco_mask.frPyObjects(polygons, height, width))
        return coco_mask.decode(merged).astype(bool)
    raise ValueError(f"unsupported segmentation type {type(segmentation).__name__}")


def to_rle(segmentation: Any, height: int | None = None, width: int | None = None) -> Rle:
    """Any COCO segmentation -> compact RLE (compressed RLE is passed through without decoding)."""
    if isinstance(segmentation, dict) and not isinstance(segmentation.get("counts"), list):
        counts = segmentation["counts"]
        return {"size": [int(v) for v in segmentation["size"]],
                "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}
    return encode_mask(decode_mask(segmentation, height, width))


def rle_area(rle: Rle) -> int:
    return int(coco_mask.area(_to_compressed(rle)))


def rle_union(rles: list[Rle]) -> Rle:
    compressed = [_to_compressed(r) for r in rles]
    merged = coco_mask.merge(compressed, intersect=False)
    return {"size": [int(v) for v in merged["size"]], "counts": merged["counts"].decode("ascii")}


def rle_bbox(rle: Rle) -> list[float]:
    """COCO ``[x, y, width, height]`` of the mask (zeros for an empty mask)."""
    return [float(v) for v in coco_mask.toBbox(_to_compressed(rle))]


def rgb2id(color: np.ndarray) -> np.ndarray:
    """Panoptic PNG ``(H, W, 3)`` uint8 -> segment ids ``R + 256 G + 256² B`` (COCO panoptic convention)."""
    color = color.astype(np.int64)
    return color[..., 0] + 256 * color[..., 1] + 256 * 256 * color[..., 2]


def id2rgb(segment_ids: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb2id` (used to write panoptic PNGs)."""
    ids = segment_ids.astype(np.int64)
    return np.stack([ids % 256, (ids // 256) % 256, (ids // 65536) % 256], axis=-1).astype(np.uint8)
