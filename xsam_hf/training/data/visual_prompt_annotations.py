"""Shared reading of COCO annotations that carry per-type visual-prompt masks (COCO-Interactive and COCO-VGD)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .coco_instances import CategoryTable
from .json_io import load_json
from .masks import decode_mask, encode_mask, to_rle
from .schema import PROMPT_TYPES, SegObject, VisualPrompt
from .skips import SkipCounter
from .visual_prompt_generation import stamp_discs

MAX_CLICK_PIXELS = 16  # a point prompt mask this small is a raw click, whose pixels are the clicked points


def category_table(categories: Iterable[Mapping[str, Any]] | str | Path | None,
                   seen_category_ids: Iterable[int]) -> CategoryTable:
    """Categories from a list, from a COCO JSON's ``categories``, or (``None``) named after the ids seen."""
    if isinstance(categories, (str, Path)):
        categories = load_json(categories)["categories"]
    if categories is None:
        categories = [{"id": cid, "name": str(cid)} for cid in sorted(set(seen_category_ids))]
    return CategoryTable.from_coco(categories)


def read_prompt(prompt_type: str, segmentation: Any, height: int, width: int, *, dilate_radius: int = 0,
                points: list[list[float]] | None = None, box: list[float] | None = None) -> VisualPrompt | None:
    """One stored prompt -> :class:`VisualPrompt`, or ``None`` when it is missing or empty."""
    if segmentation is None:
        return None
    mask = decode_mask(segmentation, height, width)
    if not mask.any():
        return None
    ys, xs = np.nonzero(mask)
    if prompt_type == "point" and points is None and len(ys) <= MAX_CLICK_PIXELS:
        points = [[float(x), float(y)] for y, x in zip(ys, xs)]
    if prompt_type == "box" and box is None:
        box = [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]
    if dilate_radius:
        mask = stamp_discs(mask.shape, ys, xs, dilate_radius)
    return VisualPrompt(type=prompt_type, mask=encode_mask(mask), points=points, box=box)


def prompted_objects(annotations: Iterable[Mapping[str, Any]], height: int, width: int, categories: CategoryTable,
                     *, key_pattern: str, dilate: Mapping[str, int], counter: SkipCounter, source: str,
                     prompts_field: str | None = None) -> list[SegObject]:
    """Annotations -> objects with their prompts. ``key_pattern`` names a prompt key, e.g.
    ``"{type}_visual_prompt_mask"``; ``prompts_field`` is the sub-dict holding them (``None``: the annotation)."""
    index_of = categories.index_of
    objects = []
    for ann in annotations:
        try:
            stored = ann[prompts_field] if prompts_field else ann
            class_index = index_of[int(ann["category_id"])]
            prompts = []
            for prompt_type in PROMPT_TYPES:
                key = key_pattern.format(type=prompt_type)
                prompt = read_prompt(prompt_type, stored.get(key), height, width,
                                     dilate_radius=dilate.get(prompt_type, 0),
                                     points=stored.get(f"{key}_points"), box=stored.get(f"{key}_box"))
                if prompt is not None:
                    prompts.append(prompt)
            mask = to_rle(ann["segmentation"], height, width)
        except Exception as error:  # noqa: BLE001
            counter.record(source, "bad_annotation", str(ann.get("id", "?")), error)
            continue
        objects.append(SegObject(mask=mask, class_index=class_index, isthing=categories.isthing[class_index],
                                 iscrowd=bool(ann.get("iscrowd", 0)), object_id=str(ann.get("id", len(objects))),
                                 bbox=[float(v) for v in ann["bbox"]] if ann.get("bbox") else None,
                                 visual_prompts=prompts))
    return objects
