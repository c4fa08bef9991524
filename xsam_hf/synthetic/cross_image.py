"""Cross-image VGD validation: the visual prompt is drawn on one image, the masks to find are in another.

The official COCO-VGD file has no field for this (X-SAM only makes cross-image prompts inside a training batch,
architecture spec §1.9), so the world writes one small extra file, ``vgd/img_vgdseg_cross_val.json``, a list of::

    {"image_file", "image_id", "image_size": [H, W], "image_info": {...},      # the TARGET image
     "annotations": [COCO instance annotation, ...],                           # its instances of prompted categories
     "prompts": [{"category_id", "image_file", "image_id", "annotation_id",    # one per category, from ANOTHER image
                  "visual_prompts": {"point_visual_prompt": RLE, "scribble_visual_prompt": RLE,
                                     "box_visual_prompt": RLE, "mask_visual_prompt": RLE}}]}

It follows the VGD evaluation protocol (§5): every category present in the target image is prompted once, with a
random instance of that category taken from a different validation image (all four prompt types stored, so each type
can be evaluated); the ground truth is every instance of the prompted categories in the target image. Categories that
appear in no other image are left out, with their instances. :func:`load_cross_image_vgd` reads the file into
``vgdseg`` examples whose ``meta["prompts"]`` carry the prompt images and masks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ..training.data.coco_instances import CategoryTable, image_path_for
from ..training.data.json_io import load_json
from ..training.data.masks import to_rle
from ..training.data.schema import SegObject, XSamExample
from ..training.data.skips import SkipCounter
from ..training.data.source import ExampleSource
from .vocabulary import THING_CATEGORIES

CROSS_IMAGE_STREAM = 4


def cross_image_pairs(vgd_items: Sequence[Mapping[str, Any]], seed: int) -> list[dict[str, Any]]:
    """Cross-image entries for COCO-VGD items (``{image_file, image_id, ..., annotations}``) of one split."""
    holders: dict[int, list[tuple[int, Mapping[str, Any]]]] = {}
    for position, item in enumerate(vgd_items):
        for ann in item["annotations"]:
            holders.setdefault(int(ann["category_id"]), []).append((position, ann))
    entries = []
    for position, item in enumerate(vgd_items):
        prompts = []
        for category_id in sorted({int(a["category_id"]) for a in item["annotations"]}):
            pool = [(p, ann) for p, ann in holders[category_id] if p != position]
            if not pool:
                continue
            rng = np.random.default_rng([seed, int(item["image_id"]), category_id, CROSS_IMAGE_STREAM])
            source_position, ann = pool[int(rng.integers(len(pool)))]
            source = vgd_items[source_position]
            prompts.append({"category_id": category_id, "image_file": source["image_file"],
                            "image_id": source["image_id"], "annotation_id": ann["id"],
                            "visual_prompts": {key: value for key, value in ann["visual_prompts"].items()
                                               if key.endswith("_visual_prompt")}})
        if not prompts:
            continue
        prompted = {p["category_id"] for p in prompts}
        entries.append({"image_file": item["image_file"], "image_id": item["image_id"],
                        "image_size": item["image_size"], "image_info": item["image_info"],
                        "annotations": [{k: v for k, v in ann.items() if k != "visual_prompts"}
                                        for ann in item["annotations"] if int(ann["category_id"]) in prompted],
                        "prompts": prompts})
    return entries


def _build_cross_example(entry: dict[str, Any], *, source: str, image_dir: str | Path,
                         table: CategoryTable) -> XSamExample:
    height, width = (int(v) for v in entry["image_size"])
    prompted = [int(p["category_id"]) for p in entry["prompts"]]
    position = {category_id: k for k, category_id in enumerate(prompted)}
    objects = [SegObject(mask=to_rle(ann["segmentation"], height, width),
                         class_index=position[int(ann["category_id"])], object_id=str(ann["id"]),
                         bbox=[float(v) for v in ann["bbox"]])
               for ann in entry["annotations"]]
    prompts = [{"category_id": int(p["category_id"]), "image_path": image_path_for(image_dir, p["image_file"]),
                "image_id": p["image_id"], "annotation_id": p["annotation_id"],
                "visual_prompts": {key.removesuffix("_visual_prompt"): value
                                   for key, value in p["visual_prompts"].items()}}
               for p in entry["prompts"]]
    return XSamExample(record_id=f"{source}/{entry['image_id']}", task="vgdseg", source=source,
                       image_path=image_path_for(image_dir, entry["image_file"]), image_size=(height, width),
                       class_names=[table.name_of(c) for c in prompted], class_ids=prompted, objects=objects,
                       meta={"image_id": entry["image_id"], "file_name": entry["image_file"], "prompts": prompts})


def load_cross_image_vgd(json_path: str | Path, image_dir: str | Path, *,
                         categories: Iterable[Mapping[str, Any]] = THING_CATEGORIES, source: str | None = None,
                         counter: SkipCounter | None = None) -> ExampleSource[dict[str, Any]]:
    """One ``vgdseg`` example per target image; ``class_names`` are the prompted categories in prompt order and
    ``meta["prompts"][k]`` holds prompt ``k``: its image path and its masks by type (point, scribble, box, mask)."""
    counter = counter if counter is not None else SkipCounter()
    source = source or Path(json_path).stem
    table = CategoryTable.from_coco(categories)
    builder = partial(_build_cross_example, source=source, image_dir=image_dir, table=table)
    return ExampleSource(source, "vgdseg", list(load_json(json_path)), builder, counter)
