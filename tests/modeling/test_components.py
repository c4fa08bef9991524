"""Hand-computed cases for what the golden case does not cover."""

import math

import pytest
import torch

from xsam_hf.modeling.projection import pixel_shuffle, region_features, sample_region_points
from xsam_hf.modeling.segmentation import XSamCosineClassHead
from xsam_hf.modeling.spans import condition_ids, seg_ids

from .conftest import P_CLOSE, P_OPEN, SEG, build_tiny


def test_pixel_shuffle_space_to_depth_orders_channels_row_offset_column_offset_channel():
    # (1, 2, 2, C=2): value = 10 * (2 * row + col) + channel
    x = torch.tensor([[[[0.0, 1.0], [10.0, 11.0]], [[20.0, 21.0], [30.0, 31.0]]]])
    out = pixel_shuffle(x, 0.5)
    assert out.shape == (1, 1, 1, 8)
    assert out.flatten().tolist() == [0, 1, 10, 11, 20, 21, 30, 31]


def test_pixel_shuffle_depth_to_space_reads_channels_as_column_offset_row_offset_channel():
    # (1, 1, 1, 8): channel index = (column_offset * 2 + row_offset) * 2 + c
    x = torch.arange(8.0).reshape(1, 1, 1, 8)
    out = pixel_shuffle(x, 2)
    assert out.shape == (1, 2, 2, 2)
    # out[row, col] = channels ((col * 2 + row) * 2 + c)
    assert out[0, 0, 0].tolist() == [0, 1]
    assert out[0, 1, 0].tolist() == [2, 3]  # row 1, col 0
    assert out[0, 0, 1].tolist() == [4, 5]  # row 0, col 1
    assert out[0, 1, 1].tolist() == [6, 7]
    # not the inverse of the 0.5 direction, and not torch's pixel_unshuffle either
    assert not torch.equal(pixel_shuffle(pixel_shuffle(x, 2), 0.5), x)
    torch_order = torch.nn.functional.pixel_unshuffle(torch.arange(8.0).reshape(1, 2, 2, 2).permute(0, 3, 1, 2), 2)
    assert not torch.equal(pixel_shuffle(torch.arange(8.0).reshape(1, 2, 2, 2), 0.5).flatten(), torch_order.flatten())


def test_pixel_shuffle_rejects_sizes_it_cannot_divide():
    with pytest.raises(ValueError, match="divisible"):
        pixel_shuffle(torch.zeros(1, 3, 4, 4), 0.5)
    with pytest.raises(ValueError, match="divisible"):
        pixel_shuffle(torch.zeros(1, 2, 2, 6), 2)


def test_region_points_cover_small_masks_and_subsample_large_ones():
    small = torch.zeros(8, 8, dtype=torch.bool)
    small[2, 3] = small[5, 6] = True
    points = sample_region_points(small, 256, torch.Generator().manual_seed(0))
    assert points.shape == (256, 2)
    # every point is one of the two pixels, both present; (x, y) = index / size * 2 - 1
    expected = {(3 / 8 * 2 - 1, 2 / 8 * 2 - 1), (6 / 8 * 2 - 1, 5 / 8 * 2 - 1)}
    assert {tuple(p) for p in points.tolist()} == expected
    large = torch.ones(32, 32, dtype=torch.bool)
    points = sample_region_points(large, 256, torch.Generator().manual_seed(0))
    assert len({tuple(p) for p in points.tolist()}) == 256  # without replacement
    with pytest.raises(ValueError, match="empty"):
        sample_region_points(torch.zeros(4, 4, dtype=torch.bool), 8)


def test_region_feature_is_the_max_of_bilinear_samples_at_the_mask_pixels():
    # Feature map on a 4 x 4 grid equal to the canvas: channel 0 = 10 * y + x, channel 1 = -x.
    yy, xx = torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij")
    feature_map = torch.stack([10 * yy + xx, -xx])[None]  # (1, 2, 4, 4)
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, 1, 2] = mask[0, 3, 0] = True
    token = region_features(feature_map, mask, num_points=16, deterministic=True)
    # pixel (y, x) -> grid (x/4*2-1, y/4*2-1) -> align_corners=True coords (x*3/4, y*3/4):
    # (1, 2) reads (0.75, 1.5): 10*0.75 + 1.5 = 9.0 and -1.5 ; (3, 0) reads (2.25, 0): 22.5 and 0.
    assert torch.allclose(token, torch.tensor([[22.5, 0.0]]), atol=1e-5)


