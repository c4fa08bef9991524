"""The collator: S1's scale + crop, targets per decoder instance on the SAM canvas, every task's request."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from xsam_hf.processing import XSamProcessor
from xsam_hf.processing.visual_prompts import mask_to_canvas
from xsam_hf.training.augment import CanvasGeometry, RandomScaleCenterCrop
from xsam_hf.training.collator import XSamDataCollator
from xsam_hf.training.data import XSamExample
from xsam_hf.training.data.masks import decode_rle, encode_mask
from xsam_hf.training.data.schema import SegObject
from xsam_hf.training.train import build_train_dataset

from .conftest import tiny_model, tiny_recipe

CANVAS = 128


@pytest.fixture(scope="module")
def processor():
    return XSamProcessor.from_preset("tiny")


def dataset_of(data_root, sources, task, stage="s3"):
    return build_train_dataset(tiny_recipe(stage, data_root, data_root / "unused", [sources[task]]))


def model_inputs(batch):
    return {k: v for k, v in batch.items() if k not in ("skipped_samples", "task")}


def test_scale_one_is_the_plain_sam_preprocessing(processor):
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (30, 50, 3), dtype=np.uint8))
    reference = processor.seg_image_processor(images=[image], return_tensors="pt")["pixel_values"][0]
    identity = CanvasGeometry.identity(30, 50, CANVAS)
    assert identity == CanvasGeometry.scaled(30, 50, CANVAS, 1.0)
    assert (identity.image_to_canvas(image) - reference).abs().max() < 1e-5
    mask = np.zeros((30, 50), dtype=bool)
    mask[5:20, 10:40] = True
    assert torch.equal(identity.mask_to_canvas(mask), mask_to_canvas(mask, identity.resized, CANVAS))


def test_large_scale_crops_the_centre_and_small_scale_pads():
    # 40 x 80 at scale 2: longest side 256 -> 128 x 256, centre crop of width 128 keeps columns 64..191.
    big = CanvasGeometry.scaled(40, 80, CANVAS, 2.0)
    assert big.resized == (128, 256) and big.crop == (0, 64, 128, 128)
    mask = np.zeros((40, 80), dtype=bool)
    mask[:, 20:40] = True  # resized: columns 64..127 -> canvas columns 0..63
    canvas = big.mask_to_canvas(mask)
    assert canvas[:, :64].all() and not canvas[:, 64:].any()
    left_edge = np.zeros((40, 80), dtype=bool)
    left_edge[:, :10] = True  # resized columns 0..31: cropped away entirely
    assert not big.mask_to_canvas(left_edge).any()
    # Scale 0.25: 32 x 16 content in the top-left corner, the rest is padding (0 after normalisation).
    small = CanvasGeometry.scaled(40, 80, CANVAS, 0.25)
    assert small.resized == (16, 32) and small.valid_size == (16, 32)
    pixels = small.image_to_canvas(Image.new("RGB", (80, 40), (255, 255, 255)))
    assert pixels[:, :16, :32].min() > 2.0 and pixels[:, 16:, :].abs().max() == 0 and pixels[:, :, 32:].abs().max() == 0
    scales = [max(RandomScaleCenterCrop().sample(40, 80, CANVAS, np.random.default_rng(s)).resized) / CANVAS
              for s in range(200)]
    assert 0.1 <= min(scales) < 0.2 and 1.9 < max(scales) <= 2.0


def test_s1_batches_carry_closed_set_labels_and_augmented_masks(data_root, sources, processor):
    dataset = dataset_of(data_root, sources, "genseg", stage="s1")
    example = dataset[0].example
    # Unsampled: the class index is the category's position in the data set's list (person, car, tree).
    assert example.class_names == ["person", "car", "tree"]
    plain = XSamDataCollator(processor, stage="s1")([dataset[0], dataset[1]])
    assert set(model_inputs(plain)) == {"extra_pixel_values", "mask_labels", "class_labels"}
    assert plain["extra_pixel_values"].shape == (2, 3, CANVAS, CANVAS)
    assert [c.tolist() for c in plain["class_labels"]] == [[0, 2], [0, 2]]
    geometry = CanvasGeometry.identity(*example.image_size, CANVAS)
    assert torch.equal(plain["mask_labels"][0][0], geometry.mask_to_canvas(decode_rle(example.objects[0].mask)))

    augmented = XSamDataCollator(processor, stage="s1", augmentation=RandomScaleCenterCrop(), seed=3)
    first = augmented([dataset[0], dataset[1]])
    again = augmented([dataset[1], dataset[0]])  # per-sample draws do not depend on the batch
    assert torch.equal(first["extra_pixel_values"][0], again["extra_pixel_values"][1])
    augmented.set_epoch(1)
    assert not torch.equal(augmented([dataset[0]])["extra_pixel_values"][0], first["extra_pixel_values"][0])
    rng = augmented.rng_for(example)
    expected = RandomScaleCenterCrop().sample(*example.image_size, CANVAS, rng)
    valid_rows, valid_cols = expected.valid_size
    assert augmented([dataset[0]])["extra_pixel_values"][0, :, valid_rows:, :].abs().max() == 0


def test_generic_batch_targets_follow_the_sampled_classes(data_root, sources, processor):
    dataset = dataset_of(data_root, sources, "genseg")
    samples = [dataset[0], dataset[1]]
    batch = XSamDataCollator(processor, stage="s3")(samples)
    assert batch["task"] == "genseg" and batch["skipped_samples"] == 0 and batch["pack_across_batch"] is False
    assert len(batch["mask_labels"]) == 2  # one <SEG> per generic sample
    for sample, masks, labels, ids, labels_lm in zip(samples, batch["mask_labels"], batch["class_labels"],
                                                      batch["input_ids"], batch["labels"]):
        example = sample.example
        names = [example.class_names[i] for i in labels.tolist()]
        assert sorted(names) == ["person", "tree"]  # both objects; negatives are named but have no mask
        assert (ids == processor.phrase_start_token_id).sum() == len(example.class_names)
        assert (ids == processor.seg_token_id).sum() == 1
        reshaped = CanvasGeometry.identity(*example.image_size, CANVAS).resized
        for mask, obj in zip(masks, [o for o in example.objects]):
            assert torch.equal(mask, mask_to_canvas(decode_rle(obj.mask), reshaped, CANVAS))
        supervised = labels_lm[labels_lm != -100]
        assert processor.seg_token_id in supervised.tolist()  # the answer is supervised, the prompt is not
        assert processor.phrase_start_token_id not in supervised.tolist()


def test_referring_and_reasoning_batches_pack_and_give_one_instance_per_turn(data_root, sources, processor):
    collator = XSamDataCollator(processor, stage="s3")
    refseg = dataset_of(data_root, sources, "refseg")
    batch = collator([refseg[0], refseg[1]])
    assert batch["pack_across_batch"] is True
    assert len(batch["mask_labels"]) == 4  # 2 samples x 2 referred objects, one <SEG> turn each
    assert [c.tolist() for c in batch["class_labels"]] == [[0], [1], [0], [1]]  # local to each sample
    assert [(ids == processor.seg_token_id).sum().item() for ids in batch["input_ids"]] == [2, 2]
    model = tiny_model()
    output = model(**model_inputs(batch))
    # Packed: each instance is classified against the 4 expressions of the batch (+ background).
    assert output.class_queries_logits.shape[-1] == 4 + 1 and torch.isfinite(output.loss)

    reaseg = dataset_of(data_root, sources, "reaseg")
    batch = collator([reaseg[0], reaseg[1]])
    assert batch["pack_across_batch"] is True and len(batch["mask_labels"]) == 2
    assert all(m.shape[0] == 1 for m in batch["mask_labels"])


def test_gcg_vgd_and_chat_batches(data_root, sources, processor):
    collator = XSamDataCollator(processor, stage="s3")
    gcg = dataset_of(data_root, sources, "gcgseg")
    batch = collator([gcg[0]])
    text = processor.tokenizer.decode(batch["input_ids"][0][batch["input_ids"][0] >= 0])
    assert "<p>a man</p>" in text and "<p>a horse</p>" in text and batch["class_labels"][0].tolist() == [0, 1]

    vgd = dataset_of(data_root, sources, "vgdseg")
    samples = [vgd[0], vgd[1]]
    batch = collator(samples)
    for b, sample in enumerate(samples):
        classes = len(sample.example.class_names)
        assert batch["region_masks"][b].shape == (classes, CANVAS, CANVAS)  # one visual prompt per class
        assert (batch["input_ids"][b] == -300).sum() == classes
        assert set(batch["region_image_indices"][b].tolist()) <= {0, 1}  # prompts may come from the other image
        positives = [o for o in sample.example.objects if not o.iscrowd]
        assert batch["mask_labels"][b].shape[0] == len(positives)
        assert sorted(batch["class_labels"][b].tolist()) == sorted(o.class_index for o in positives)
    # Alone in a batch, every prompt comes from the sample's own image.
    alone = collator([samples[1]])
    assert set(alone["region_image_indices"][0].tolist()) == {0}

    chat = dataset_of(data_root, sources, "chat")
    batch = collator([chat[0], chat[1]])
    assert "mask_labels" not in batch and "pack_across_batch" not in batch
    assert (batch["labels"] != -100).any() and batch["pixel_values"].shape[0] == 2


def test_mixed_tasks_are_refused_and_samples_without_masks_train(data_root, sources, processor):
    collator = XSamDataCollator(processor, stage="s3")
    genseg, chat = dataset_of(data_root, sources, "genseg"), dataset_of(data_root, sources, "chat")
    with pytest.raises(ValueError, match="mixes tasks"):
        collator([genseg[0], chat[0]])

    example = genseg[0].example
    empty = XSamExample(record_id="empty/1", task="genseg", source="coco", image_path=example.image_path,
                        image_size=example.image_size, class_names=["person", "car"], class_ids=[1, 3], objects=[])
    with_masks = example.evolve(objects=[SegObject(mask=encode_mask(np.ones(example.image_size, dtype=bool)),
                                                   class_index=0)], class_names=["person"], class_ids=[1])
    batch = collator([empty, with_masks])
    assert batch["mask_labels"][0].shape == (0, CANVAS, CANVAS) and batch["class_labels"][0].numel() == 0
    model = tiny_model()
    output = model(**batch)
    assert torch.isfinite(output.loss) and output.loss_dict["loss_cross_entropy"] > 0
    output.loss.backward()
    assert model.background_embedding.weight.grad.abs().sum() > 0


def test_a_source_repeat_in_the_recipe_multiplies_its_share(data_root, sources):
    plain = build_train_dataset(tiny_recipe("s3", data_root, data_root / "unused", [sources["genseg"],
                                                                                      sources["refseg"]]))
    recipe = tiny_recipe("s3", data_root, data_root / "unused", [sources["genseg"], {**sources["refseg"], "repeat": 3}])
    weighted = build_train_dataset(recipe)
    assert weighted.original_lengths == plain.original_lengths
    assert weighted.factors == pytest.approx([plain.factors[0], 3 * plain.factors[1]])
    assert weighted.lengths[1] == math.floor(plain.original_lengths[1] * plain.factors[1] * 3 + 1e-9)
    assert recipe["data"]["sources"][1]["repeat"] == 3  # the recipe itself is left as given
