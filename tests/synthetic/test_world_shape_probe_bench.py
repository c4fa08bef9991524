"""bench/world_shape_probe.py (is shape readable from the segmentation features, how fast is it learned)."""

from __future__ import annotations

import pytest
import torch

from xsam_hf import default_model
from xsam_hf.synthetic.scene import generate_scene


def test_max_pool_takes_the_cells_a_mask_covers_for_at_least_30_percent(bench_script):
    max_pooled = bench_script("world_shape_probe")._max_pooled
    features = torch.arange(16.0).reshape(1, 4, 4)  # one channel, 4x4 cells of 2x2 pixels on an 8x8 image
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[0, 0:2, 0:4] = True  # cells (0,0) and (0,1) fully
    masks[0, 2, 0:2] = True  # half of cell (1,0): value 4
    masks[0, 7, 7] = True  # a quarter of cell (3,3) (value 15): under 30%, left out
    masks[1, 5, 5] = True  # thinner than any cell: keeps its mean
    mean = torch.tensor([[1.5], [-1.0]])
    assert max_pooled(features, masks, mean).tolist() == [[4.0], [-1.0]]


def test_the_probe_reads_an_encoded_label_and_not_noise(bench_script):
    accuracy = bench_script("world_shape_probe").linear_probe_accuracy
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 6, (600,), generator=generator)
    noise = torch.randn(600, 32, generator=generator)
    encoded = noise.clone()
    encoded[:, :6] += 4.0 * torch.nn.functional.one_hot(labels, 6)
    assert accuracy(encoded[:400], labels[:400], encoded[400:], labels[400:], 6) >= 0.95
    assert accuracy(noise[:400], labels[:400], noise[400:], labels[400:], 6) <= 1 / 6 + 0.1


def test_probe_pools_every_object_on_every_pyramid_level(bench_script):
    loaded = default_model.load_model(None)
    result = bench_script("world_shape_probe").probe(loaded.model.eval(), loaded.processor,
                                                   train_scenes=3, val_scenes=2)
    assert result["train_objects"] == sum(len(generate_scene(0, "train", i).objects) for i in range(3))
    assert result["val_objects"] == sum(len(generate_scene(0, "val", i).objects) for i in range(2))
    assert set(result["val_accuracy_by_level"]) == {"32x32", "16x16", "8x8"}  # the world preset's pyramid


def test_token_pools_weigh_each_cell_by_the_share_the_mask_covers(bench_script):
    token_pools = bench_script("world_shape_probe").token_pools
    tokens = torch.tensor([[0.0], [10.0], [20.0], [30.0]])  # a 2x2 grid of cells of 4x4 pixels on an 8x8 image
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[0, 0:4, 0:4] = True  # all of cell 0 (16 px)
    masks[0, 0:2, 4:8] = True  # half of cell 1 (8 px)
    masks[1, 6:8, 6:8] = True  # a quarter of cell 3 only
    mean, top = token_pools(tokens, masks)
    assert mean[:, 0].tolist() == pytest.approx([(1.0 * 0 + 0.5 * 10) / 1.5, 30.0])
    assert top[:, 0].tolist() == [0.0, 30.0]


def test_probe_reads_the_llm_image_tokens_of_every_object(bench_script):
    loaded = default_model.load_model(None)
    result = bench_script("world_shape_probe").probe(loaded.model.eval(), loaded.processor, train_scenes=3,
                                                   val_scenes=2, attribute="colour", features="llm-tokens")
    assert result["val_objects"] == sum(len(generate_scene(0, "val", i).objects) for i in range(2))
    assert set(result["val_accuracy_by_level"]) == {f"{kind} tokens, {pool}" for kind in ("sam", "siglip")
                                                    for pool in ("weighted mean", "top token")}
    assert result["features"] == "llm-tokens" and result["chance"] == 0.125


def test_train_encoder_scores_every_validation_object(bench_script):
    loaded = default_model.load_model(None)
    run = bench_script("world_shape_probe").train_encoder(2, 1e-3, loaded.processor.seg_image_processor,
                                                         val_scenes=2, every=1)
    objects = sum(len(generate_scene(0, "val", i).objects) for i in range(2))
    steps = list(run)
    assert [step for step, _ in steps] == [1, 2]
    for _, accuracy in steps:
        assert accuracy * objects == pytest.approx(round(accuracy * objects))  # a count of right objects