def test_region_sampling_is_reproducible_at_inference_and_random_in_training():
    torch.manual_seed(0)
    feature_map = torch.randn(1, 3, 8, 8)
    mask = torch.rand(1, 64, 64) > 0.3
    a = region_features(feature_map, mask, num_points=16, deterministic=True)
    torch.manual_seed(123)
    b = region_features(feature_map, mask, num_points=16, deterministic=True)
    assert torch.equal(a, b)
    draws = {tuple(region_features(feature_map, mask, 16, deterministic=False).flatten().tolist()) for _ in range(5)}
    assert len(draws) > 1


def test_condition_and_seg_ids_span_both_tags():
    ids = torch.tensor([[5, P_OPEN, 7, 8, P_CLOSE, 9, P_OPEN, 6, P_CLOSE, SEG, P_OPEN, 4]])
    assert condition_ids(ids, P_OPEN, P_CLOSE).tolist() == [[-1, 0, 0, 0, 0, -1, 1, 1, 1, -1, -1, -1]]
    assert seg_ids(ids, SEG).tolist() == [[-1] * 9 + [0, -1, -1]]


def test_gcg_conditions_are_span_means_and_seg_is_its_own_state():
    model = build_tiny()
    # one sample, GCG-like: two phrases then one <SEG>
    cond = torch.tensor([[-1, 0, 0, 0, -1, 1, 1, 1, -1, -1]])
    seg = torch.tensor([[-1] * 9 + [0]])
    projected = torch.randn(1, 10, model.config.decoder_config.hidden_dim)
    instances = model._gather_instances(projected, cond, seg, pack_across_batch=False)
    assert instances.conditions.shape == (1, 3, 64)
    torch.testing.assert_close(instances.conditions[0, 0], projected[0, 1:4].mean(0))
    torch.testing.assert_close(instances.conditions[0, 1], projected[0, 5:8].mean(0))
    torch.testing.assert_close(instances.conditions[0, 2], model.background_embedding.weight[0])
    torch.testing.assert_close(instances.seg_embeddings[0, 0], projected[0, 9])
    assert instances.condition_index.tolist() == [-1]


def test_referring_packing_shapes_and_label_offsets():
    """Samples with K = 2 and 3 expressions (one <SEG> each): sum K = 5 instances, each classifying sum K + 1."""
    model = build_tiny()
    length, width = 20, model.config.decoder_config.hidden_dim
    cond = torch.full((2, length), -1)
    seg = torch.full((2, length), -1)
    for b, k_count in enumerate((2, 3)):
        for k in range(k_count):
            cond[b, 3 * k : 3 * k + 2] = k  # a two-token span per expression
            seg[b, 12 + k] = k
    projected = torch.randn(2, length, width)
    packed = model._gather_instances(projected, cond, seg, pack_across_batch=True)
    assert packed.conditions.shape == (5, 6, width)
    assert packed.seg_embeddings.shape == (5, 1, width)
    assert packed.sample_index.tolist() == [0, 0, 1, 1, 1]
    assert packed.label_offset.tolist() == [0, 0, 2, 2, 2]
    assert packed.condition_index.tolist() == [0, 1, 2, 3, 4]
    # every instance sees the same 5 expressions, in batch order, then the background
    torch.testing.assert_close(packed.conditions[0], packed.conditions[4])
    torch.testing.assert_close(packed.conditions[0, 3], projected[1, 3:5].mean(0))
    # without packing (inference) each sample stays on its own: K + 1 classes, padded to 4
    alone = model._gather_instances(projected, cond, seg, pack_across_batch=False)
    assert alone.conditions.shape == (5, 4, width)
    assert alone.condition_mask.tolist()[0] == [True, True, False, True]
    assert alone.condition_index.tolist() == [0, 1, 0, 1, 2]


def test_cosine_class_head_by_hand():
    head = XSamCosineClassHead(logit_scale_init=math.log(10.0), clamp=500.0)
    queries = torch.tensor([[[1.0, 0.0], [3.0, 4.0]]])  # (1, 2, 2)
    conditions = torch.tensor([[[2.0, 0.0], [0.0, 5.0], [1.0, 1.0]]])  # (1, 3, 2)
    mask = torch.tensor([[True, False, True]])
    logits = head(queries, conditions, mask)
    assert torch.allclose(logits[0, :, 0], torch.tensor([10.0, 6.0]))
    assert torch.allclose(logits[0, :, 2], torch.tensor([10 / math.sqrt(2), 10 * 7 / (5 * math.sqrt(2))]))
    assert (logits[0, :, 1] <= -1e8).all()
    clamped = XSamCosineClassHead(logit_scale_init=math.log(1000.0), clamp=500.0)(queries, conditions, mask)
    assert clamped[0, 0, 0].item() == 500.0
