"""Quantized inference: only the LLM's decoder layers go to 4-bit / 8-bit (checked by full module name), the image
features stay bit-identical, and the outputs stay within bounds justified by the weight rounding.

Tolerances (tiny preset, seeded random weights, golden prompt; measured values in brackets):
* Image features (SigLIP tokens, SAM tokens, connector pyramid): bit-identical, nothing on that path is quantized.
* 4-bit NF4: each quantized weight matrix is off by ~9% relative (Frobenius) [0.090-0.093], the expected NF4 error
  for Gaussian weights with 64-element blocks. The quantized model is exactly the fp32 model with those dequantized
  weights, up to the CPU kernel's bfloat16 activations (2^-8 rounding per matmul): <= 2% relative [0.4%]. Against
  the fp32 model, two LLM layers of ~9% weight noise move the logits by <= 25% of their largest magnitude [11%];
  the masks only see the LLM through the `<SEG>` embedding added to the decoder queries, so their logits move by
  <= 1% [0.12%] and >= 99.9% of the mask pixels keep their sign [100%].
* 8-bit LLM.int8: per-row int8 weights and activations (fp16 inputs): logits <= 5% [1.1%], masks <= 0.5% [0.013%].
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from transformers import AutoModel, BitsAndBytesConfig
from transformers.quantizers.quantizers_utils import should_convert_module

from xsam_hf import XSamConfig, XSamForSegmentation
from xsam_hf.quantization import llm_only_bnb_config, llm_only_skip_modules, load_quantized, quantized_module_names

bnb = pytest.importorskip("bitsandbytes")

GOLDEN = Path(__file__).resolve().parent / "fixtures" / "golden_genseg"

NON_LLM = ("vision_tower", "segmentation_encoder", "vision_projector", "seg_projector", "llm_projector", "connector",
           "segmentation_decoder", "background_embedding", "class_head")


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual.double() - expected.double()).abs().max() / expected.double().abs().max()).item()


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    XSamForSegmentation(XSamConfig.from_preset("tiny")).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def inputs():
    data = torch.load(GOLDEN / "genseg_io.pt", weights_only=True)["genseg"]["inputs"]["data_dict"]
    return {k: data[k] for k in ("input_ids", "pixel_values", "extra_pixel_values")}


@pytest.fixture(scope="module")
def reference(tiny_folder, inputs):
    model = AutoModel.from_pretrained(tiny_folder).eval()
    with torch.no_grad():
        return model, model(**inputs), model.get_image_features(inputs["pixel_values"], inputs["extra_pixel_values"])


def assert_llm_only(model, kind: str) -> None:
    names = quantized_module_names(model)
    assert len(names) == 8  # qkv, o, gate_up, down in each of the 2 layers
    assert all(n.startswith("language_model.model.layers.") for n in names), names
    assert {type(model.get_submodule(n)).__name__ for n in names} == {kind}
    assert type(model.language_model.lm_head).__name__ == "Linear"
    for name, module in model.named_modules():
        if name.startswith(NON_LLM):
            assert type(module).__name__ not in ("Linear4bit", "Linear8bitLt"), name


def assert_same_image_features(model, reference_features, inputs) -> None:
    with torch.no_grad():
        features = model.get_image_features(inputs["pixel_values"], inputs["extra_pixel_values"])
    assert torch.equal(features.vision_tokens, reference_features.vision_tokens)
    assert torch.equal(features.segmentation_tokens, reference_features.segmentation_tokens)
    assert all(torch.equal(a, b) for a, b in zip(features.feature_pyramid, reference_features.feature_pyramid))


def test_skip_list_is_full_name_regexes_that_transformers_matches():
    """Checked with transformers' own matcher on every module name, for the tiny and the released sizes."""
    for config in (XSamConfig.from_preset("tiny"), XSamConfig.from_preset("x-sam-phi3-mini")):
        patterns = llm_only_skip_modules(config)
        assert patterns[-1] == r"language_model\.lm_head$" and len(patterns) == len(NON_LLM) + 1
        with torch.device("meta"):
            model = XSamForSegmentation(config)
        for name, module in model.named_modules():
            if not isinstance(module, torch.nn.Linear):
                continue
            converted = should_convert_module(name, patterns)
            assert converted == bool(re.fullmatch(r"language_model\.model\.layers\.\d+\..+", name)), name
    with pytest.raises(ValueError, match="no language model"):
        llm_only_skip_modules(XSamConfig.from_preset("tiny", stage="s1"))
    config = llm_only_bnb_config(XSamConfig.from_preset("tiny"), bits=8)
    assert config.load_in_8bit and config.llm_int8_skip_modules == llm_only_skip_modules(XSamConfig.from_preset("tiny"))


