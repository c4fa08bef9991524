"""Tiny data sets in the official on-disk formats for the training tests (built with the data tests' writers).

Every image here has exactly two non-crowd objects, so any split of a batch across processes sees the same number of
masks per process (the multi-process test relies on it).
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "data"))

from xsam_data_fixtures import box_mask, rect_polygon, rle_of, write_image, write_json, write_panoptic_png  # noqa: E402

H, W = 24, 32
CATEGORIES = [
    {"id": 1, "name": "person", "isthing": 1},
    {"id": 3, "name": "car", "isthing": 1},
    {"id": 184, "name": "tree-merged", "isthing": 0},
]


def _two_boxes(index: int) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]]:
    shift = index % 4
    return (2 + shift, 2, 12 + shift, 12), (8, 16 + shift, 20, 28 + shift)


def write_coco_panoptic(root: Path, images: int = 4) -> dict[str, str]:
    """COCO panoptic: JSON + id-coded PNGs + JPEGs; image i has a person (thing) and a tree (stuff)."""
    records, annotations = [], []
    for i in range(images):
        first, second = _two_boxes(i)
        ids = np.zeros((H, W), dtype=np.int64)
        ids[first[0]:first[2], first[1]:first[3]] = 1001
        ids[second[0]:second[2], second[1]:second[3]] = 2002
        name = f"{i:012d}"
        write_panoptic_png(root / "panoptic_train2017" / f"{name}.png", ids)
        write_image(root / "train2017" / f"{name}.jpg", H, W, seed=i)
        records.append({"id": i, "file_name": f"{name}.jpg", "height": H, "width": W})
        annotations.append({"image_id": i, "file_name": f"{name}.png", "segments_info": [
            {"id": 1001, "category_id": 1, "iscrowd": 0}, {"id": 2002, "category_id": 184, "iscrowd": 0}]})
    write_json(root / "annotations" / "panoptic_train2017.json",
               {"images": records, "annotations": annotations, "categories": CATEGORIES})
    return {"format": "coco_panoptic", "source": "coco_panoptic",
            "panoptic_json": "annotations/panoptic_train2017.json", "panoptic_png_dir": "panoptic_train2017",
            "image_dir": "train2017"}


def write_coco_instances(root: Path, images: int = 4, name: str = "instances.json") -> Path:
    """COCO instances with a polygon, a compressed RLE and a crowd annotation per image."""
    records, annotations = [], []
    for i in range(images):
        first, second = _two_boxes(i)
        file_name = f"img_{i}.jpg"
        write_image(root / "images" / file_name, H, W, seed=10 + i)
        records.append({"id": i + 1, "file_name": file_name, "height": H, "width": W})
        annotations += [
            {"id": 10 * i + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0,
             "segmentation": [rect_polygon(*first)], "bbox": [first[1], first[0], 10, 10]},
            {"id": 10 * i + 2, "image_id": i + 1, "category_id": 3, "iscrowd": 0,
             "segmentation": rle_of(box_mask(H, W, *second)), "bbox": [second[1], second[0], 12, 12]},
            {"id": 10 * i + 3, "image_id": i + 1, "category_id": 3, "iscrowd": 1,
             "segmentation": rle_of(box_mask(H, W, 20, 0, 24, 6)), "bbox": [0, 20, 6, 4]},
        ]
    path = root / "annotations" / name
    write_json(path, {"images": records, "annotations": annotations,
                      "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}]})
    return path


def write_refcoco(root: Path) -> dict[str, str]:
    """RefCOCO (`refs(unc).p` + `instances.json`): two images, two referred objects each."""
    folder = root / "refcoco"
    folder.mkdir(parents=True, exist_ok=True)
    images, annotations, refs = [], [], []
    for i in range(2):
        first, second = _two_boxes(i)
        file_name = f"COCO_train2014_{i:012d}.jpg"
        write_image(root / "train2014" / file_name, H, W, seed=20 + i)
        images.append({"id": 100 + i, "file_name": file_name, "height": H, "width": W})
        for k, box in enumerate((first, second)):
            ann_id = 1000 + 10 * i + k
            annotations.append({"id": ann_id, "image_id": 100 + i, "category_id": 1, "iscrowd": 0,
                                "segmentation": [rect_polygon(*box)], "bbox": [box[1], box[0], 10, 10]})
            sentences = [{"tokens": ["left"], "raw": "Left", "sent_id": 2 * ann_id, "sent": f"thing {k} left"}]
            refs.append({"ref_id": ann_id, "ann_id": ann_id, "image_id": 100 + i, "split": "train",
                         "category_id": 1, "sent_ids": [2 * ann_id], "sentences": sentences,
                         "file_name": file_name})
    write_json(folder / "instances.json", {"images": images, "annotations": annotations,
                                           "categories": [{"id": 1, "name": "person"}]})
    with open(folder / "refs(unc).p", "wb") as handle:
        pickle.dump(refs, handle)
    return {"format": "refcoco", "source": "refcoco", "dataset_dir": "refcoco", "image_dir": "train2014"}


def write_reasonseg(root: Path) -> dict[str, str]:
    """ReasonSeg (LabelMe JSON next to each JPEG) with an explanatory file."""
    split = root / "lisa" / "train"
    for i in range(2):
        write_image(split / f"img{i}.jpg", H, W, seed=30 + i)
        write_json(split / f"img{i}.json", {
            "text": [f"what is used for sitting {i}?"], "is_sentence": True,
            "shapes": [{"label": "target", "points": [[2, 2], [12, 2], [12, 10], [2, 10]], "shape_type": "polygon"}],
        })
    write_json(root / "lisa" / "explanatory" / "train.json",
               [{"image": "img0.jpg", "outputs": "A chair is for sitting."}])
    return {"format": "reasonseg", "source": "reasonseg", "split_dir": "lisa/train",
            "explanatory_json": "lisa/explanatory/train.json"}


def write_grandf(root: Path) -> dict[str, str]:
    """GranD-f GCG (`GranDf_HA_GCG_train.json`): captions with grounded phrases and RLE masks."""
    items = []
    for i in range(2):
        first, second = _two_boxes(i)
        write_image(root / "gcg_images" / f"sa_{i}.jpg", H, W, seed=40 + i)
        items.append({"file_name": f"sa_{i}.jpg", "image_id": f"sa_{i}", "caption": "A man riding a horse.",
                      "groundings": {
                          "A man": {"token_positives": [0, 5], "rle_masks": [rle_of(box_mask(H, W, *first))]},
                          "a horse": {"token_positives": [13, 20], "rle_masks": [rle_of(box_mask(H, W, *second))]},
                      }})
    write_json(root / "GranDf_HA_GCG_train.json", items)
    return {"format": "gcg", "source": "grandf_gcg", "json_path": "GranDf_HA_GCG_train.json", "image_dir": "gcg_images"}


def write_vgd(root: Path) -> dict[str, str]:
    """COCO-VGD, generated from COCO instances with the official visual-prompt rules on first use."""
    write_coco_instances(root, images=2, name="instances_vgd.json")
    return {"format": "coco_vgd", "source": "coco_vgd", "json_path": "vgd/coco_vgd_train.json", "image_dir": "images",
            "generate_from": "annotations/instances_vgd.json"}


def write_llava(root: Path, images: int = 2) -> dict[str, str]:
    """LLaVA conversations (`{id, image, conversations: [{from, value}]}`)."""
    records = []
    for i in range(images):
        write_image(root / "llava_images" / f"{i}.jpg", H, W, seed=50 + i)
        records.append({"id": str(i), "image": f"{i}.jpg", "conversations": [
            {"from": "human", "value": "<image>\nWhat is in the picture?"},
            {"from": "gpt", "value": f"Some noise number {i}."}]})
    write_json(root / "llava.json", records)
    return {"format": "llava", "source": "llava", "json_path": "llava.json", "image_dir": "llava_images"}


def tiny_model(stage: str = "s3"):
    """A randomly initialised tiny X-SAM in training mode, with the tests' 2,048 loss points."""
    from xsam_hf import XSamConfig, XSamForSegmentation

    model = XSamForSegmentation._from_config(XSamConfig.from_preset("tiny", stage=stage), attn_implementation="eager")
    model.config.decoder_config.train_num_points = 2048
    return model.train()


