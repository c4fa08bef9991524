"""LoRA and QLoRA: where the adapters land, what trains, saving / reloading / merging, the 4-bit layout."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from xsam_hf import XSamForSegmentation
from xsam_hf.processing import XSamProcessor
from xsam_hf.training.collator import XSamDataCollator
from xsam_hf.training.peft_utils import (
    XSamLoraSettings,
    apply_lora,
    load_for_qlora,
    load_lora,
    lora_module_names,
)
from xsam_hf.quantization import quantized_module_names
from xsam_hf.training.train import build_train_dataset, run_training

from .conftest import tiny_model, tiny_recipe

NEW_TOKENS = [375, 376, 377]  # <SEG>, <p>, </p> in the tiny vocabulary
LORA_LAYERS = [f"language_model.model.layers.{layer}.{name}" for layer in (0, 1)
               for name in ("self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj")]


@pytest.fixture(scope="module")
def saved_base(tmp_path_factory):
    """A saved tiny S3 model and its processor: the "pretrained" model that LoRA fine-tunes."""
    folder = tmp_path_factory.mktemp("tiny_base")
    tiny_model().save_pretrained(folder)
    XSamProcessor.from_preset("tiny").save_pretrained(folder)
    return folder


def test_lora_sits_on_the_llm_projections_only_and_freezes_the_rest():
    model = apply_lora(tiny_model(), XSamLoraSettings(r=4, lora_alpha=8))
    assert lora_module_names(model) == sorted(f"base_model.model.{name}" for name in LORA_LAYERS)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert all(
        ".lora_" in name or "trainable_tokens_delta" in name or ".modules_to_save." in name for name in trainable
    )
    assert {n for n in trainable if "trainable_tokens_delta" in n} == {
        "base_model.model.language_model.model.embed_tokens.token_adapter.trainable_tokens_delta.default",
        "base_model.model.language_model.lm_head.token_adapter.trainable_tokens_delta.default",
    }
    saved_modules = {n.split(".modules_to_save.")[0].removeprefix("base_model.model.") for n in trainable
                     if ".modules_to_save." in n}
    assert saved_modules == {"vision_projector", "seg_projector", "llm_projector", "connector",
                             "segmentation_decoder", "background_embedding", "class_head"}
    assert not any(n.startswith(("base_model.model.vision_tower.", "base_model.model.segmentation_encoder."))
                   for n in trainable)
    delta = model.base_model.model.language_model.lm_head.token_adapter.trainable_tokens_delta["default"]
    assert delta.shape == (3, 64)  # three rows of the untied head, not the vocabulary


def test_lora_trains_only_the_new_token_rows_and_saves_reloads_merges(data_root, sources, saved_base, tmp_path):
    recipe = tiny_recipe("s3", data_root, tmp_path / "lora", [sources["genseg"]], max_steps=2)
    recipe["model"] = {"pretrained": str(saved_base), "decoder_overrides": {"train_num_points": 2048}}
    recipe["lora"] = {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0}
    summary = run_training(recipe)
    assert summary["global_step"] == 2 and summary["freezing"]["lora_modules"] == 8

    base = load_file(saved_base / "model.safetensors")
    merged = load_file(tmp_path / "lora" / "final" / "model.safetensors")
    others = [i for i in range(378) if i not in NEW_TOKENS]
    for key in ("language_model.model.embed_tokens.weight", "language_model.lm_head.weight"):
        assert torch.equal(merged[key][others], base[key][others]), key  # every other row is untouched
        assert all(not torch.equal(merged[key][i], base[key][i]) for i in NEW_TOKENS), key
    assert not torch.equal(merged[LORA_LAYERS[0] + ".weight"], base[LORA_LAYERS[0] + ".weight"])  # LoRA merged in
    for key in base:
        if key.startswith(("vision_tower.", "segmentation_encoder.", "language_model.model.norm")):
            assert torch.equal(merged[key], base[key]), key
    changed = [k for k in base if k.startswith("segmentation_decoder.") and not torch.equal(merged[k], base[k])]
    assert changed  # the decoder trained in full (modules_to_save)

    # The adapter folder is self-contained: LoRA weights, token rows and the fully trained modules.
    adapter = load_file(tmp_path / "lora" / "final" / "adapter" / "adapter_model.safetensors")
    assert any("trainable_tokens_delta" in k for k in adapter) and any("segmentation_decoder" in k for k in adapter)
    reloaded = load_lora(XSamForSegmentation.from_pretrained(saved_base), tmp_path / "lora" / "final" / "adapter")
    merged_model = XSamForSegmentation.from_pretrained(tmp_path / "lora" / "final")
    dataset = build_train_dataset(recipe)
    batch = XSamDataCollator(XSamProcessor.from_pretrained(saved_base), stage="s3")([dataset[0]])
    inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "pixel_values",
                                                      "extra_pixel_values")}
    with torch.no_grad():
        from_adapter, from_merged = reloaded.eval()(**inputs), merged_model.eval()(**inputs)
    assert torch.allclose(from_adapter.logits, from_merged.logits, atol=1e-4)
    assert torch.allclose(from_adapter.masks_queries_logits, from_merged.masks_queries_logits, atol=1e-4)


def test_qlora_keeps_everything_but_the_llm_layers_in_full_precision(data_root, sources, saved_base, tmp_path):
    model = load_for_qlora(saved_base, compute_dtype=torch.float32)
    linear_types = {name: type(module).__name__ for name, module in model.named_modules()
                    if isinstance(module, torch.nn.Linear)}
    quantized = sorted(name for name, kind in linear_types.items() if kind == "Linear4bit")
    assert quantized == sorted(LORA_LAYERS)
    assert linear_types["language_model.lm_head"] == "Linear"
    assert all(kind != "Linear4bit" for name, kind in linear_types.items() if not name.startswith(
        "language_model.model.layers."))
    assert all(p.dtype == torch.float32 for name, p in model.named_parameters()
               if not name.startswith("language_model.model.layers.") or "norm" in name)
    assert quantized_module_names(model) == quantized

    # The recipe path: the LLM reloaded in 4-bit, LoRA on top, a training step, the adapter merged into the
    # full-precision base.
    recipe = tiny_recipe("s3", data_root, tmp_path / "qlora", [sources["genseg"]], max_steps=1)
    recipe["model"] = {"pretrained": str(saved_base), "decoder_overrides": {"train_num_points": 2048}}
    recipe["lora"] = {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0}
    recipe["quantization"] = {"load_in_4bit": True, "compute_dtype": "float32"}
    summary = run_training(recipe)
    assert summary["global_step"] == 1 and summary["freezing"]["lora_modules"] == 8
    assert summary["log_history"][0]["seg_loss"] > 0
    merged = XSamForSegmentation.from_pretrained(tmp_path / "qlora" / "final")
    assert all(type(m).__name__ != "Linear4bit" for m in merged.modules())
    base = load_file(saved_base / "model.safetensors")
    assert not torch.equal(merged.state_dict()[LORA_LAYERS[0] + ".weight"], base[LORA_LAYERS[0] + ".weight"])
