"""Behaviour of XSamForSegmentation on the tiny preset (random weights)."""

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoModelForImageTextToText

from xsam_hf import XSamConfig, XSamForSegmentation

from .conftest import build_tiny, pad_batch, random_images, random_targets, relative_error, synthetic_prompt

# Computed but not on X-SAM's path (architecture spec §1.3, §1.5): SigLIP's last layer, post-layernorm and pooling
# head (features come from hidden_states[-2]) and the SAM neck (the connector reads block outputs).
UNUSED_PREFIXES = (
    "vision_tower.encoder.layers.2.",
    "vision_tower.post_layernorm.",
    "vision_tower.head.",
    "segmentation_encoder.vision_encoder.neck.",
)


def _inputs(prompts, seed=0, with_targets=False, class_counts=None):
    ids, mask = pad_batch(prompts)
    pixels, canvas = random_images(len(prompts), seed=seed)
    batch = dict(input_ids=ids, attention_mask=mask, pixel_values=pixels, extra_pixel_values=canvas)
    if with_targets:
        batch["labels"] = ids.masked_fill((mask == 0) | (ids < 0), -100)
        targets = [random_targets(2, c, seed=20 + i) for i, c in enumerate(class_counts)]
        batch["mask_labels"] = [t[0] for t in targets]
        batch["class_labels"] = [t[1] for t in targets]
    return batch


def test_gradients_reach_every_trainable_part():
    torch.manual_seed(0)
    model = build_tiny(train_num_points=1024).train()
    out = model(**_inputs([synthetic_prompt(3), synthetic_prompt(2, seed=1)], with_targets=True, class_counts=(3, 2)))
    out.loss.backward()
    without_grad = [
        n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0
    ]
    assert without_grad, "the unused parts are expected to get no gradient"
    assert all(n.startswith(UNUSED_PREFIXES) for n in without_grad), without_grad
    for part in ("vision_projector", "seg_projector", "llm_projector", "connector", "segmentation_decoder",
                 "background_embedding", "class_head", "language_model", "segmentation_encoder", "vision_tower"):
        assert any(n.startswith(part) for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0)


def test_an_image_in_a_batch_of_three_gives_its_single_image_outputs():
    torch.manual_seed(0)
    model = build_tiny()
    prompts = [synthetic_prompt(3, seed=0), synthetic_prompt(1, seed=1), synthetic_prompt(5, seed=2)]
    batch = _inputs(prompts, seed=3)
    with torch.no_grad():
        together = model(**batch)
        for i, prompt in enumerate(prompts):
            alone = model(
                input_ids=torch.tensor([prompt]),
                pixel_values=batch["pixel_values"][i : i + 1],
                extra_pixel_values=batch["extra_pixel_values"][i : i + 1],
            )
            n = alone.logits.shape[1]
            assert relative_error(together.logits[i, :n], alone.logits[0]) < 1e-5
            assert (together.attention_mask[i, n:] == 0).all()
            classes = alone.class_queries_logits.shape[-1] - 1
            batched_cls = together.class_queries_logits[i]
            assert relative_error(batched_cls[:, :classes], alone.class_queries_logits[0, :, :classes]) < 1e-5
            assert relative_error(batched_cls[:, -1], alone.class_queries_logits[0, :, -1]) < 1e-5
            assert relative_error(together.masks_queries_logits[i], alone.masks_queries_logits[0]) < 1e-5
            assert together.condition_mask[i].sum().item() == classes + 1


def test_save_and_auto_load_give_identical_outputs(tmp_path):
    torch.manual_seed(0)
    model = build_tiny()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    saved = load_file(tmp_path / "model.safetensors")
    assert "class_head.logit_scale" in saved and not any("criterion" in k for k in saved)
    batch = _inputs([synthetic_prompt(2)])
    with torch.no_grad():
        expected = model(**batch)
        for auto in (AutoModel, AutoModelForImageTextToText):
            loaded = auto.from_pretrained(tmp_path, attn_implementation="eager").eval()
            assert type(loaded) is XSamForSegmentation
            out = loaded(**batch)
            assert torch.equal(out.logits, expected.logits)
            assert torch.equal(out.class_queries_logits, expected.class_queries_logits)
            assert torch.equal(out.masks_queries_logits, expected.masks_queries_logits)