def tiny_recipe(stage: str, root: Path, output_dir: Path, sources: list[dict[str, Any]], **training: Any) -> dict:
    """A recipe for the tiny preset: no Hub downloads, eager attention, a few CPU steps, no checkpoints."""
    values = {
        "output_dir": str(output_dir),
        "max_steps": 2,
        "per_device_train_batch_size": 2,
        "learning_rate": 1e-3,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "use_cpu": True,
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
    }
    values.update(training)
    return {
        "stage": stage,
        "seed": 0,
        # 2,048 loss points instead of 12,544: the same code path, a quarter of the loss cost on 2 CPU cores.
        "model": {"preset": "tiny", "attn_implementation": "eager", "decoder_overrides": {"train_num_points": 2048}},
        "processor": {"preset": "tiny"},
        "data": {"root": str(root), "seed": 0, "balance_threshold": 0.1, "sources": sources},
        "training": values,
    }


@pytest.fixture(scope="session")
def written_data(tmp_path_factory) -> tuple[Path, dict[str, dict[str, str]]]:
    """One folder with a tiny data set of every official training format, and its recipe source entries by task."""
    root = tmp_path_factory.mktemp("xsam_training_data")
    write_coco_instances(root)
    specs = {
        "genseg": write_coco_panoptic(root),
        "instances": {"format": "coco_instances", "source": "my_coco", "annotations": "annotations/instances.json",
                      "image_dir": "images"},
        "refseg": write_refcoco(root),
        "reaseg": write_reasonseg(root),
        "gcgseg": write_grandf(root),
        "vgdseg": write_vgd(root),
        "chat": write_llava(root),
    }
    return root, specs


@pytest.fixture(scope="session")
def data_root(written_data) -> Path:
    return written_data[0]


@pytest.fixture(scope="session")
def sources(written_data) -> dict[str, dict[str, str]]:
    """Recipe source entries of `data_root`, by task (copies: tests may edit them)."""
    return {task: dict(spec) for task, spec in written_data[1].items()}
