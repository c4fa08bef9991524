"""COCO-VGD (visual-grounded segmentation): reading its JSON, and generating it from COCO instances when missing.

File layout (``img_vgdseg_coco_{train,val}.json``): a list of ``{image_file, image_id, image_size, image_info,
annotations}`` where each annotation is a COCO instance annotation plus ``visual_prompts: {point_visual_prompt,
scribble_visual_prompt, box_visual_prompt, mask_visual_prompt}`` (RLE). Files written by
:func:`generate_coco_vgd` use the same layout, with ``image_size = [height, width]`` and two optional extras that the
loader reads when present: ``point_visual_prompt_points`` (raw clicks) and ``box_visual_prompt_box`` (raw XYXY).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from .coco_instances import CategoryTable, group_annotations_by_image, image_path_for
from .json_io import CompactJsonList, iter_json_objects, load_json
from .masks import decode_mask, encode_mask
from .schema import XSamExample
from .skips import SkipCounter
from .source import ExampleSource
from .visual_prompt_annotations import category_table, prompted_objects
from .visual_prompt_generation import generate_visual_prompts


def _image_hw(item: Mapping[str, Any]) -> tuple[int, int]:
    info = item.get("image_info") or {}
    if "height" in info and "width" in info:
        return int(info["height"]), int(info["width"])
    for ann in item.get("annotations", []):
        segmentation = ann.get("segmentation")
        if isinstance(segmentation, dict) and "size" in segmentation:
            return int(segmentation["size"][0]), int(segmentation["size"][1])
    height, width = item["image_size"]  # files written here store [height, width]
    return int(height), int(width)


def _build_vgd_example(item: dict[str, Any], *, source: str, image_dir: str | Path, table: CategoryTable,
                       counter: SkipCounter) -> XSamExample:
    height, width = _image_hw(item)
    objects = prompted_objects(item["annotations"], height, width, table, key_pattern="{type}_visual_prompt",
                               dilate={}, counter=counter, source=source, prompts_field="visual_prompts")
    return XSamExample(record_id=f"{source}/{item['image_id']}", task="vgdseg", source=source,
                       image_path=image_path_for(image_dir, item["image_file"]), image_size=(height, width),
                       class_names=list(table.names), class_ids=list(table.ids), objects=objects,
                       meta={"image_id": item["image_id"], "file_name": item["image_file"]})


def load_coco_vgd(json_path: str | Path, image_dir: str | Path, *,
                  categories: Iterable[Mapping[str, Any]] | str | Path | None = None,
                  generate_from: str | Path | None = None, seed: int = 0, source: str | None = None,
                  counter: SkipCounter | None = None) -> ExampleSource[dict[str, Any]]:
    """Load ``json_path``; if it does not exist and ``generate_from`` (a COCO instances JSON) is given, write it first.

    ``categories`` (COCO category dicts or a COCO JSON path) names the classes; it defaults to ``generate_from``.
    ``class_names`` is the full category list, the vocabulary that VGD sampling draws negatives from.
    """
    counter = counter if counter is not None else SkipCounter()
    json_path = Path(json_path)
    if not json_path.exists():
        if generate_from is None:
            raise FileNotFoundError(f"{json_path} does not exist and no instances JSON was given to generate it")
        generate_coco_vgd(generate_from, json_path, seed=seed, counter=counter)
    source = source or json_path.stem
    records, seen_category_ids = CompactJsonList(), set()
    for item in iter_json_objects(json_path, counter.skipper(source)):
        seen_category_ids.update(int(a["category_id"]) for a in item.get("annotations", []))
        records.append(item)
    table = category_table(categories if categories is not None else generate_from, seen_category_ids)
    builder = partial(_build_vgd_example, source=source, image_dir=image_dir, table=table, counter=counter)
    return ExampleSource(source, "vgdseg", records, builder, counter)


def _prompted_annotation(ann: Mapping[str, Any], height: int, width: int, seed: int) -> dict[str, Any]:
    # Seeded per annotation id: the same annotation gets the same prompts whatever the file order.
    rng = np.random.default_rng([seed, int(ann["id"])])
    prompts = generate_visual_prompts(decode_mask(ann["segmentation"], height, width), rng)
    stored: dict[str, Any] = {f"{prompt_type}_visual_prompt": encode_mask(prompt["mask"])  # type: ignore[arg-type]
                              for prompt_type, prompt in prompts.items()}
    if prompts["point"]["points"] is not None:
        stored["point_visual_prompt_points"] = prompts["point"]["points"]
    if prompts["box"]["box"] is not None:
        stored["box_visual_prompt_box"] = prompts["box"]["box"]
    return {**ann, "visual_prompts": stored}


def generate_coco_vgd(instances_json: str | Path, output_json: str | Path, *, seed: int = 0,
                      counter: SkipCounter | None = None) -> int:
    """Write a COCO-VGD file from COCO instances (non-crowd annotations only); returns the number of images.

    Images with no usable annotation are left out. The file is written to a temporary name and renamed, so an
    interrupted run never leaves a truncated file that a later run would trust.
    """
    counter = counter if counter is not None else SkipCounter()
    source = Path(output_json).stem
    data = load_json(instances_json)
    by_image = group_annotations_by_image(a for a in data["annotations"] if not a.get("iscrowd", 0))
    output_json = Path(output_json)
    output_json.parent.mkdir(parents=True, exist_ok=True)
    partial = output_json.with_name(output_json.name + ".partial")
    written = 0
    with open(partial, "w", encoding="utf-8") as handle:
        handle.write("[")
        for image in data["images"]:
            height, width = int(image["height"]), int(image["width"])
            annotations = []
            for ann in by_image.get(image["id"], []):
                try:
                    annotations.append(_prompted_annotation(ann, height, width, seed))
                except Exception as error:  # noqa: BLE001
                    counter.record(source, "prompt_generation_failed", str(ann.get("id")), error)
            if not annotations:
                continue
            item = {"image_file": image["file_name"], "image_id": image["id"], "image_size": [height, width],
                    "image_info": image, "annotations": annotations}
            handle.write(("," if written else "") + json.dumps(item))
            written += 1
        handle.write("]")
    os.replace(partial, output_json)
    return written
