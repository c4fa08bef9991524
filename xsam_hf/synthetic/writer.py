"""Write the synthetic world to disk in the official formats of every X-SAM task (architecture spec §6).

Layout under ``output_dir`` (``{split}`` is ``train`` or ``val``; image files are ``{image_id:012d}.jpg``):

==========================================================  ===========================================================
``images/{split}/``                                         the JPEG images (shared by every task but ReasonSeg)
``panoptic/annotations/panoptic_{split}.json``              COCO panoptic JSON (things: 6 shapes; stuff: sky, ground,
``panoptic/panoptic_{split}/``                              water) + id PNGs (``id = R + 256 G + 256² B``)
``panoptic/panoptic_semseg_val/``                           semantic PNGs for semantic evaluation (contiguous ids, 255
                                                            void), made by the project's ``write_semantic_pngs``
``panoptic/annotations/instances_{split}.json``             COCO instances (things, RLE masks): instance evaluation and
                                                            the category table of interactive / VGD
``refcoco/refs(unc).p`` + ``refcoco/instances.json``        RefCOCO (both splits in one pickle, ``split`` field)
``reasonseg/{split}/*.jpg`` + ``*.json``                    ReasonSeg (LabelMe JSON next to each image copy)
``reasonseg/explanatory/train.json``                        ReasonSeg explanations ``[{image, query, outputs}]``
``gcg/annotations/train/GranDf_HA_GCG_train.json``          GranD-f GCG (``groundings``: ``token_positives``,
``gcg/annotations/val_test/GranDf_HA_GCG_val.json``         ``rle_masks``), val in the same shape
``gcg/annotations/val_test/val_gcg_coco_{mask,caption}_gt.json``  GCG evaluation files (COCO masks + captions)
``interactive/coco_interactive_{split}_psalm.json``         COCO-Interactive (PSALM; thin point / scribble prompts)
``vgd/img_vgdseg_coco_{split}.json``                        COCO-VGD (dilated prompts, raw clicks and boxes)
``vgd/img_vgdseg_cross_val.json``                           cross-image VGD validation pairs (our extra, see
                                                            :mod:`.cross_image`)
``chat/llava_qa_{split}.json``                              LLaVA conversations with short exact answers
``chat/llava_caption_{split}.json``                         LLaVA-Pretrain style captioning (for the alignment stage)
``scenes_{split}.json``                                     ground truth of every scene (attributes, ids, boxes)
``world.json``                                              manifest: seed, counts, classes, vocabulary, files, and
                                                            ``recipe_sources`` (``data.sources`` entries per split)
==========================================================  ===========================================================

Every file is a pure function of ``(seed, num_train, num_val)``: the same arguments give byte-identical files.
"""

from __future__ import annotations

import io
import json
import os
import pickle
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..training.data.masks import encode_mask, id2rgb
from ..training.data.semantic import write_semantic_pngs
from .cross_image import cross_image_pairs
from .language import chat_turns, grounded_caption, identify_turns, reasoning_question, referring_expressions
from .scene import Scene, SceneObject, StuffRegion, generate_scene, scene_rng
from .visual_prompts import object_prompts
from .vocabulary import (CANVAS_SIZE, CATEGORIES, CLASS_NAMES, PRETRAIN_QUESTIONS, THING_CATEGORIES,
                         WORLD_VOCABULARY)

FORMAT_VERSION = 1
SPLITS: tuple[str, ...] = ("train", "val")
JPEG_QUALITY = 95
# Random streams of one scene (stream 0 draws the scene itself).
TEXT_STREAM, PROMPT_STREAM, DENSE_CHAT_STREAM, IDENTIFY_CHAT_STREAM = 1, 2, 3, 4
PROMPT_TYPES: tuple[str, ...] = ("point", "scribble", "box", "mask")


def annotation_id(image_id: int, object_position: int) -> int:
    """Globally unique COCO annotation id of an object (at most 6 objects per image)."""
    return image_id * 10 + object_position + 1


