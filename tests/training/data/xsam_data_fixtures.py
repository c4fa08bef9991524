"""Writers of tiny files in the official formats, shared by the data tests (real JSON / pickle / PNG on disk)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as coco_mask

from xsam_hf.training.data.masks import id2rgb


def write_image(path: Path, height: int, width: int, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def rle_of(mask: np.ndarray) -> dict[str, Any]:
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def uncompressed_rle_of(mask: np.ndarray) -> dict[str, Any]:
    """COCO crowd-style RLE: column-major run lengths starting with a run of zeros."""
    flat = mask.astype(np.uint8).flatten(order="F")
    counts, current, run = [], 0, 0
    for value in flat:
        if value == current:
            run += 1
        else:
            counts.append(run)
            current, run = value, 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": counts}


def box_mask(height: int, width: int, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def rect_polygon(y0: int, x0: int, y1: int, x1: int) -> list[float]:
    """A COCO polygon whose rasterisation by pycocotools is rows y0..y1-1, columns x0..x1-1."""
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def write_panoptic_png(path: Path, segment_ids: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(id2rgb(segment_ids)).save(path)
    return path


def assert_picklable(source: Any) -> None:
    """DataLoader workers started with spawn/forkserver receive the dataset pickled: it must survive the trip."""
    import pickle

    copy = pickle.loads(pickle.dumps(source))
    assert len(copy) == len(source)
    assert copy[0] == source[0]


def write_refcoco_files(folder: Path, refs: list[dict[str, Any]], height: int, width: int,
                        split_by: str = "unc") -> Path:
    """RefCOCO's `instances.json` (images 100 and 200: a person and a dog in 100, a person in 200) and
    `refs(split_by).p` holding `refs`; the tests that read it each bring their own refs."""
    import pickle

    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "instances.json", {
        "images": [{"id": i, "file_name": f"COCO_train2014_{i:012d}.jpg", "height": height, "width": width}
                   for i in (100, 200)],
        "annotations": [
            {"id": 11, "image_id": 100, "category_id": 1, "segmentation": [rect_polygon(2, 3, 10, 9)],
             "bbox": [3, 2, 6, 8], "iscrowd": 0},
            {"id": 12, "image_id": 100, "category_id": 18,
             "segmentation": rle_of(box_mask(height, width, 12, 0, 20, 30)), "bbox": [0, 12, 30, 8], "iscrowd": 0},
            {"id": 21, "image_id": 200, "category_id": 1, "segmentation": [rect_polygon(0, 0, 5, 5)],
             "bbox": [0, 0, 5, 5], "iscrowd": 0},
        ],
        "categories": [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}],
    })
    with open(folder / f"refs({split_by}).p", "wb") as handle:
        pickle.dump(refs, handle, protocol=2)
    return folder