def test_clear_errors_for_malformed_prompts():
    model = build_tiny()
    pixels, canvas = random_images(1)
    no_image = [t for t in synthetic_prompt(2) if t != -200]
    two_images = synthetic_prompt(2) + [-200]
    no_seg = [t for t in synthetic_prompt(2) if t != 375]
    with torch.no_grad():
        with pytest.raises(ValueError, match="0 <image> tokens"):
            model(input_ids=torch.tensor([no_image]), pixel_values=pixels, extra_pixel_values=canvas)
        with pytest.raises(ValueError, match="2 <image> tokens"):
            model(input_ids=torch.tensor([two_images]), pixel_values=pixels, extra_pixel_values=canvas)
        with pytest.raises(ValueError, match="no <SEG> token"):
            model(input_ids=torch.tensor([no_seg]), pixel_values=pixels, extra_pixel_values=canvas)
        with pytest.raises(ValueError, match="no image was given"):
            model(input_ids=torch.tensor([synthetic_prompt(1)]))
        with pytest.raises(ValueError, match="1 <region> tokens but 0 visual prompts"):
            model(input_ids=torch.tensor([synthetic_prompt(2, regions=1)]), pixel_values=pixels,
                  extra_pixel_values=canvas)
        masks = torch.zeros(2, 128, 128, dtype=torch.bool)
        masks[:, 10:20, 10:20] = True
        with pytest.raises(ValueError, match="1 <region> tokens but 2 visual prompts"):
            model(input_ids=torch.tensor([synthetic_prompt(2, regions=1)]), pixel_values=pixels,
                  extra_pixel_values=canvas, region_masks=[masks])
        with pytest.raises(ValueError, match="empty"):
            model(input_ids=torch.tensor([synthetic_prompt(2, regions=1)]), pixel_values=pixels,
                  extra_pixel_values=canvas, region_masks=[torch.zeros(1, 128, 128, dtype=torch.bool)])
        with pytest.raises(ValueError, match="2 <SEG> tokens and 3 conditions"):
            model(input_ids=torch.tensor([synthetic_prompt(3, num_seg=2)]), pixel_values=pixels,
                  extra_pixel_values=canvas)


def test_region_prompts_from_another_image():
    """A prompt borrowed from a prompt-only image equals the same prompt on that image as the main image."""
    torch.manual_seed(0)
    model = build_tiny()
    pixels, canvas = random_images(2, seed=5)
    mask = torch.zeros(1, 128, 128, dtype=torch.bool)
    mask[0, 30:60, 40:90] = True
    with torch.no_grad():
        own = model.get_image_features(pixels[:1], canvas[:1])
        other = model.get_image_features(pixels[1:], canvas[1:])
        cross = model._region_tokens(own, [mask], [torch.tensor([1])], region_pixel_values=canvas[1:])
        native = model._region_tokens(other, [mask], None, None)
        same = model._region_tokens(own, [mask], None, None)
    torch.testing.assert_close(cross[0], native[0])
    assert not torch.allclose(cross[0], same[0])
    with pytest.raises(ValueError, match=r"must lie in \[0, 2\)"):
        model._region_tokens(own, [mask], [torch.tensor([2])], region_pixel_values=canvas[1:])
    # borrowing another sample's image is a training-time packing; at inference samples stay independent
    both = model.get_image_features(pixels, canvas)
    with pytest.raises(ValueError, match="each sample is independent"):
        model._region_tokens(both, [mask, mask], [torch.tensor([1]), None], None)
    model.train()
    borrowed = model._region_tokens(both, [mask, mask], [torch.tensor([1]), None], None)
    assert borrowed[0].shape == (1, model.config.text_config.hidden_size)


def test_visual_prompts_change_the_region_token_and_run_end_to_end():
    torch.manual_seed(0)
    model = build_tiny()
    batch = _inputs([synthetic_prompt(2, regions=2)], seed=6)
    masks = torch.zeros(2, 128, 128, dtype=torch.bool)
    masks[0, 10:40, 10:40] = True
    masks[1, 70:120, 60:100] = True
    with torch.no_grad():
        out = model(**batch, region_masks=[masks])
        moved = masks.roll(shifts=30, dims=2)
        out_moved = model(**batch, region_masks=[moved])
    assert out.class_queries_logits.shape == (1, 8, 3)
    assert not torch.allclose(out.class_queries_logits, out_moved.class_queries_logits)


def test_cached_image_features_give_the_uncached_outputs():
    torch.manual_seed(0)
    model = build_tiny()
    batch = _inputs([synthetic_prompt(3)], seed=7)
    with torch.no_grad():
        direct = model(**batch)
        cache = model.get_image_features(batch["pixel_values"], batch["extra_pixel_values"])
        cached = model(input_ids=batch["input_ids"], image_features=cache)
    assert torch.equal(direct.logits, cached.logits)
    assert torch.equal(direct.masks_queries_logits, cached.masks_queries_logits)


