"""COCO instance annotations (polygons, RLE, uncompressed crowd RLE) -> one genseg example per image.

This is also the entry point for a user's own data: any file in the COCO instances layout loads with
``load_coco_instances(json_path, image_dir)`` and no code.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from .categories import clean_category_name
from .json_io import load_json
from .masks import to_rle
from .schema import SegObject, XSamExample
from .skips import CorruptRecordError, SkipCounter
from .source import ExampleSource


@dataclass(frozen=True)
class CategoryTable:
    """Categories sorted by id; ``index_of[category_id]`` is the position in ``names``."""

    ids: list[int]
    names: list[str]
    isthing: list[bool]

    @classmethod
    def from_coco(cls, categories: Iterable[Mapping[str, Any]]) -> CategoryTable:
        ordered = sorted(categories, key=lambda c: int(c["id"]))
        return cls(ids=[int(c["id"]) for c in ordered],
                   names=[clean_category_name(str(c["name"])) for c in ordered],
                   isthing=[bool(c.get("isthing", 1)) for c in ordered])

    @property
    def index_of(self) -> dict[int, int]:
        return {cid: i for i, cid in enumerate(self.ids)}

    def name_of(self, category_id: int) -> str:
        return self.names[self.index_of[category_id]]


@dataclass(frozen=True)
class _ImageRecord:
    image: dict[str, Any]
    annotations: list[dict[str, Any]]


def image_path_for(image_dir: str | Path, file_name: str) -> str:
    return str(Path(image_dir) / file_name)


def coco_objects(annotations: Iterable[Mapping[str, Any]], height: int, width: int, categories: CategoryTable,
                 *, include_crowd: bool, counter: SkipCounter, source: str) -> list[SegObject]:
    """COCO annotation dicts -> :class:`SegObject` list; a broken annotation is counted and left out."""
    index_of = categories.index_of
    objects: list[SegObject] = []
    for ann in annotations:
        iscrowd = bool(ann.get("iscrowd", 0))
        if iscrowd and not include_crowd:
            continue
        try:
            class_index = index_of[int(ann["category_id"])]
            mask = to_rle(ann["segmentation"], height, width)
            if tuple(mask["size"]) != (height, width):
                raise ValueError(f"mask size {mask['size']} differs from image size {(height, width)}")
        except Exception as error:  # noqa: BLE001
            counter.record(source, "bad_annotation", str(ann.get("id", "?")), error)
            continue
        bbox = ann.get("bbox")
        objects.append(SegObject(
            mask=mask, class_index=class_index, isthing=categories.isthing[class_index], iscrowd=iscrowd,
            object_id=str(ann.get("id", len(objects))), bbox=[float(v) for v in bbox] if bbox else None,
        ))
    return objects


def group_annotations_by_image(annotations: Iterable[Mapping[str, Any]]) -> dict[Any, list[dict[str, Any]]]:
    """Keyed by the raw ``image_id`` (an int in COCO, a string in some ADE20K files)."""
    grouped: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for ann in annotations:
        grouped[ann["image_id"]].append(dict(ann))
    return grouped


def _build_instances_example(record: _ImageRecord, *, source: str, task: str, image_dir: str | Path,
                             categories: CategoryTable, include_crowd: bool, counter: SkipCounter) -> XSamExample:
    image = record.image
    try:
        height, width = int(image["height"]), int(image["width"])
    except (KeyError, ValueError) as error:
        raise CorruptRecordError(f"image {image.get('id')} lacks height/width") from error
    return XSamExample(
        record_id=f"{source}/{image['id']}", task=task, source=source,
        image_path=image_path_for(image_dir, image["file_name"]), image_size=(height, width),
        class_names=list(categories.names), class_ids=list(categories.ids),
        objects=coco_objects(record.annotations, height, width, categories, include_crowd=include_crowd,
                             counter=counter, source=source),
        meta={"image_id": image["id"], "file_name": image["file_name"]},
    )


def load_coco_instances(json_path: str | Path, image_dir: str | Path, *, source: str | None = None,
                        task: str = "genseg", include_crowd: bool = False,
                        keep_images_without_annotations: bool = True,
                        counter: SkipCounter | None = None) -> ExampleSource[_ImageRecord]:
    """One example per image; ``class_names`` is the full cleaned category list (sorted by category id)."""
    counter = counter if counter is not None else SkipCounter()
    source = source or Path(json_path).stem
    data = load_json(json_path)
    categories = CategoryTable.from_coco(data["categories"])
    by_image = group_annotations_by_image(data.get("annotations", []))
    records = []
    for image in data["images"]:
        anns = by_image.get(image["id"], [])
        if anns or keep_images_without_annotations:
            records.append(_ImageRecord(image=image, annotations=anns))
    builder = partial(_build_instances_example, source=source, task=task, image_dir=image_dir, categories=categories,
                      include_crowd=include_crowd, counter=counter)
    return ExampleSource(source, task, records, builder, counter)
