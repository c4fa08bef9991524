"""bench/world_mask_resolution.py (the cap a mask grid puts on IoU, what a model reached, what finer costs)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils


def test_a_cell_aligned_mask_is_rebuilt_exactly_and_a_speck_is_lost(bench_script):
    grid_iou = bench_script("world_mask_resolution").grid_iou
    aligned = np.zeros((128, 128), dtype=bool)
    aligned[8:24, 12:20] = True  # 128 px in whole 4 px cells of a 32 x 32 grid: the logit changes sign on the
    # cell edges, except at the 4 corner pixels, where 3 of the 4 cells bilinear weighs are outside (0.61 > 0.39)
    assert grid_iou(aligned, 32) == 124 / 128
    speck = np.zeros((128, 128), dtype=bool)
    speck[50, 50] = True  # covers 1/16 of a cell: negative logit everywhere, nothing predicted
    assert grid_iou(speck, 32) == 0.0
    assert grid_iou(speck, 128) == 1.0  # a grid as fine as the canvas loses nothing
    disc = np.hypot(*np.mgrid[-64:64, -64:64]) < 7  # 14 px across: a finer grid gets closer
    assert grid_iou(disc, 32) < grid_iou(disc, 64)


def test_reached_recovers_the_reference_area_from_the_counts(bench_script, tmp_path):
    reached = bench_script("world_mask_resolution").reached
    predicted = np.zeros((128, 128), dtype=np.uint8, order="F")
    predicted[0:10, 0:10] = 1  # 100 px predicted; the reference is 200 px, 50 of them shared: union 250
    rle = mask_utils.encode(predicted)
    sample = {"intersection": 50, "union": 250, "rle": {"size": [128, 128], "counts": rle["counts"].decode()}}
    (tmp_path / "p.jsonl").write_text(json.dumps({"samples": [sample]}) + "\n")
    rows = {row["area_px"]: row for row in reached(tmp_path / "p.jsonl")}
    assert rows["150-299"] == {"area_px": "150-299", "n": 1, "mean_iou": 0.2}
    assert rows["0-149"]["n"] == 0 and rows["0-149"]["mean_iou"] is None


@pytest.mark.parametrize("name, finest", [("world (patch 8, scales [2, 1, 0.5])", 32),
                                          ("patch 4, scales [2, 1, 0.5]", 64),
                                          ("patch 4, scales [1, 0.5, 0.25]", 32)])
def test_variants_give_the_pyramid_they_claim(bench_script, name, finest):
    import torch

    module = bench_script("world_mask_resolution")
    model = module.variant_model(*module.VARIANTS[name]).eval()
    with torch.no_grad():
        pyramid = model.get_image_features(extra_pixel_values=torch.zeros(1, 3, 128, 128)).feature_pyramid
    assert [level.shape[-1] for level in pyramid] == [finest, finest // 2, finest // 4]
