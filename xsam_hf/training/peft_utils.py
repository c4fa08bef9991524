"""LoRA and QLoRA for X-SAM with peft (and bitsandbytes for the 4-bit LLM).

LoRA goes on the LLM's four projections of every decoder layer (Phi-3's fused `qkv_proj`, `o_proj`, `gate_up_proj`,
`down_proj`), and nowhere else: the pattern is a regular expression that peft full-matches against module names,
anchored under `language_model`, so the vision tower's or the decoder's linear layers never get adapters.

Besides the adapters, the following train:

* the rows of the added tokens (`<SEG>`, `<p>`, `</p>`) in the input embeddings AND in the untied `lm_head`, through
  peft's `trainable_token_indices` (peft 0.21 wraps an `nn.Linear` head with the same token adapter as an
  embedding, so no gradient hook is needed); every other vocabulary row stays frozen;
* the projectors, connector, Mask2Former decoder, background embedding and class head, as `modules_to_save` (full
  trainable copies that `save_pretrained` writes into the adapter file, so a saved adapter is self-contained).

QLoRA loads the LLM's decoder layers in 4-bit NF4 and keeps everything else in full precision, with the skip list of
`xsam_hf.quantization` (full-name patterns: transformers 5.23 silently ignores short names in
`llm_int8_skip_modules`). The LM head stays in full precision, so its new-token rows can train.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

LORA_TARGET_MODULES = (
    r"(.*\.)?language_model\.model\.layers\.\d+\.(self_attn\.(qkv_proj|o_proj)|mlp\.(gate_up_proj|down_proj))"
)
"""LoRA targets: the LLM decoder layers' attention and MLP projections (Phi-3 names; peft full-matches the regex)."""

DEFAULT_MODULES_TO_SAVE: tuple[str, ...] = (
    "vision_projector",
    "seg_projector",
    "llm_projector",
    "connector",
    "segmentation_decoder",
    "background_embedding",
    "class_head",
)
INPUT_EMBEDDINGS = "language_model.model.embed_tokens"
OUTPUT_EMBEDDINGS = "language_model.lm_head"


@dataclass
class XSamLoraSettings:
    """LoRA settings of an X-SAM fine-tune (defaults: the official LoRA recipes' r=128, alpha=256, dropout=0.05).

    Attributes:
        target_modules: regex full-matched against module names (see `LORA_TARGET_MODULES`).
        modules_to_save: modules trained in full and saved with the adapter (only those the model has are used).
        new_token_ids: vocabulary rows to train in the input and output embeddings; default: the config's
            `<SEG>`, `<p>`, `</p>` ids.
        train_output_token_rows: also train those rows of the (untied) `lm_head`.
    """

    r: int = 128
    lora_alpha: int = 256
    lora_dropout: float = 0.05
    target_modules: str = LORA_TARGET_MODULES
    modules_to_save: Sequence[str] = field(default_factory=lambda: list(DEFAULT_MODULES_TO_SAVE))
    new_token_ids: Sequence[int] | None = None
    train_output_token_rows: bool = True


def new_token_ids_of(config) -> list[int]:
    """The vocabulary ids of the tokens X-SAM adds: `<SEG>`, `<p>`, `</p>`."""
    return [config.seg_token_id, config.phrase_start_token_id, config.phrase_end_token_id]


def lora_config_for(model: nn.Module, settings: XSamLoraSettings | None = None):
    """The `peft.LoraConfig` for `model` (an `XSamForSegmentation` with a language model)."""
    from peft import LoraConfig

    settings = settings or XSamLoraSettings()
    if not hasattr(model, "language_model"):
        raise ValueError("LoRA targets the language model; this X-SAM form (S1) has none.")
    token_ids = list(settings.new_token_ids) if settings.new_token_ids is not None else new_token_ids_of(model.config)
    token_rows = {INPUT_EMBEDDINGS: token_ids}
    if settings.train_output_token_rows:
        if model.config.tie_word_embeddings or getattr(model.config.text_config, "tie_word_embeddings", False):
            raise ValueError("The output rows follow the input rows when embeddings are tied; set "
                             "train_output_token_rows=False for a tied language model.")
        token_rows[OUTPUT_EMBEDDINGS] = token_ids
    present = {name for name, _ in model.named_children()}
    return LoraConfig(
        r=settings.r,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules=settings.target_modules,
        modules_to_save=[m for m in settings.modules_to_save if m in present],
        trainable_token_indices=token_rows,
    )


def apply_lora(model: nn.Module, settings: XSamLoraSettings | None = None):
    """Wrap `model` in a `peft.PeftModel` with the X-SAM LoRA layout; everything else is frozen by peft."""
    from peft import get_peft_model

    return get_peft_model(model, lora_config_for(model, settings))


def load_lora(model: nn.Module, adapter_dir: str | os.PathLike, is_trainable: bool = False):
    """Reload a saved adapter (LoRA weights, token rows and `modules_to_save`) onto a freshly built base model."""
    from peft import PeftModel

    return PeftModel.from_pretrained(model, os.fspath(adapter_dir), is_trainable=is_trainable)


def merge_lora(peft_model) -> nn.Module:
    """Fold the adapters and token rows into the base weights; returns a plain `XSamForSegmentation`."""
    return peft_model.merge_and_unload()


def lora_module_names(model: nn.Module) -> list[str]:
    """Full names of the modules that carry LoRA adapters."""
    return sorted(name for name, module in model.named_modules() if hasattr(module, "lora_A") and len(module.lora_A))


# ----------------------------------------------------------------------------------------------------------------
# QLoRA: the 4-bit layout (which modules are quantized) is decided in one place, `xsam_hf.quantization`.
def quantization_config_for(model_or_config, compute_dtype: torch.dtype = torch.bfloat16, quant_type: str = "nf4"):
    """A 4-bit `BitsAndBytesConfig` that quantizes only the LLM's decoder layers (double-quantized NF4 default)."""
    from ..quantization import llm_only_bnb_config

    return llm_only_bnb_config(model_or_config, 4, quant_type=quant_type, double_quant=True,
                               compute_dtype=compute_dtype)


def load_for_qlora(
    pretrained: str | os.PathLike,
    compute_dtype: torch.dtype = torch.bfloat16,
    activation_checkpointing: bool = False,
    device_map: str | dict | None = None,
    **from_pretrained_kwargs,
):
    """Load a saved X-SAM with its LLM in 4-bit and prepare it for k-bit training (inputs require grad; peft casts
    half-precision non-quantized parameters to float32)."""
    from peft import prepare_model_for_kbit_training

    from ..modeling.configuration_xsam import XSamConfig
    from ..modeling.modeling_xsam import XSamForSegmentation

    config = XSamConfig.from_pretrained(pretrained)
    if device_map is None:
        device_map = {"": torch.cuda.current_device()} if torch.cuda.is_available() else "cpu"
    model = XSamForSegmentation.from_pretrained(
        pretrained,
        quantization_config=quantization_config_for(config, compute_dtype),
        device_map=device_map,
        **from_pretrained_kwargs,
    )
    return prepare_model_for_kbit_training(
        model,
        use_gradient_checkpointing=activation_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if activation_checkpointing else None,
    )


__all__ = [
    "DEFAULT_MODULES_TO_SAVE",
    "LORA_TARGET_MODULES",
    "XSamLoraSettings",
    "apply_lora",
    "load_for_qlora",
    "load_lora",
    "lora_config_for",
    "lora_module_names",
    "merge_lora",
    "new_token_ids_of",
    "quantization_config_for",
]