def mask_to_rectangles(mask: np.ndarray) -> list[list[list[int]]]:
    """Exact LabelMe polygons of a mask: rectangles ``[[x0, y0], [x1, y0], [x1, y1], [x0, y1]]`` (inclusive pixels).

    Runs of equal extent in consecutive rows merge into one rectangle. PIL fills such a polygon with its outline
    exactly onto those pixels, so the ReasonSeg loader's rasterisation gives the mask back unchanged, holes and
    occluded parts included (a visible part is rarely a single polygon).
    """
    height, width = mask.shape
    padded = np.zeros((height, width + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    edges = np.diff(padded, axis=1)
    start_rows, starts = np.nonzero(edges == 1)
    end_rows, ends = np.nonzero(edges == -1)  # row-major order: the k-th start and the k-th end form one run
    assert np.array_equal(start_rows, end_rows)
    rectangles: list[list[list[int]]] = []
    open_runs: dict[tuple[int, int], tuple[int, int]] = {}  # (x0, x1 exclusive) -> (first row, last row)
    for row, x0, x1 in zip(start_rows.tolist(), starts.tolist(), ends.tolist()):
        run = (x0, x1)
        first_last = open_runs.get(run)
        if first_last is not None and first_last[1] == row - 1:
            open_runs[run] = (first_last[0], row)
            continue
        if first_last is not None:
            rectangles.append(_rectangle(run, first_last))
        open_runs[run] = (row, row)
    rectangles += [_rectangle(run, first_last) for run, first_last in open_runs.items()]
    return sorted(rectangles, key=lambda r: (r[0][1], r[0][0]))


def _rectangle(run: tuple[int, int], rows: tuple[int, int]) -> list[list[int]]:
    (x0, x1), (y0, y1) = (run[0], run[1] - 1), rows
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def _png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    # 4:4:4 keeps colour edges where the masks are (4:2:0 would smear chroma across object outlines).
    Image.fromarray(array).save(buffer, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    return buffer.getvalue()


def _coco_annotation(obj: SceneObject, image_id: int, position: int, **extra: Any) -> dict[str, Any]:
    return {"id": annotation_id(image_id, position), "image_id": image_id, "category_id": obj.category_id,
            "segmentation": encode_mask(obj.mask), "area": obj.area, "bbox": obj.bbox, "iscrowd": 0, **extra}


@dataclass
class ImageRecord:
    """Everything one image contributes to every file (picklable, so records can be made in worker processes)."""

    split: str
    image_id: int
    file_name: str
    jpeg: bytes
    panoptic_png: bytes
    image_info: dict[str, Any]
    panoptic_annotation: dict[str, Any]
    instances: list[dict[str, Any]]
    scene: dict[str, Any]
    refs: list[tuple[int, list[str]]]  # (annotation id, sentences)
    reasoning: dict[str, Any]
    explanation: dict[str, Any]
    gcg: dict[str, Any]
    gcg_eval_annotations: list[dict[str, Any]]
    interactive: dict[str, Any]
    vgd: dict[str, Any]
    chat: dict[str, Any]
    caption_chat: dict[str, Any]


def _scene_summary(scene: Scene) -> dict[str, Any]:
    def region(item: SceneObject | StuffRegion) -> dict[str, Any]:
        return {"segment_id": item.segment_id, "category_id": item.category_id, "area": item.area,
                "bbox": _scene_bbox(item.mask)}

    return {
        "image_id": scene.image_id, "file_name": scene.file_name, "sky_colour": scene.sky_colour,
        "objects": [{"annotation_id": annotation_id(scene.image_id, k), "shape": o.shape, "colour": o.colour,
                     "size": o.size, "centroid": [round(v, 3) for v in o.centroid], **region(o)}
                    for k, o in enumerate(scene.objects)],
        "stuff": [{"name": r.name, **region(r)} for r in scene.stuff],
    }


def _reasoning_record(scene: Scene, rng: np.random.Generator) -> tuple[dict[str, Any], dict[str, Any]]:
    question = reasoning_question(scene, rng)
    shapes = [{"label": "target", "points": points, "group_id": None, "shape_type": "polygon", "flags": {}}
              for points in mask_to_rectangles(question.target.mask)]
    labelme = {"version": "4.5.6", "flags": {}, "shapes": shapes, "imagePath": scene.file_name, "imageData": None,
               "imageHeight": CANVAS_SIZE, "imageWidth": CANVAS_SIZE, "text": question.queries,
               "is_sentence": question.is_sentence}
    explanation = {"image": scene.file_name, "query": question.queries[0], "outputs": question.explanation}
    return labelme, explanation


def _prompt_fields(obj: SceneObject, seed: int, ann_id: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(COCO-VGD ``visual_prompts`` dict, COCO-Interactive prompt fields) of one object.

    Both files get the same prompts: VGD stores them dilated, PSALM thin (its loader dilates the click and the
    scribble with the same radii), so the two tasks see the same shapes.
    """
    prompts = object_prompts(obj.mask, np.random.default_rng([seed, ann_id, PROMPT_STREAM]))
    vgd_fields: dict[str, Any] = {f"{t}_visual_prompt": encode_mask(prompts.masks[t]) for t in PROMPT_TYPES}
    if prompts.points is not None:
        vgd_fields["point_visual_prompt_points"] = prompts.points
    if prompts.box is not None:
        vgd_fields["box_visual_prompt_box"] = prompts.box
    interactive_fields = {"point_visual_prompt_mask": encode_mask(prompts.thin_point),
                          "scribble_visual_prompt_mask": encode_mask(prompts.thin_scribble),
                          "box_visual_prompt_mask": vgd_fields["box_visual_prompt"],
                          "mask_visual_prompt_mask": vgd_fields["mask_visual_prompt"]}
    return vgd_fields, interactive_fields


def build_image_record(seed: int, split: str, index: int, dense_chat: bool = False,
                       identify_chat: bool = False) -> ImageRecord:
    """Render scene ``index`` of ``split`` and derive every task's annotations for it (``dense_chat``: its chat record
    asks up to `DENSE_CHAT_TURNS` questions instead of 3-4; ``identify_chat``: up to `IDENTIFY_CHAT_TURNS`
    "What is <referring expression>?" turns follow them; nothing else changes)."""
    scene = generate_scene(seed, split, index)
    rng = scene_rng(seed, split, index, TEXT_STREAM)
    image_id, file_name = scene.image_id, scene.file_name
    image_info = {"id": image_id, "file_name": file_name, "height": CANVAS_SIZE, "width": CANVAS_SIZE}
    png_name = file_name.replace(".jpg", ".png")
    segments_info = [{"id": item.segment_id, "category_id": item.category_id, "iscrowd": 0,
                      "bbox": _scene_bbox(item.mask), "area": item.area} for item in [*scene.objects, *scene.stuff]]
    instances = [_coco_annotation(obj, image_id, k) for k, obj in enumerate(scene.objects)]

    refs = [(annotation_id(image_id, position), sentences)
            for position, sentences in referring_expressions(scene, rng)]
    reasoning, explanation = _reasoning_record(scene, rng)

    caption, phrases = grounded_caption(scene, rng)
    gcg = {"file_name": file_name, "image_id": image_id, "caption": caption,
           "groundings": {p.text: {"token_positives": [p.start, p.end],
                                   "rle_masks": [encode_mask(m.mask) for m in p.members]} for p in phrases}}
    gcg_eval_annotations = [
        {"id": image_id * 100 + k + 1, "image_id": file_name[:-4], "category_id": 1,
         "segmentation": encode_mask(union), "area": int(union.sum()), "bbox": _scene_bbox(union), "iscrowd": 0}
        for k, p in enumerate(phrases) for union in [np.logical_or.reduce([m.mask for m in p.members])]]

    vgd_annotations, interactive_annotations = [], []
    for k, obj in enumerate(scene.objects):
        vgd_fields, interactive_fields = _prompt_fields(obj, seed, annotation_id(image_id, k))
        vgd_annotations.append({**instances[k], "visual_prompts": vgd_fields})
        interactive_annotations.append({**instances[k], **interactive_fields})
    interactive = {"image": file_name, "image_info": image_info, "anns": interactive_annotations}
    vgd = {"image_file": file_name, "image_id": image_id, "image_size": [CANVAS_SIZE, CANVAS_SIZE],
           "image_info": image_info, "annotations": vgd_annotations}

    conversation: list[dict[str, str]] = []
    dense_rng = scene_rng(seed, split, index, DENSE_CHAT_STREAM) if dense_chat else None
    turns = chat_turns(scene, rng, dense_rng)
    if identify_chat:
        turns += identify_turns(scene, scene_rng(seed, split, index, IDENTIFY_CHAT_STREAM))
    for turn in turns:
        question = ("<image>\n" if not conversation else "") + turn.question
        conversation += [{"from": "human", "value": question}, {"from": "gpt", "value": turn.answer}]
    chat = {"id": f"{split}_{image_id}", "image": file_name, "conversations": conversation}
    pretrain_question = PRETRAIN_QUESTIONS[int(rng.integers(len(PRETRAIN_QUESTIONS)))]
    caption_chat = {"id": f"{split}_{image_id}", "image": file_name,
                    "conversations": [{"from": "human", "value": f"<image>\n{pretrain_question}"},
                                      {"from": "gpt", "value": caption}]}

    return ImageRecord(
        split=split, image_id=image_id, file_name=file_name, jpeg=_jpeg_bytes(scene.image),
        panoptic_png=_png_bytes(id2rgb(scene.segment_ids)), image_info=image_info,
        panoptic_annotation={"image_id": image_id, "file_name": png_name, "segments_info": segments_info},
        instances=instances, scene=_scene_summary(scene), refs=refs, reasoning=reasoning, explanation=explanation,
        gcg=gcg, gcg_eval_annotations=gcg_eval_annotations, interactive=interactive, vgd=vgd, chat=chat,
        caption_chat=caption_chat,
    )


def _scene_bbox(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


# ---- assembling the files --------------------------------------------------------------------------------------
def _dump_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, separators=(",", ":")), encoding="utf-8")


def _write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _records(seed: int, split: str, count: int, workers: int, dense_chat: bool = False,
             identify_chat: bool = False) -> Iterator[ImageRecord]:
    if workers <= 1 or count < 2 * workers:
        for index in range(count):
            yield build_image_record(seed, split, index, dense_chat, identify_chat)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        # map keeps the order, so the files do not depend on the number of workers
        yield from pool.map(build_image_record, [seed] * count, [split] * count, range(count), [dense_chat] * count,
                            [identify_chat] * count, chunksize=max(1, min(64, count // (4 * workers))))


def recipe_sources(split: str) -> list[dict[str, Any]]:
    """``data.sources`` entries (relative to the world's folder, for ``data.root``) of every task of ``split``."""
    images = f"images/{split}"
    sources: list[dict[str, Any]] = [
        {"format": "coco_panoptic", "source": f"synthetic_panoptic_{split}",
         "panoptic_json": f"panoptic/annotations/panoptic_{split}.json",
         "panoptic_png_dir": f"panoptic/panoptic_{split}", "image_dir": images},
        {"format": "refcoco", "source": f"synthetic_refcoco_{split}", "dataset_dir": "refcoco", "image_dir": images,
         "split": split},
        {"format": "reasonseg", "source": f"synthetic_reasonseg_{split}", "split_dir": f"reasonseg/{split}"},
        {"format": "gcg", "source": f"synthetic_gcg_{split}", "image_dir": images,
         "json_path": "gcg/annotations/train/GranDf_HA_GCG_train.json" if split == "train"
         else "gcg/annotations/val_test/GranDf_HA_GCG_val.json"},
        {"format": "coco_vgd", "source": f"synthetic_vgd_{split}", "json_path": f"vgd/img_vgdseg_coco_{split}.json",
         "image_dir": images, "categories": f"panoptic/annotations/instances_{split}.json"},
        {"format": "coco_interactive", "source": f"synthetic_interactive_{split}",
         "json_path": f"interactive/coco_interactive_{split}_psalm.json", "image_dir": images,
         "categories": f"panoptic/annotations/instances_{split}.json"},
        {"format": "llava", "source": f"synthetic_chat_{split}", "json_path": f"chat/llava_qa_{split}.json",
         "image_dir": images},
    ]
    if split == "train":
        sources[2]["explanatory_json"] = "reasonseg/explanatory/train.json"
    return sources


def _write_split(root: Path, split: str, records: list[ImageRecord], seed: int) -> dict[str, Any]:
    for record in records:
        _write_bytes(root / "images" / split / record.file_name, record.jpeg)
        _write_bytes(root / "panoptic" / f"panoptic_{split}" / record.panoptic_annotation["file_name"],
                     record.panoptic_png)
        _write_bytes(root / "reasonseg" / split / record.file_name, record.jpeg)
        _dump_json(root / "reasonseg" / split / record.file_name.replace(".jpg", ".json"), record.reasoning)
    images = [r.image_info for r in records]
    panoptic_json = root / "panoptic" / "annotations" / f"panoptic_{split}.json"
    _dump_json(panoptic_json, {"info": {"description": "xsam-hf synthetic world", "seed": seed, "split": split},
                               "images": images, "annotations": [r.panoptic_annotation for r in records],
                               "categories": list(CATEGORIES)})
    _dump_json(root / "panoptic" / "annotations" / f"instances_{split}.json",
               {"images": images, "annotations": [a for r in records for a in r.instances],
                "categories": list(THING_CATEGORIES)})
    if split == "val":
        write_semantic_pngs(panoptic_json, root / "panoptic" / f"panoptic_{split}",
                            root / "panoptic" / f"panoptic_semseg_{split}", overwrite=True)
        _dump_json(root / "gcg" / "annotations" / "val_test" / "GranDf_HA_GCG_val.json", [r.gcg for r in records])
        _dump_json(root / "gcg" / "annotations" / "val_test" / "val_gcg_coco_mask_gt.json",
                   {"images": [{**r.image_info, "id": r.file_name[:-4]} for r in records],
                    "annotations": [a for r in records for a in r.gcg_eval_annotations],
                    "categories": [{"id": 1, "name": "object"}]})
        _dump_json(root / "gcg" / "annotations" / "val_test" / "val_gcg_coco_caption_gt.json",
                   {"images": [{"id": r.file_name[:-4]} for r in records],
                    "annotations": [{"id": k + 1, "image_id": r.file_name[:-4], "caption": r.gcg["caption"]}
                                    for k, r in enumerate(records)]})
        _dump_json(root / "vgd" / "img_vgdseg_cross_val.json", cross_image_pairs([r.vgd for r in records], seed))
    else:
        _dump_json(root / "gcg" / "annotations" / "train" / "GranDf_HA_GCG_train.json", [r.gcg for r in records])
        _dump_json(root / "reasonseg" / "explanatory" / "train.json", [r.explanation for r in records])
    _dump_json(root / "interactive" / f"coco_interactive_{split}_psalm.json", [r.interactive for r in records])
    _dump_json(root / "vgd" / f"img_vgdseg_coco_{split}.json", [r.vgd for r in records])
    _dump_json(root / "chat" / f"llava_qa_{split}.json", [r.chat for r in records])
    _dump_json(root / "chat" / f"llava_caption_{split}.json", [r.caption_chat for r in records])
    _dump_json(root / f"scenes_{split}.json", [r.scene for r in records])
    return {"images": len(records), "objects": sum(len(r.instances) for r in records),
            "referring_expressions": sum(len(s) for r in records for _, s in r.refs),
            "chat_turns": sum(len(r.chat["conversations"]) // 2 for r in records)}


def _write_refcoco(root: Path, records_by_split: dict[str, list[ImageRecord]]) -> None:
    refs, ref_id, sent_id = [], 0, 0
    category_of = {a["id"]: a["category_id"] for records in records_by_split.values() for r in records
                   for a in r.instances}
    for split, records in records_by_split.items():
        for record in records:
            for ann_id, sentences in record.refs:
                sentence_dicts = []
                for sentence in sentences:
                    sentence_dicts.append({"tokens": sentence.split(), "raw": sentence, "sent_id": sent_id,
                                           "sent": sentence})
                    sent_id += 1
                refs.append({"image_id": record.image_id, "split": split, "sentences": sentence_dicts,
                             "file_name": record.file_name, "category_id": category_of[ann_id], "ann_id": ann_id,
                             "sent_ids": [s["sent_id"] for s in sentence_dicts], "ref_id": ref_id})
                ref_id += 1
    folder = root / "refcoco"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "refs(unc).p", "wb") as handle:
        pickle.dump(refs, handle, protocol=2)  # the official pickles are protocol 2 (Python 2)
    _dump_json(folder / "instances.json",
               {"images": [r.image_info for records in records_by_split.values() for r in records],
                "annotations": [a for records in records_by_split.values() for r in records for a in r.instances],
                "categories": list(THING_CATEGORIES)})


def write_world(output_dir: str | os.PathLike[str], seed: int, num_train: int, num_val: int, *,
                workers: int = 1, dense_train_chat: bool = False, identify_train_chat: bool = False) -> dict[str, Any]:
    """Write the world (``num_train`` + ``num_val`` scenes) under ``output_dir``; returns the manifest.

    ``workers`` > 1 renders scenes in that many processes; the files are identical whatever the number.
    ``dense_train_chat``: training chat records ask up to `DENSE_CHAT_TURNS` questions (validation keeps 3-4, and
    every other file is the same as without it). ``identify_train_chat``: each training chat record ends with up to
    `IDENTIFY_CHAT_TURNS` "What is <referring expression>?" questions (`language.identify_turns`; the same holds).
    """
    if num_train < 0 or num_val < 0:
        raise ValueError("num_train and num_val must be >= 0")
    root = Path(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    records_by_split = {"train": list(_records(seed, "train", num_train, workers, dense_train_chat,
                                                 identify_train_chat)),
                        "val": list(_records(seed, "val", num_val, workers))}
    counts = {split: _write_split(root, split, records, seed) for split, records in records_by_split.items()}
    _write_refcoco(root, records_by_split)
    manifest = {
        "format_version": FORMAT_VERSION, "seed": seed, "canvas_size": CANVAS_SIZE,
        "splits": {"train": num_train, "val": num_val}, "dense_train_chat": dense_train_chat,
        "identify_train_chat": identify_train_chat, "counts": counts,
        "class_names": list(CLASS_NAMES), "categories": list(CATEGORIES), "vocabulary": list(WORLD_VOCABULARY),
        "recipe_sources": {split: recipe_sources(split) for split in SPLITS},
        "evaluation_files": {
            "panoptic_png_dir": "panoptic/panoptic_val", "semantic_png_dir": "panoptic/panoptic_semseg_val",
            "instances_json": "panoptic/annotations/instances_val.json",
            "gcg_mask_json": "gcg/annotations/val_test/val_gcg_coco_mask_gt.json",
            "gcg_caption_json": "gcg/annotations/val_test/val_gcg_coco_caption_gt.json",
            "cross_image_vgd_json": "vgd/img_vgdseg_cross_val.json",
            "caption_chat_json": {split: f"chat/llava_caption_{split}.json" for split in SPLITS},
        },
    }
    (root / "world.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return manifest
