"""COCO-style panoptic annotations (JSON + id-coded PNGs): COCO panoptic for genseg, ADE20K panoptic for ovseg.

Each non-crowd segment becomes one object: things are per instance, stuff is one mask per class. This is also the
entry point for a user's own panoptic data (``load_coco_panoptic(json, png_dir, image_dir)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .coco_instances import CategoryTable, image_path_for
from .json_io import load_json
from .masks import encode_mask, rgb2id
from .schema import SegObject, XSamExample
from .skips import CorruptRecordError, SkipCounter
from .source import ExampleSource


@dataclass(frozen=True)
class PanopticRecord:
    image: dict[str, Any]
    annotation: dict[str, Any]
    png_path: str


def read_panoptic_png(path: str | Path) -> np.ndarray:
    """Panoptic PNG -> ``(H, W)`` int64 segment ids."""
    with Image.open(path) as png:
        return rgb2id(np.asarray(png.convert("RGB")))


def _build_panoptic_example(record: PanopticRecord, *, source: str, task: str, image_dir: str | Path,
                            categories: CategoryTable, include_crowd: bool, counter: SkipCounter) -> XSamExample:
    ids = read_panoptic_png(record.png_path)
    height, width = ids.shape
    stated = (int(record.image.get("height", height)), int(record.image.get("width", width)))
    if stated != (height, width):
        raise CorruptRecordError(f"PNG {record.png_path} is {height}x{width}, JSON says {stated}")
    index_of = categories.index_of
    objects = []
    for segment in record.annotation["segments_info"]:
        iscrowd = bool(segment.get("iscrowd", 0))
        if iscrowd and not include_crowd:
            continue
        mask = ids == int(segment["id"])
        category_id = int(segment["category_id"])
        if not mask.any() or category_id not in index_of:
            counter.record(source, "empty_or_unknown_segment", f"{record.image['id']}:{segment['id']}")
            continue
        class_index = index_of[category_id]
        objects.append(SegObject(mask=encode_mask(mask), class_index=class_index,
                                 isthing=categories.isthing[class_index], iscrowd=iscrowd,
                                 object_id=str(segment["id"]),
                                 bbox=[float(v) for v in segment["bbox"]] if "bbox" in segment else None))
    return XSamExample(
        record_id=f"{source}/{record.image['id']}", task=task, source=source,
        image_path=image_path_for(image_dir, record.image["file_name"]), image_size=(height, width),
        class_names=list(categories.names), class_ids=list(categories.ids), objects=objects,
        meta={"image_id": record.image["id"], "file_name": record.image["file_name"],
              "panoptic_png": record.png_path, "segments_info": record.annotation["segments_info"]},
    )


def load_coco_panoptic(panoptic_json: str | Path, panoptic_png_dir: str | Path, image_dir: str | Path, *,
                       source: str | None = None, task: str = "genseg", include_crowd: bool = False,
                       counter: SkipCounter | None = None) -> ExampleSource[PanopticRecord]:
    """One example per annotated image, masks decoded from the PNG when the example is accessed.

    ``class_names`` is the full cleaned category list sorted by category id, so ``class_index`` equals the
    contiguous id of :func:`~.semantic.contiguous_category_ids`. ``meta`` carries ``image_id``, ``panoptic_png``
    and the raw ``segments_info`` that PQ evaluation needs.
    """
    counter = counter if counter is not None else SkipCounter()
    source = source or Path(panoptic_json).stem
    data = load_json(panoptic_json)
    categories = CategoryTable.from_coco(data["categories"])
    images = {image["id"]: image for image in data["images"]}
    records = []
    for ann in data["annotations"]:
        image = images.get(ann["image_id"])
        if image is None:
            counter.record(source, "annotation_without_image", str(ann["image_id"]))
            continue
        records.append(PanopticRecord(image=image, annotation=ann,
                                      png_path=str(Path(panoptic_png_dir) / ann["file_name"])))
    builder = partial(_build_panoptic_example, source=source, task=task, image_dir=image_dir, categories=categories,
                      include_crowd=include_crowd, counter=counter)
    return ExampleSource(source, task, records, builder, counter)


def load_ade20k_panoptic(panoptic_json: str | Path, panoptic_png_dir: str | Path, image_dir: str | Path, *,
                         source: str = "ade20k_panoptic_val",
                         counter: SkipCounter | None = None) -> ExampleSource[PanopticRecord]:
    """ADE20K panoptic validation (``ade20k_panoptic_val.json`` + ``ade20k_panoptic_val/``), open-vocabulary task."""
    return load_coco_panoptic(panoptic_json, panoptic_png_dir, image_dir, source=source, task="ovseg",
                              counter=counter)
