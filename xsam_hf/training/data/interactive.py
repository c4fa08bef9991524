"""COCO-Interactive (PSALM ``coco_interactive_{train,val}_psalm.json``) -> intseg examples.

A list of ``{image, image_info{file_name, height, width, id}, anns: [{id, category_id, bbox, iscrowd, segmentation,
point_visual_prompt_mask, scribble_visual_prompt_mask, box_visual_prompt_mask, mask_visual_prompt_mask}]}``.
Stored point and scribble prompts are thin; they are dilated with discs of radius 10 and 5. The raw click pixels
and the raw box (bounding box of the stored box prompt) are kept in ``points`` / ``box``.
Evaluation uses one sample per annotation per prompt type: :func:`~.sampling.expand_interactive_eval`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

from .coco_instances import CategoryTable, image_path_for
from .json_io import CompactJsonList, iter_json_objects
from .schema import XSamExample
from .skips import SkipCounter
from .source import ExampleSource
from .visual_prompt_annotations import category_table, prompted_objects

DILATION = {"point": 10, "scribble": 5}


def _build_interactive_example(item: dict[str, Any], *, source: str, image_dir: str | Path, table: CategoryTable,
                               dilate: bool, counter: SkipCounter) -> XSamExample:
    info = item["image_info"]
    height, width = int(info["height"]), int(info["width"])
    file_name = info.get("file_name") or item["image"]
    objects = prompted_objects(item["anns"], height, width, table, key_pattern="{type}_visual_prompt_mask",
                               dilate=DILATION if dilate else {}, counter=counter, source=source)
    return XSamExample(record_id=f"{source}/{info['id']}", task="intseg", source=source,
                       image_path=image_path_for(image_dir, file_name), image_size=(height, width),
                       class_names=list(table.names), class_ids=list(table.ids), objects=objects,
                       meta={"image_id": info["id"], "file_name": file_name})


def load_coco_interactive(json_path: str | Path, image_dir: str | Path, *,
                          categories: Iterable[Mapping[str, Any]] | str | Path | None = None,
                          source: str | None = None, dilate: bool = True,
                          counter: SkipCounter | None = None) -> ExampleSource[dict[str, Any]]:
    """``categories``: COCO category dicts or a COCO JSON path (e.g. ``instances_val2017.json``) for names."""
    counter = counter if counter is not None else SkipCounter()
    source = source or Path(json_path).stem
    records, seen_category_ids = CompactJsonList(), set()
    for item in iter_json_objects(json_path, counter.skipper(source)):
        seen_category_ids.update(int(a["category_id"]) for a in item.get("anns", []))
        records.append(item)
    table = category_table(categories, seen_category_ids)
    builder = partial(_build_interactive_example, source=source, image_dir=image_dir, table=table, dilate=dilate,
                      counter=counter)
    return ExampleSource(source, "intseg", records, builder, counter)
