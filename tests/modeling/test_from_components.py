"""`XSamForSegmentation.from_components`: the released model's construction from pretrained SigLIP, SAM and LLM
checkpoints, on tiny checkpoints saved by the test (the golden stand-in tokenizer: 375 tokens before the three
X-SAM tokens, an LLM padded to 384 rows that shrinks to 378, as Phi-3's 32064 -> 32014)."""

import math

import pytest
import torch
from transformers import (
    AutoTokenizer,
    Phi3Config,
    Phi3ForCausalLM,
    SamConfig,
    SamModel,
    SiglipConfig,
    SiglipModel,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from xsam_hf import XSamForSegmentation
from xsam_hf.presets import get_preset

from .conftest import GOLDEN, pad_batch, random_images, synthetic_prompt

TINY = get_preset("tiny")["config"]


def _without_type(config: dict) -> dict:
    return {k: v for k, v in config.items() if k != "model_type"}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Tiny SigLIP (vision-only and full), SAM and Phi-3 checkpoints with the base tokenizer, saved to disk."""
    root = tmp_path_factory.mktemp("components")
    torch.manual_seed(0)
    vision = SiglipVisionModel(SiglipVisionConfig(**_without_type(TINY["vision_config"])))
    vision.save_pretrained(root / "siglip")
    full_siglip = SiglipModel(
        SiglipConfig(
            vision_config=_without_type(TINY["vision_config"]),
            text_config=dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                             num_attention_heads=2, bos_token_id=1, eos_token_id=2, pad_token_id=0),
        )
    )
    full_siglip.save_pretrained(root / "siglip_full")
    sam = SamModel(SamConfig(vision_config=_without_type(TINY["segmentation_encoder_config"])))
    sam.save_pretrained(root / "sam")
    llm = Phi3ForCausalLM(Phi3Config(**{**_without_type(TINY["text_config"]), "vocab_size": 384}))
    llm.save_pretrained(root / "llm")
    AutoTokenizer.from_pretrained(GOLDEN / "tokenizer_base").save_pretrained(root / "llm")
    return {"root": root, "vision": vision, "full_siglip": full_siglip, "sam": sam, "llm": llm}


def _same_tensors(actual: dict, expected: dict, prefix: str = ""):
    missing = [k for k in expected if prefix + k not in actual]
    assert not missing, missing[:5]
    for key, tensor in expected.items():
        assert torch.equal(actual[prefix + key], tensor), key


def _build(checkpoints, vision="siglip"):
    root = checkpoints["root"]
    return XSamForSegmentation.from_components(
        root / vision, root / "sam", root / "llm",
        decoder_config=TINY["decoder_config"], connector_hidden_size=TINY["connector_hidden_size"],
        attn_implementation="eager", return_tokenizer=True,
    )


def test_components_arrive_unchanged_and_new_parts_are_initialised(checkpoints):
    model, tokenizer = _build(checkpoints)
    state = model.state_dict()

    # Tokens and vocabulary (architecture spec §2.1): ids after the base tokenizer's 375, embeddings SHRUNK to 378.
    assert tokenizer.convert_tokens_to_ids(["<SEG>", "<p>", "</p>"]) == [375, 376, 377] and len(tokenizer) == 378
    config = model.config
    assert (config.seg_token_id, config.phrase_start_token_id, config.phrase_end_token_id) == (375, 376, 377)
    assert model.language_model.get_input_embeddings().weight.shape == (378, 64)
    assert model.language_model.get_output_embeddings().weight.shape == (378, 64)
    assert model.config.text_config.vocab_size == 378

    # Pretrained weights, tensor for tensor (the embedding / head rows that survive the shrink included).
    _same_tensors(state, checkpoints["vision"].state_dict(), "vision_tower.")
    _same_tensors(state, checkpoints["sam"].vision_encoder.state_dict(), "segmentation_encoder.vision_encoder.")
    original_llm = checkpoints["llm"].state_dict()
    resized = {"model.embed_tokens.weight", "lm_head.weight"}
    _same_tensors(state, {k: v for k, v in original_llm.items() if k not in resized}, "language_model.")
    for key in resized:
        assert torch.equal(state[f"language_model.{key}"], original_llm[key][:378])

    # Config follows the components; the connector reads the SAM blocks after its last three global-attention blocks.
    assert model.config.connector_feature_layers == [4, 6, 8] == TINY["connector_feature_layers"]
    assert model.config.vision_config.hidden_size == 48 and model.config.segmentation_encoder_config.hidden_size == 32

    # New parts: materialised, finite, initialised (not left at zero), the logit scale at ln(1 / 0.07).
    assert model.class_head.logit_scale.item() == pytest.approx(math.log(1 / 0.07), abs=1e-6)
    for prefix in ("vision_projector.", "seg_projector.", "llm_projector.", "connector.", "segmentation_decoder.",
                   "background_embedding."):
        tensors = {k: v for k, v in state.items() if k.startswith(prefix)}
        assert tensors and all(torch.isfinite(v).all() for v in tensors.values()), prefix
    for name in ("vision_projector.linear_1.weight", "llm_projector.linear_2.weight", "background_embedding.weight"):
        assert 0.01 < state[name].std().item() < 0.03, name  # normal(0, 0.02), the text config's initializer_range
    assert state["segmentation_decoder.transformer_module.queries_features.weight"].std() > 0
    assert not model.training

    # The assembled model runs: one <SEG> with two phrases -> one instance with 2 classes + background.
    input_ids, attention_mask = pad_batch([synthetic_prompt(2, num_seg=1, seed=4)])
    pixel_values, extra_pixel_values = random_images(1, seed=4)
    with torch.no_grad():
        out = model(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values,
                    extra_pixel_values=extra_pixel_values)
    assert out.masks_queries_logits.shape == (1, 8, 16, 16) and torch.isfinite(out.masks_queries_logits).all()
    assert out.class_queries_logits.shape == (1, 8, 3) and out.logits.shape[-1] == 378


def test_vision_half_of_a_full_siglip_checkpoint_and_save_load(checkpoints, tmp_path):
    model, _ = _build(checkpoints, vision="siglip_full")
    _same_tensors(model.state_dict(), checkpoints["full_siglip"].vision_model.state_dict(), "vision_tower.")

    # The assembled model saves and reloads like any other (no meta tensor, no missing key).
    model.save_pretrained(tmp_path)
    reloaded = XSamForSegmentation.from_pretrained(tmp_path, attn_implementation="eager").eval()
    input_ids, attention_mask = pad_batch([synthetic_prompt(1, num_seg=1, seed=6)])
    pixel_values, extra_pixel_values = random_images(1, seed=6)
    inputs = dict(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values,
                  extra_pixel_values=extra_pixel_values)
    with torch.no_grad():
        expected, actual = model(**inputs), reloaded(**inputs)
    torch.testing.assert_close(actual.masks_queries_logits, expected.masks_queries_logits, rtol=0, atol=1e-6)
    torch.testing.assert_close(actual.logits, expected.logits, rtol=0, atol=1e-6)


def test_loaded_models_and_errors(checkpoints):
    tokenizer = AutoTokenizer.from_pretrained(checkpoints["root"] / "llm")
    llm = Phi3ForCausalLM.from_pretrained(checkpoints["root"] / "llm")
    model = XSamForSegmentation.from_components(
        checkpoints["full_siglip"], checkpoints["sam"], llm, tokenizer,
        decoder_config=TINY["decoder_config"], connector_hidden_size=16,
    )
    # Objects are used as they are (the SAM encoder module itself), the tokenizer gains the tokens in place.
    assert model.segmentation_encoder.vision_encoder is checkpoints["sam"].vision_encoder
    assert model.language_model is llm and tokenizer.convert_tokens_to_ids("</p>") == 377
    with pytest.raises(ValueError, match="tokenizer"):
        XSamForSegmentation.from_components(checkpoints["vision"], checkpoints["sam"], llm)
    with pytest.raises(TypeError, match="vision_model"):
        XSamForSegmentation.from_components(llm, checkpoints["sam"], llm, tokenizer)
    with pytest.raises(ValueError, match="s3"):
        XSamForSegmentation.from_components(checkpoints["vision"], checkpoints["sam"], llm, tokenizer, stage="s1")
