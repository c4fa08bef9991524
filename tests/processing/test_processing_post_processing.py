"""Post-processing on hand-built outputs whose right answer is known.

The image is 100 x 140; on the 128 canvas it is resized to 91 x 128 and padded below. Mask logits live on a 16 x 16
grid (1/8 of the canvas), where the image covers rows 0..11.4. Regions are given in grid cells: columns 0-7 are the
left half of the image (x < 70), columns 8-15 the right half.
"""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from xsam_hf.processing import OFFICIAL_THRESHOLDS, parse_grounded_text

IMAGE = np.zeros((100, 140, 3), dtype=np.uint8)
GRID = 16
LEFT, RIGHT = (slice(0, 12), slice(0, 8)), (slice(0, 12), slice(8, 16))
PADDING = (slice(12, 16), slice(0, 16))


def mask_logits(*regions, value=10.0):
    logits = torch.full((GRID, GRID), -value)
    for rows, cols in regions:
        logits[rows, cols] = value
    return logits


def class_logits(*rows):
    """One row per query: the (unnormalised) logits over the classes, background last."""
    return torch.tensor(rows, dtype=torch.float32)


def outputs(instances, sample_index, condition_index=None, c_max=None):
    """Pack per-instance (class_logits [Q, C_i + 1], masks [Q, 16, 16]) like the model: classes padded to C_max with
    very negative logits, background last, `condition_mask` marking the valid ones."""
    c_max = c_max or max(c.shape[1] - 1 for c, _ in instances)
    packed, valid = [], []
    for classes, _ in instances:
        c = classes.shape[1] - 1
        row = torch.full((classes.shape[0], c_max + 1), -1e9)
        row[:, :c], row[:, -1] = classes[:, :c], classes[:, -1]
        packed.append(row)
        valid.append(torch.tensor([True] * c + [False] * (c_max - c) + [True]))
    return SimpleNamespace(
        class_queries_logits=torch.stack(packed),
        masks_queries_logits=torch.stack([m for _, m in instances]),
        instance_sample_index=torch.tensor(sample_index),
        instance_condition_index=torch.tensor(condition_index or [-1] * len(instances)),
        condition_mask=torch.stack(valid),
    )


@pytest.fixture()
def two_halves():
    """person on the left, dog on the right; query 0's mask also covers the canvas padding (a trap for un-cropped
    resizing); query 2 is background everywhere."""
    classes = class_logits([10, 0, 0], [0, 10, 0], [0, 0, 10])
    masks = torch.stack([mask_logits(LEFT, PADDING), mask_logits(RIGHT), mask_logits((slice(0, 16), slice(0, 16)))])
    return outputs([(classes, masks)], [0])


def test_semantic_crops_the_padding_before_resizing(processor, two_halves):
    inputs = processor(images=IMAGE, task="semantic", categories=["person", "dog"])
    label_map = processor.post_process_semantic_segmentation(two_halves, inputs)[0]
    assert label_map.shape == (100, 140)
    assert (label_map[:, :66] == 0).all() and (label_map[:, 74:] == 1).all()
    # Un-cropped resizing would stretch the padding over the bottom rows, painting them "person".
    assert label_map[99, 139] == 1
    same = processor.post_process_semantic_segmentation(two_halves, target_sizes=[(100, 140)])[0]
    assert torch.equal(same, label_map)


def test_instance_segmentation(processor, two_halves):
    inputs = processor(images=IMAGE, task="instance", categories=["person", "dog"])
    result = processor.post_process_instance_segmentation(two_halves, inputs, return_coco_annotation=True)[0]
    info = result["segments_info"]
    labels = [(s["label_id"], s["label"]) for s in sorted(info, key=lambda s: s["label_id"])]
    assert labels == [(0, "person"), (1, "dog")]
    assert all(s["score"] > 0.99 for s in info)
    segmentation = result["segmentation"]
    by_label = {s["label_id"]: s["id"] for s in info}
    assert (segmentation[:, :66] == by_label[0]).all() and (segmentation[:, 74:] == by_label[1]).all()
    decoded = mask_utils.decode(info[0]["rle"]).astype(bool)
    assert np.array_equal(decoded, (segmentation == info[0]["id"]).numpy())
    binary = processor.post_process_instance_segmentation(two_halves, inputs, return_binary_maps=True)[0]
    assert binary["segmentation"].shape == (2, 100, 140) and binary["segmentation"].dtype == torch.bool
    # The official evaluation keeps every top-Q (query, class) pair with a non-empty mask (threshold 0).
    official = processor.post_process_instance_segmentation(two_halves, inputs, thresholds="official")[0]
    assert OFFICIAL_THRESHOLDS["instance"]["threshold"] == 0.0
    assert len(official["segments_info"]) == 3 and {s["label_id"] for s in official["segments_info"][:2]} == {0, 1}


