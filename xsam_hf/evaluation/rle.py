"""COCO run-length encoding of binary masks, the compact form the streaming accumulators keep.

A 512x512 mask is 256 KiB as bools; its compressed RLE is usually a few hundred bytes, which is what keeps the
AP and GCG accumulators' memory bounded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from ._arrays import as_binary_mask, to_numpy

CompressedRLE = dict  # {"size": [H, W], "counts": bytes}


def encode_mask_rle(mask: Any) -> dict[str, Any]:
    """Encode one ``(H, W)`` binary mask as a JSON-friendly COCO RLE ``{"size": [H, W], "counts": str}``."""
    rle = _encode(as_binary_mask(mask, "mask"))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def decode_rle(rle: Mapping[str, Any]) -> np.ndarray:
    """Decode a COCO RLE (compressed or uncompressed counts) to an ``(H, W)`` bool mask."""
    return mask_utils.decode(to_compressed_rle(rle, "rle")).astype(bool)


def _encode(mask: np.ndarray) -> CompressedRLE:
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))


def to_compressed_rle(segmentation: Any, name: str) -> CompressedRLE:
    """Convert one mask in any accepted form to a pycocotools compressed RLE (``counts`` as bytes).

    Accepted: an ``(H, W)`` bool/0-1 array or tensor; an RLE dict with ``size`` and ``counts`` (bytes, str, or an
    uncompressed list of run lengths). For polygons use :func:`polygons_to_rle` first.
    """
    if isinstance(segmentation, Mapping):
        if "size" not in segmentation or "counts" not in segmentation:
            raise ValueError(f"{name}: an RLE dict needs 'size' and 'counts', got keys {sorted(segmentation)}")
        size = [int(v) for v in segmentation["size"]]
        counts = segmentation["counts"]
        if isinstance(counts, (list, tuple)):  # uncompressed RLE
            return mask_utils.frPyObjects({"size": size, "counts": list(counts)}, size[0], size[1])
        if isinstance(counts, str):
            counts = counts.encode("ascii")
        return {"size": size, "counts": bytes(counts)}
    return _encode(as_binary_mask(to_numpy(segmentation), name))


def polygons_to_rle(polygons: Sequence[Sequence[float]], height: int, width: int) -> CompressedRLE:
    """Rasterise COCO polygons (flat ``[x0, y0, x1, y1, ...]`` lists, pixel units) into one compressed RLE.

    Polygons get their own entry point because a nested list is otherwise ambiguous with a mask given as rows.
    """
    return mask_utils.merge(mask_utils.frPyObjects([[float(v) for v in p] for p in polygons], height, width))


def masks_to_rles(masks: Any, name: str) -> list[CompressedRLE]:
    """Convert a stack ``(N, H, W)`` or a sequence of masks (arrays, tensors, RLE dicts) to compressed RLEs."""
    if masks is None:
        return []
    if hasattr(masks, "ndim") and not isinstance(masks, Mapping):
        array = to_numpy(masks)
        if array.ndim == 2:
            raise ValueError(f"{name} must be a stack (N, H, W) or a list of masks, got one (H, W) mask")
        if array.ndim != 3:
            raise ValueError(f"{name} must be a stack (N, H, W) of masks, got shape {tuple(array.shape)}")
        return [_encode(as_binary_mask(m, f"{name}[{i}]")) for i, m in enumerate(array)]
    return [to_compressed_rle(m, f"{name}[{i}]") for i, m in enumerate(masks)]


def common_size(rles: Sequence[CompressedRLE], what: str) -> tuple[int, int] | None:
    """Return the shared ``(H, W)`` of the RLEs, ``None`` if empty, or raise naming ``what`` if sizes differ."""
    sizes = {tuple(int(v) for v in r["size"]) for r in rles}
    if len(sizes) > 1:
        raise ValueError(f"{what}: masks have different sizes {sorted(sizes)}")
    return next(iter(sizes)) if sizes else None
