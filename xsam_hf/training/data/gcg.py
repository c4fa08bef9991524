"""GranD-f grounded conversation generation (GCG): the four training shapes and the COCO-style evaluation files.

Training shapes (``annotations/train/``):

* ``GranDf_HA_GCG_train.json`` / ``OpenPsgGCG_train.json``: list of ``{file_name, image_id, caption,
  groundings: {phrase: {token_positives: [start, end], rle_masks: [RLE, ...]}}}``;
* ``RefCOCOg_GCG_train.json``: list of ``{key: {img_file_name, caption, refs: [{sentence, segmentation}]}}``,
  the phrase span is found by searching the sentence in the caption;
* ``flickr_mergedGT_GCG_train.json``: COCO-style, ``images[].caption`` and annotations carrying
  ``tokens_positive`` and ``sam_mask``.

Evaluation (``annotations/val_test/``): ``{val,test}_gcg_coco_mask_gt.json`` (COCO masks, image file ``<id>.jpg``)
with ``{val,test}_gcg_coco_caption_gt.json``; objects there have no phrase, so ``class_index`` is ``-1``.

Loaded examples keep the phrases in file order; :func:`~.sampling.sample_gcg` sorts them and drops overlaps.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from PIL import Image

from .coco_instances import group_annotations_by_image, image_path_for
from .json_io import CompactJsonList, iter_json_array, iter_json_objects, load_json
from .masks import rle_union, to_rle
from .schema import PhraseSpan, Rle, SegObject, XSamExample
from .skips import CorruptRecordError, SkipCounter
from .source import ExampleSource

_Grounding = tuple[str, int, int, Rle]  # phrase text, start, end, mask


def _gcg_example(record_id: str, source: str, image_path: str, caption: str, groundings: list[_Grounding],
                 meta: dict[str, Any]) -> XSamExample:
    if not groundings:
        raise CorruptRecordError(f"{record_id}: no grounded phrase")
    sizes = {tuple(mask["size"]) for *_, mask in groundings}
    if len(sizes) != 1:
        raise CorruptRecordError(f"{record_id}: phrase masks disagree on the image size {sizes}")
    height, width = sizes.pop()
    phrases = [PhraseSpan(text=text, start=start, end=end) for text, start, end, _ in groundings]
    objects = [SegObject(mask=mask, class_index=k, object_id=str(k)) for k, (*_, mask) in enumerate(groundings)]
    return XSamExample(record_id=record_id, task="gcgseg", source=source, image_path=image_path,
                       image_size=(height, width), class_names=[p.text for p in phrases],
                       class_ids=[-1] * len(phrases), objects=objects, caption=caption, phrases=phrases, meta=meta)


def _span(caption: str, start: int, end: int, record_id: str) -> tuple[str, int, int]:
    if not 0 <= start < end <= len(caption):
        raise CorruptRecordError(f"{record_id}: span [{start}, {end}) outside a caption of {len(caption)} chars")
    return caption[start:end], start, end


def _build_grandf_example(item: dict[str, Any], *, source: str, image_dir: str | Path) -> XSamExample:
    caption = str(item["caption"])
    record_id = f"{source}/{item.get('image_id', item['file_name'])}"
    groundings = []
    for phrase, grounding in item["groundings"].items():
        start, end = (int(v) for v in grounding["token_positives"])
        text, start, end = _span(caption, start, end, record_id)
        masks = [to_rle(m) for m in grounding["rle_masks"]]
        groundings.append((text, start, end, rle_union(masks)))
    return _gcg_example(record_id, source, image_path_for(image_dir, item["file_name"]), caption, groundings,
                        {"image_id": item.get("image_id"), "file_name": item["file_name"]})


def load_grandf_gcg(json_path: str | Path, image_dir: str | Path, *, source: str | None = None,
                    counter: SkipCounter | None = None) -> ExampleSource[dict[str, Any]]:
    """``GranDf_HA_GCG_train.json`` or ``OpenPsgGCG_train.json`` (streamed element by element)."""
    counter = counter if counter is not None else SkipCounter()
    source = source or Path(json_path).stem
    records = CompactJsonList(iter_json_objects(json_path, counter.skipper(source)))
    builder = partial(_build_grandf_example, source=source, image_dir=image_dir)
    return ExampleSource(source, "gcgseg", records, builder, counter)


def _image_size(path: str) -> tuple[int, int]:
    with Image.open(path) as image:  # header only
        return image.size[1], image.size[0]


def _build_refcocog_gcg_example(record: tuple[str, dict[str, Any]], *, source: str, image_dir: str | Path,
                                counter: SkipCounter) -> XSamExample:
    key, item = record
    caption = str(item["caption"])
    image_path = image_path_for(image_dir, item["img_file_name"])
    record_id = f"{source}/{key}"
    lowered, cursor, groundings = caption.lower(), 0, []
    size: tuple[int, int] | None = None
    for ref in item["refs"]:
        sentence = str(ref["sentence"]).strip().lower()
        start = lowered.find(sentence, cursor) if sentence else -1
        if start < 0:
            start = lowered.find(sentence) if sentence else -1
        if start < 0:
            counter.record(source, "phrase_not_in_caption", f"{key}:{sentence}")
            continue
        segmentation = ref["segmentation"]
        if isinstance(segmentation, dict):
            mask = to_rle(segmentation)
        else:
            size = size or _image_size(image_path)
            mask = to_rle(segmentation, *size)
        end = start + len(sentence)
        groundings.append((caption[start:end], start, end, mask))
        cursor = end
    return _gcg_example(record_id, source, image_path, caption, groundings,
                        {"file_name": item["img_file_name"], "key": key})


def load_refcocog_gcg(json_path: str | Path, image_dir: str | Path, *, source: str | None = None,
                      counter: SkipCounter | None = None) -> ExampleSource[tuple[str, dict[str, Any]]]:
    """``RefCOCOg_GCG_train.json``: spans come from a case-insensitive search of each sentence in the caption
    (left to right, each search starting after the previous match); a sentence not found is skipped and counted."""
    counter = counter if counter is not None else SkipCounter()
    source = source or Path(json_path).stem
    records = CompactJsonList((key, value) for element in iter_json_objects(json_path, counter.skipper(source))
                              for key, value in element.items())
    builder = partial(_build_refcocog_gcg_example, source=source, image_dir=image_dir, counter=counter)
    return ExampleSource(source, "gcgseg", records, builder, counter)


def _first_span(tokens_positive: Any) -> tuple[int, int]:
    """``[s, e]`` or ``[[s, e], ...]`` -> one span covering them."""
    spans = [tokens_positive] if tokens_positive and not isinstance(tokens_positive[0], list) else tokens_positive
    return min(int(s) for s, _ in spans), max(int(e) for _, e in spans)


def _build_flickr_example(record: tuple[dict[str, Any], list[dict[str, Any]]], *, source: str,
                          image_dir: str | Path) -> XSamExample:
    image, annotations = record
    caption = str(image["caption"])
    record_id = f"{source}/{image['id']}"
    masks_by_span: dict[tuple[int, int], list[Rle]] = defaultdict(list)
    for ann in annotations:
        start, end = _first_span(ann["tokens_positive"])
        masks_by_span[(start, end)].append(to_rle(ann["sam_mask"]))
    groundings = []
    for (start, end), masks in masks_by_span.items():
        text, start, end = _span(caption, start, end, record_id)
        groundings.append((text, start, end, rle_union(masks)))
    return _gcg_example(record_id, source, image_path_for(image_dir, image["file_name"]), caption, groundings,
                        {"image_id": image["id"], "file_name": image["file_name"]})


def load_flickr_gcg(json_path: str | Path, image_dir: str | Path, *, source: str | None = None,
                    counter: SkipCounter | None = None) -> ExampleSource[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """``flickr_mergedGT_GCG_train.json``; annotations with the same span are one phrase (masks unioned)."""
    source = source or Path(json_path).stem
    data = load_json(json_path)
    by_image = group_annotations_by_image(data["annotations"])
    records = [(image, by_image.get(image["id"], [])) for image in data["images"]]
    builder = partial(_build_flickr_example, source=source, image_dir=image_dir)
    return ExampleSource(source, "gcgseg", records, builder, counter)


def _build_gcg_eval_example(record: dict[str, Any], *, source: str, image_dir: str | Path) -> XSamExample:
    image = record["image"]
    height, width = int(image["height"]), int(image["width"])
    objects = [SegObject(mask=to_rle(a["segmentation"], height, width), class_index=-1,
                         object_id=str(a.get("id", k)), bbox=a.get("bbox"))
               for k, a in enumerate(record["annotations"])]
    return XSamExample(record_id=f"{source}/{image['id']}", task="gcgseg", source=source,
                       image_path=image_path_for(image_dir, f"{image['id']}.jpg"), image_size=(height, width),
                       objects=objects, caption=record["caption"], meta={"image_id": image["id"]})


def load_gcg_eval(mask_json: str | Path, caption_json: str | Path, image_dir: str | Path, *,
                  source: str | None = None, counter: SkipCounter | None = None) -> ExampleSource[dict[str, Any]]:
    """``{val,test}_gcg_coco_mask_gt.json`` + ``{val,test}_gcg_coco_caption_gt.json``; image file = ``<id>.jpg``."""
    counter = counter if counter is not None else SkipCounter()
    source = source or Path(mask_json).stem.replace("_coco_mask_gt", "")
    masks = load_json(mask_json)
    captions = {str(a["image_id"]): str(a["caption"]) for a in load_json(caption_json)["annotations"]}
    by_image = group_annotations_by_image(masks["annotations"])
    records = []
    for image in masks["images"]:
        if str(image["id"]) not in captions:
            counter.record(source, "image_without_caption", str(image["id"]))
            continue
        records.append({"image": image, "annotations": by_image.get(image["id"], []),
                        "caption": captions[str(image["id"])]})
    builder = partial(_build_gcg_eval_example, source=source, image_dir=image_dir)
    return ExampleSource(source, "gcgseg", records, builder, counter)


def _first_char(path: str | Path) -> str:
    with open(path, encoding="utf-8") as handle:
        while char := handle.read(1):
            if not char.isspace():
                return char
    raise ValueError(f"{path} is empty")


def load_gcg(json_path: str | Path, image_dir: str | Path, *, source: str | None = None,
             counter: SkipCounter | None = None) -> ExampleSource[Any]:
    """Any GranD-f **training** file: the shape is recognised from its content."""
    loader: Callable[..., ExampleSource[Any]]
    if _first_char(json_path) == "{":
        loader = load_flickr_gcg
    else:
        first = next(iter_json_array(json_path), None)
        is_grandf = first is None or "groundings" in first
        loader = load_grandf_gcg if is_grandf else load_refcocog_gcg
    return loader(json_path, image_dir, source=source, counter=counter)