def test_stage_forms_and_chaining(tmp_path):
    torch.manual_seed(0)
    s1 = XSamForSegmentation(XSamConfig.from_preset("tiny", stage="s1", num_closed_set_classes=5)).eval()
    assert not hasattr(s1, "language_model") and not hasattr(s1, "vision_tower")
    _, canvas = random_images(2)
    targets = [random_targets(2, 5, seed=1), random_targets(0, 5, seed=2)]
    out = s1(extra_pixel_values=canvas, mask_labels=[t[0] for t in targets], class_labels=[t[1] for t in targets])
    assert out.class_queries_logits.shape == (2, 8, 6) and out.loss is not None and out.lm_loss is None
    s1.save_pretrained(tmp_path / "s1")

    s2 = XSamForSegmentation(XSamConfig.from_preset("tiny", stage="s2")).eval()
    assert not hasattr(s2, "segmentation_decoder") and not hasattr(s2, "connector")
    report = s2.load_stage_weights(tmp_path / "s1", from_stage="s1")
    assert report.loaded and all(k.startswith("segmentation_encoder.") for k in report.loaded)
    assert any(k.startswith("connector.") for k in report.unused)
    torch.testing.assert_close(
        s2.segmentation_encoder.vision_encoder.pos_embed, s1.segmentation_encoder.vision_encoder.pos_embed
    )
    batch = _inputs([synthetic_prompt(2)], with_targets=True, class_counts=(2,))
    batch.pop("mask_labels"), batch.pop("class_labels")
    with torch.no_grad():
        s2_out = s2(**batch)
    assert s2_out.lm_loss is not None and s2_out.class_queries_logits is None
    torch.testing.assert_close(s2_out.loss, s2_out.lm_loss)
    s2.save_pretrained(tmp_path / "s2")

    s3 = build_tiny()
    init_decoder = s3.segmentation_decoder.transformer_module.queries_features.weight.clone()
    report_s1 = s3.load_stage_weights(tmp_path / "s1", from_stage="s1")
    report_s2 = s3.load_stage_weights(tmp_path / "s2", from_stage="s2")
    assert "closed_set_head.weight" in report_s1.unused
    assert "class_head.logit_scale" in report_s1.left_at_init
    assert {k.split(".")[0] for k in report_s2.loaded} == {"vision_projector", "seg_projector"}
    assert torch.equal(
        s3.segmentation_decoder.transformer_module.queries_features.weight,
        s1.segmentation_decoder.transformer_module.queries_features.weight,
    )
    assert not torch.equal(init_decoder, s3.segmentation_decoder.transformer_module.queries_features.weight)
    torch.testing.assert_close(s3.seg_projector.linear_1.weight, s2.seg_projector.linear_1.weight)
    bad = {"connector.levels.0.layers.0.weight": torch.zeros(3, 3, 1, 1)}
    with pytest.raises(ValueError, match="Shape mismatch"):
        s3.load_stage_weights(bad)


def test_sdpa_matches_eager():
    torch.manual_seed(0)
    eager = build_tiny(attn="eager")
    sdpa = build_tiny(state_dict=eager.state_dict(), attn="sdpa")
    batch = _inputs([synthetic_prompt(2), synthetic_prompt(4, seed=1)])
    with torch.no_grad():
        a, b = eager(**batch), sdpa(**batch)
    assert relative_error(b.logits, a.logits) < 1e-4
    assert relative_error(b.masks_queries_logits, a.masks_queries_logits) < 1e-4


def test_activation_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    reference = build_tiny(train_num_points=1024).train()
    checkpointed = build_tiny(state_dict=reference.state_dict(), train_num_points=1024).train()
    checkpointed.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    assert checkpointed.language_model.model.gradient_checkpointing
    batch = _inputs([synthetic_prompt(2)], with_targets=True, class_counts=(2,))
    for model in (reference, checkpointed):
        torch.manual_seed(11)
        model(**batch).loss.backward()
    for (name, a), (_, b) in zip(reference.named_parameters(), checkpointed.named_parameters()):
        if a.grad is not None:
            torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_bfloat16_forward_tracks_float32():
    torch.manual_seed(0)
    model = build_tiny()
    batch = _inputs([synthetic_prompt(2)])
    with torch.no_grad():
        full = model(**batch)
        half = model.to(torch.bfloat16)(**batch)
    assert half.logits.dtype == torch.bfloat16 and half.masks_queries_logits.dtype == torch.bfloat16
    assert torch.isfinite(half.masks_queries_logits.float()).all()
    assert relative_error(half.logits.float(), full.logits) < 0.05