def test_panoptic_merges_stuff_and_drops_covered_segments(processor):
    top_left, top_right = (slice(0, 6), slice(0, 8)), (slice(0, 6), slice(8, 16))
    bottom_left, bottom_right = (slice(6, 12), slice(0, 8)), (slice(6, 12), slice(8, 16))
    classes = class_logits([10, 0, 0], [10, 0, 0], [0, 10, 0], [0, 10, 0], [0, 0, 10], [4, 0, 0])
    masks = torch.stack(
        [
            mask_logits(bottom_left),
            mask_logits(bottom_right),
            mask_logits(top_left),
            mask_logits(top_right),
            mask_logits((slice(0, 16), slice(0, 16))),  # background query
            mask_logits((slice(8, 10), slice(2, 4))),  # a weaker person inside query 0's mask: loses every pixel
        ]
    )
    out = outputs([(classes, masks)], [0])
    inputs = processor(images=IMAGE, task="panoptic", categories=["person", "sky"], stuff_categories=["sky"])
    result = processor.post_process_panoptic_segmentation(out, inputs)[0]
    info = result["segments_info"]
    segments = [(s["id"], s["label"], s["was_fused"]) for s in info]
    assert segments == [(1, "person", False), (2, "person", False), (3, "sky", True)]
    segmentation = result["segmentation"]
    assert (segmentation[:45] == 3).all()  # the two sky queries form one segment over the top half
    assert (segmentation[56:, :66] == 1).all() and (segmentation[56:, 74:] == 2).all()
    assert (segmentation >= 1).all()
    # Without fusing, the two sky queries stay separate.
    unfused = processor.post_process_panoptic_segmentation(out, inputs, label_ids_to_fuse=set())[0]
    assert [s["label"] for s in unfused["segments_info"]] == ["person", "person", "sky", "sky"]
    # A threshold above every query's probability leaves no segment (-1 everywhere).
    empty = processor.post_process_panoptic_segmentation(out, inputs, threshold=0.99999)[0]
    assert empty["segments_info"] == [] and (empty["segmentation"] == -1).all()


def test_referring_picks_each_expressions_best_query(processor):
    # One sample, two expressions -> two instances; instance k targets condition k.
    classes = class_logits([0, 0, 5], [1, 0, 0], [6, 0, 0], [0, 7, 0])
    masks = torch.stack([mask_logits(LEFT, RIGHT), mask_logits(RIGHT), mask_logits(LEFT), mask_logits(RIGHT)])
    out = outputs([(classes, masks), (classes, masks)], [0, 0], condition_index=[0, 1])
    inputs = processor(images=IMAGE, task="referring", expressions=["the man", "the dog"])
    result = processor.post_process_referring_segmentation(out, inputs, return_coco_annotation=True)[0]
    assert result["labels"] == ["the man", "the dog"] and result["label_ids"] == [0, 1]
    left, right = result["masks"]
    assert left[:, :66].all() and not left[:, 74:].any()
    assert right[:, 74:].all() and not right[:, :66].any()
    assert result["scores"][0] == pytest.approx(torch.softmax(torch.tensor([6.0, 0, 0]), 0)[0].item(), abs=1e-6)
    assert np.array_equal(mask_utils.decode(result["rle"][1]).astype(bool), right.numpy())


def test_interactive_selects_by_box_iou_with_the_prompt(processor):
    block_left, block_right = (slice(0, 6), slice(0, 6)), (slice(2, 9), slice(10, 16))
    classes = class_logits([10, 0], [5, 0], [-5, 0], [0, 10])
    masks = torch.stack([mask_logits(block_left), mask_logits(block_right), mask_logits(LEFT), mask_logits(RIGHT)])
    out = outputs([(classes, masks)], [0])
    # The right block covers canvas x 80..128 / y 16..72, i.e. x 87.5..140 / y 17.6..79 on the image.
    inputs = processor(images=IMAGE, task="interactive", visual_prompts={"box": (88, 18, 140, 79)})
    result = processor.post_process_interactive_segmentation(out, inputs)[0]
    mask = result["masks"][0]
    assert result["labels"] == ["region"] and result["box_iou"] > 0.9
    assert mask[30:70, 95:].all() and not mask[:, :80].any()  # query 1, although query 0 scores higher
    # When no query reaches the threshold, the best-scoring one is the only candidate.
    fallback = processor.post_process_interactive_segmentation(out, inputs, threshold=1.01)[0]
    assert fallback["masks"][0][:40, :45].all() and not fallback["masks"][0][:, 60:].any()


def test_vgd_uses_the_prompt_names(processor, two_halves):
    prompts = [{"point": (20, 20)}, {"point": (100, 20)}]
    inputs = processor(images=IMAGE, task="vgd", visual_prompts=prompts, prompt_names=["cup", "plate"])
    result = processor.post_process_vgd_segmentation(two_halves, inputs)[0]
    assert sorted(s["label"] for s in result["segments_info"]) == ["cup", "plate"]


