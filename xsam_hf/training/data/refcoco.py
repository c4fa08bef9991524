"""RefCOCO / RefCOCO+ / RefCOCOg: ``refs(unc|umd).p`` pickle + ``instances.json`` -> refseg examples.

A small reader of its own (no REFER API): refs of one split are grouped per image; every referred object becomes one
:class:`SegObject` whose ``texts`` are its sentences. :mod:`.sampling` turns that into multi-turn samples.
"""

from __future__ import annotations

import pickle
from collections import defaultdict
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from .coco_instances import CategoryTable, image_path_for
from .json_io import load_json
from .masks import to_rle
from .schema import SegObject, XSamExample
from .skips import SkipCounter
from .source import ExampleSource

SPLIT_BY: dict[str, str] = {"refcoco": "unc", "refcoco+": "unc", "refcocog": "umd"}


class _PlainDataUnpickler(pickle.Unpickler):
    """The refs pickles hold only lists, dicts, strings and numbers: refuse anything that could run code."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a refs pickle")


def read_refs_pickle(path: str | Path) -> list[dict[str, Any]]:
    with open(path, "rb") as handle:
        # The files were written by Python 2; latin-1 maps its byte strings one-to-one.
        return _PlainDataUnpickler(handle, encoding="latin1").load()


@dataclass(frozen=True)
class _ReferredImage:
    image: dict[str, Any]
    refs: list[tuple[dict[str, Any], dict[str, Any]]]  # (ref, its COCO annotation)


def _build_refcoco_example(record: _ReferredImage, *, source: str, image_dir: str | Path,
                           categories: CategoryTable) -> XSamExample:
    image = record.image
    height, width = int(image["height"]), int(image["width"])
    objects = []
    for ref, ann in record.refs:
        objects.append(SegObject(
            mask=to_rle(ann["segmentation"], height, width), class_index=-1, iscrowd=bool(ann.get("iscrowd", 0)),
            object_id=str(ref["ref_id"]), bbox=[float(v) for v in ann["bbox"]] if "bbox" in ann else None,
            texts=[str(s["sent"]).strip() for s in ref["sentences"]],
        ))
    return XSamExample(
        record_id=f"{source}/{image['id']}", task="refseg", source=source,
        image_path=image_path_for(image_dir, image["file_name"]), image_size=(height, width), objects=objects,
        meta={"image_id": image["id"], "file_name": image["file_name"],
              "ann_ids": [int(ann["id"]) for _, ann in record.refs],
              "category_names": [categories.name_of(int(ann["category_id"])) for _, ann in record.refs]},
    )


def load_refcoco(dataset_dir: str | Path, image_dir: str | Path, *, split: str = "train",
                 split_by: str | None = None, source: str | None = None,
                 counter: SkipCounter | None = None) -> ExampleSource[_ReferredImage]:
    """``dataset_dir`` holds ``refs(<split_by>).p`` and ``instances.json`` (e.g. ``refcocos/refcocog``).

    ``split_by`` defaults to ``umd`` for a folder named ``refcocog`` and ``unc`` otherwise. Sentences are the
    pre-processed ``sent`` strings (lower case, tokenised); refs with no sentence are skipped and counted.
    """
    dataset_dir = Path(dataset_dir)
    split_by = split_by or SPLIT_BY.get(dataset_dir.name, "unc")
    counter = counter if counter is not None else SkipCounter()
    source = source or f"{dataset_dir.name}_{split_by}_{split}"
    instances = load_json(dataset_dir / "instances.json")
    categories = CategoryTable.from_coco(instances["categories"])
    images = {int(image["id"]): image for image in instances["images"]}
    annotations = {int(ann["id"]): ann for ann in instances["annotations"]}

    refs_by_image: dict[int, list[tuple[dict[str, Any], dict[str, Any]]]] = defaultdict(list)
    for ref in read_refs_pickle(dataset_dir / f"refs({split_by}).p"):
        if ref.get("split") != split:
            continue
        ann = annotations.get(int(ref["ann_id"]))
        if ann is None or int(ref["image_id"]) not in images or not ref.get("sentences"):
            counter.record(source, "ref_without_annotation_or_sentence", str(ref.get("ref_id")))
            continue
        refs_by_image[int(ref["image_id"])].append((ref, ann))
    records = [_ReferredImage(image=images[image_id], refs=refs) for image_id, refs in refs_by_image.items()]
    builder = partial(_build_refcoco_example, source=source, image_dir=image_dir, categories=categories)
    return ExampleSource(source, "refseg", records, builder, counter)