def test_4bit_quantizes_the_llm_only_and_stays_within_bounds(tiny_folder, inputs, reference):
    fp32_model, fp32_out, fp32_features = reference
    model = load_quantized(tiny_folder, bits=4)
    assert model.config.quantization_config.bnb_4bit_quant_type == "nf4"
    assert_llm_only(model, "Linear4bit")

    # An fp32 model holding the dequantized 4-bit weights (read before any forward: the CPU kernel repacks the
    # weights for itself on first use).
    dequantized = AutoModel.from_pretrained(tiny_folder).eval()
    for name in quantized_module_names(model):
        weight = model.get_submodule(name).weight
        rounded = bnb.functional.dequantize_4bit(weight.data, weight.quant_state).float()
        original = dequantized.get_submodule(name).weight
        assert 0.05 < ((rounded - original).norm() / original.norm()).item() < 0.12, name
        with torch.no_grad():
            original.copy_(rounded)

    assert_same_image_features(model, fp32_features, inputs)
    with torch.no_grad():
        out = model(**inputs)
        same_weights = dequantized(**inputs)
    assert relative_error(out.logits, fp32_out.logits) < 0.25
    assert relative_error(out.class_queries_logits, fp32_out.class_queries_logits) < 0.25
    assert relative_error(out.masks_queries_logits, fp32_out.masks_queries_logits) < 0.01
    agreement = ((out.masks_queries_logits > 0) == (fp32_out.masks_queries_logits > 0)).float().mean()
    assert agreement >= 0.999
    assert torch.equal(out.class_queries_logits.argmax(-1), fp32_out.class_queries_logits.argmax(-1))
    # The whole difference is the weight rounding: fp32 with the dequantized weights gives the same outputs.
    assert relative_error(out.logits, same_weights.logits) < 0.02
    assert relative_error(out.masks_queries_logits, same_weights.masks_queries_logits) < 1e-3


def test_8bit_quantizes_the_llm_only_and_stays_within_bounds(tiny_folder, inputs, reference):
    fp32_model, fp32_out, fp32_features = reference
    model = load_quantized(tiny_folder, bits=8)
    assert model.config.quantization_config.load_in_8bit
    assert_llm_only(model, "Linear8bitLt")
    assert_same_image_features(model, fp32_features, inputs)
    with torch.no_grad():
        out = model(**inputs)
    assert relative_error(out.logits, fp32_out.logits) < 0.05
    assert relative_error(out.masks_queries_logits, fp32_out.masks_queries_logits) < 0.005
    assert ((out.masks_queries_logits > 0) == (fp32_out.masks_queries_logits > 0)).float().mean() >= 0.999


def test_the_module_name_check_catches_a_wrong_skip_list(tiny_folder):
    """Control: a skip list that only names the head lets bitsandbytes quantize the encoders too, which
    `quantized_module_names` shows by full name."""
    config = BitsAndBytesConfig(load_in_4bit=True, llm_int8_skip_modules=[r"language_model\.lm_head$"])
    model = AutoModel.from_pretrained(tiny_folder, quantization_config=config, device_map="cpu")
    names = quantized_module_names(model)
    assert "vision_tower.encoder.layers.0.mlp.fc1" in names
    assert "segmentation_encoder.vision_encoder.layers.0.attn.qkv" in names
