"""Semantic ground truth derived from panoptic annotations.

Id convention (chosen here; the official repository does not ship the script that made its semantic PNGs):

* contiguous class id = position of the category in the panoptic JSON's ``categories`` **sorted by category id**
  (COCO: 0..132, things 0..79 then stuff 80..132; ADE20K: 0..149). This is the same order as ``class_names`` of
  :func:`~.coco_panoptic.load_coco_panoptic`, so ``class_index`` and the semantic id agree;
* every segment is painted with its category, crowd segments included (semantic labels ignore instance-ness);
* pixels of no segment (void) get :data:`IGNORE_ID` = 255.

PNGs are written as 8-bit greyscale (mode ``L``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .coco_panoptic import read_panoptic_png
from .json_io import load_json
from .skips import SkipCounter

IGNORE_ID = 255


def contiguous_category_ids(categories: Iterable[Mapping[str, Any]]) -> dict[int, int]:
    """``{dataset category id: contiguous id}`` in ascending category-id order."""
    ordered = sorted(int(c["id"]) for c in categories)
    if len(ordered) > IGNORE_ID:
        raise ValueError(f"{len(ordered)} categories do not fit below the ignore id {IGNORE_ID}")
    return {category_id: index for index, category_id in enumerate(ordered)}


def panoptic_to_semantic(segment_ids: np.ndarray, segments_info: Iterable[Mapping[str, Any]],
                         contiguous_ids: Mapping[int, int]) -> np.ndarray:
    """``(H, W)`` segment-id map -> ``(H, W)`` uint8 semantic map (``IGNORE_ID`` where void)."""
    semantic = np.full(segment_ids.shape, IGNORE_ID, dtype=np.uint8)
    for segment in segments_info:
        semantic[segment_ids == int(segment["id"])] = contiguous_ids[int(segment["category_id"])]
    return semantic


def write_semantic_pngs(panoptic_json: str | Path, panoptic_png_dir: str | Path, output_dir: str | Path, *,
                        counter: SkipCounter | None = None, overwrite: bool = False) -> int:
    """Write one semantic PNG per panoptic annotation (same file name); returns how many were written."""
    counter = counter if counter is not None else SkipCounter()
    data = load_json(panoptic_json)
    contiguous_ids = contiguous_category_ids(data["categories"])
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    written = 0
    for ann in data["annotations"]:
        target = output_dir / ann["file_name"]
        if target.exists() and not overwrite:
            continue
        try:
            segment_ids = read_panoptic_png(Path(panoptic_png_dir) / ann["file_name"])
            semantic = panoptic_to_semantic(segment_ids, ann["segments_info"], contiguous_ids)
        except Exception as error:  # noqa: BLE001 - one broken PNG must not stop the conversion
            counter.record(Path(panoptic_json).stem, "semantic_conversion_failed", ann["file_name"], error)
            continue
        Image.fromarray(semantic).save(target)
        written += 1
    return written


def load_semantic_png(path: str | Path) -> np.ndarray:
    """Semantic PNG -> ``(H, W)`` uint8 ids (works for these files and for ADE20K ``annotations_detectron2``)."""
    with Image.open(path) as png:
        return np.asarray(png, dtype=np.uint8).copy()