def test_grounded_caption_spans_and_masks(processor):
    text = "<p>A man</p>  riding <p>a horse</p>  on the beach. And <SEG>.<|end|><|endoftext|>"
    classes = class_logits([8, 0, 0], [0, 8, 0], [0, 0, 8])
    masks = torch.stack([mask_logits(LEFT), mask_logits(RIGHT), mask_logits(LEFT, RIGHT)])
    out = outputs([(classes, masks)], [0])
    inputs = processor(images=IMAGE, task="gcg")
    result = processor.post_process_generation([text], out, inputs)[0]
    assert result["caption"] == "A man riding a horse on the beach."
    (man, man_span, man_mask), (horse, horse_span, horse_mask) = result["entities"]
    assert (man, man_span, horse, horse_span) == ("A man", (0, 5), "a horse", (13, 20))
    assert result["caption"][slice(*horse_span)] == "a horse"
    assert man_mask[:, :66].all() and not man_mask[:, 74:].any() and horse_mask[:, 74:].all()
    assert (result["segmentation"][:, :66] == 1).all() and (result["segmentation"][:, 74:] == 2).all()
    # Token ids work too (special tokens are kept while decoding).
    ids = processor.tokenizer.encode(text, add_special_tokens=False)
    assert processor.post_process_generation(torch.tensor([ids]), out, inputs)[0]["caption"] == result["caption"]
    text_only = processor.post_process_generation(text)[0]
    assert text_only["caption"] == result["caption"] and text_only["entities"][0][2] is None


def test_phrases_in_the_seg_sentence_are_painted_but_not_captioned(processor):
    # A model that writes no "." before <SEG> puts every phrase in the sentence the caption drops; the official
    # evaluation still takes a mask per phrase condition, so `segmentation` has them while `entities` cannot.
    classes = class_logits([8, 0, 0], [0, 8, 0], [0, 0, 8])
    masks = torch.stack([mask_logits(LEFT), mask_logits(RIGHT), mask_logits(LEFT, RIGHT)])
    out = outputs([(classes, masks)], [0])
    inputs = processor(images=IMAGE, task="gcg")
    result = processor.post_process_generation(["<p>a man</p> , <p>a horse</p> <SEG>.<|end|>"], out, inputs)[0]
    assert result["caption"] == "" and result["entities"] == [] and result["scores"] == []
    assert (result["segmentation"][:, :66] == 1).all() and (result["segmentation"][:, 74:] == 2).all()
    # One phrase kept, one dropped: the kept phrase's entity has its own mask, the map has both.
    mixed = "<p>A man</p> waits. It is <SEG> near <p>a horse</p>.<|end|>"
    result = processor.post_process_generation([mixed], out, inputs)[0]
    ((man, span, man_mask),) = result["entities"]
    assert (result["caption"], man, span) == ("A man waits.", "A man", (0, 5))
    assert man_mask[:, :66].all() and not man_mask[:, 74:].any() and result["scores"][0] > 0.99
    assert (result["segmentation"][:, :66] == 1).all() and (result["segmentation"][:, 74:] == 2).all()


def test_parse_grounded_text_keeps_condition_order_when_sentences_are_dropped():
    text = "<p>A cat</p> sleeps. It is <SEG> near <p>the door</p>. <p>Mr. Smith</p> waves."
    caption, entities = parse_grounded_text(text)
    assert caption == "A cat sleeps. Mr. Smith waves."
    assert entities == [("A cat", (0, 5), 0), ("Mr. Smith", (14, 23), 2)]


def test_mixed_batch_dispatch_and_sample_mapping(processor, two_halves):
    generic = (two_halves.class_queries_logits[0], two_halves.masks_queries_logits[0])
    referring_classes = torch.cat([class_logits([8, 0], [0, 8], [-8, 8]), torch.full((3, 1), -1e9)], dim=1)
    referring_classes = referring_classes[:, [0, 2, 1]]  # one valid class, one padded, background last
    referring_masks = torch.stack([mask_logits(RIGHT), mask_logits(LEFT), mask_logits(LEFT)])
    out = outputs([generic, (referring_classes, referring_masks)], [1, 0], condition_index=[-1, 0])
    out.condition_mask = torch.tensor([[True, True, True], [True, False, True]])
    inputs = processor(
        images=[IMAGE, IMAGE],
        task=["referring", "semantic"],
        expressions=["the dog", None],
        categories=[None, ["person", "dog"]],
    )
    referring, semantic = processor.post_process(out, inputs)
    assert referring["labels"] == ["the dog"] and referring["masks"][0][:, 74:].all()
    assert (semantic[:, :66] == 0).all() and (semantic[:, 74:] == 1).all()


def test_half_precision_outputs_give_the_same_masks(processor, two_halves):
    inputs = processor(images=IMAGE, task="instance", categories=["person", "dog"])
    half = SimpleNamespace(**vars(two_halves))
    half.class_queries_logits = two_halves.class_queries_logits.to(torch.bfloat16)
    half.masks_queries_logits = two_halves.masks_queries_logits.to(torch.bfloat16)
    full = processor.post_process_instance_segmentation(two_halves, inputs)[0]
    reduced = processor.post_process_instance_segmentation(half, inputs)[0]
    assert torch.equal(full["segmentation"], reduced["segmentation"])
    assert [s["label_id"] for s in full["segments_info"]] == [s["label_id"] for s in reduced["segments_info"]]
