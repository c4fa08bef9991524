"""Quantized inference: the LLM in 4-bit (NF4/FP4) or 8-bit (LLM.int8) through bitsandbytes, everything else exact.

Only the language model's decoder layers are quantized. The SigLIP and SAM encoders, the projectors, the connector,
the Mask2Former decoder, the background embedding, the class head and the LLM's `lm_head` keep the checkpoint's
precision: they are about 1.0B of the released model's 4.6B parameters (SigLIP 0.43B, SAM 0.31B, the LLM's embedding
and head 0.2B; the 32 decoder layers hold the other 3.6B), and the segmentation path (SAM features -> connector ->
decoder) is where rounding would show up directly in the masks. So the image features of a quantized model are
bit-identical to the full-precision model's.

transformers 5.23 matches `llm_int8_skip_modules` against FULL module names (as a prefix up to a module boundary, a
regular expression, or a suffix); a short name that is none of those is silently ignored and the module gets
quantized. The skip list is therefore built as anchored regular expressions of the model's own top-level module
names (`vision_tower(?:\\..*)?$`, ...) plus `language_model\\.lm_head$`, and `quantized_module_names` lets a caller
check the result by full name.

Example:
    ```python
    >>> from xsam_hf.quantization import load_quantized
    >>> model = load_quantized("xsam-hf/X-SAM-Phi3-mini", bits=4)     # NF4 LLM, bf16 compute on GPU
    ```
"""

from __future__ import annotations

import os
import re
from typing import Any, Literal

import torch
from torch import nn

LANGUAGE_MODEL = "language_model"
LM_HEAD = "language_model.lm_head"


def _top_level_modules(model_or_config: Any) -> list[str]:
    if isinstance(model_or_config, nn.Module):
        model = model_or_config
    else:
        from .modeling.modeling_xsam import XSamForSegmentation

        with torch.device("meta"):  # names only: no memory, no initialisation
            model = XSamForSegmentation(model_or_config)
    return [name for name, _ in model.named_children()]


def llm_only_skip_modules(model_or_config: Any) -> list[str]:
    """`llm_int8_skip_modules` that keep everything but the LLM's decoder layers in full precision.

    Args:
        model_or_config: an `XSamForSegmentation` or an `XSamConfig` (its stage decides which modules exist).

    Returns:
        Anchored full-name regular expressions: one per top-level module other than the language model, and the
        LLM's output head.
    """
    names = _top_level_modules(model_or_config)
    if LANGUAGE_MODEL not in names:
        raise ValueError("This X-SAM form has no language model (stage 's1'): there is nothing to quantize.")
    patterns = [rf"{re.escape(name)}(?:\..*)?$" for name in names if name != LANGUAGE_MODEL]
    return patterns + [rf"{re.escape(LM_HEAD)}$"]


def default_compute_dtype() -> torch.dtype:
    """bfloat16 on a GPU (what the 4-bit kernels are fast at); float32 on CPU, the closest to the full model."""
    return torch.bfloat16 if torch.cuda.is_available() else torch.float32


def llm_only_bnb_config(
    model_or_config: Any,
    bits: Literal[4, 8] = 4,
    *,
    quant_type: Literal["nf4", "fp4"] = "nf4",
    double_quant: bool = True,
    compute_dtype: torch.dtype | None = None,
    llm_int8_threshold: float = 6.0,
):
    """A `BitsAndBytesConfig` that quantizes the LLM's decoder layers only.

    Args:
        model_or_config: the model or config to be loaded (for its module names).
        bits: 4 (`load_in_4bit`, `quant_type` NF4 or FP4, optional double quantization of the block scales) or 8
            (`load_in_8bit`, LLM.int8 with outlier threshold `llm_int8_threshold`).
        compute_dtype: dtype of the 4-bit matmuls (default `default_compute_dtype()`).
    """
    from transformers import BitsAndBytesConfig

    skip = llm_only_skip_modules(model_or_config)
    if bits == 4:
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=quant_type,
            bnb_4bit_use_double_quant=double_quant,
            bnb_4bit_compute_dtype=compute_dtype or default_compute_dtype(),
            llm_int8_skip_modules=skip,
        )
    if bits == 8:
        return BitsAndBytesConfig(
            load_in_8bit=True, llm_int8_threshold=llm_int8_threshold, llm_int8_skip_modules=skip
        )
    raise ValueError(f"bits must be 4 or 8, got {bits!r}.")


def load_quantized(
    pretrained: str | os.PathLike,
    bits: Literal[4, 8] = 4,
    *,
    quant_type: Literal["nf4", "fp4"] = "nf4",
    double_quant: bool = True,
    compute_dtype: torch.dtype | None = None,
    device_map: str | dict | None = None,
    **from_pretrained_kwargs: Any,
):
    """Load a saved X-SAM (folder or Hub id) with its LLM quantized by bitsandbytes, ready for inference.

    Args:
        pretrained: what `AutoModel.from_pretrained` accepts.
        bits, quant_type, double_quant, compute_dtype: see `llm_only_bnb_config`.
        device_map: default: the current GPU if there is one, else "cpu" (bitsandbytes runs on CPU; 0.50 checked).
        from_pretrained_kwargs: e.g. `dtype` for the non-quantized parts (default: the checkpoint's),
            `attn_implementation`, `revision`.

    Returns:
        The `XSamForSegmentation` in eval mode.
    """
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(
        pretrained, **{k: v for k, v in from_pretrained_kwargs.items() if k in ("revision", "token", "cache_dir")}
    )
    if device_map is None:
        device_map = {"": torch.cuda.current_device()} if torch.cuda.is_available() else "cpu"
    quantization_config = llm_only_bnb_config(
        config, bits, quant_type=quant_type, double_quant=double_quant, compute_dtype=compute_dtype
    )
    model = AutoModel.from_pretrained(
        pretrained, quantization_config=quantization_config, device_map=device_map, **from_pretrained_kwargs
    )
    return model.eval()


def quantized_module_names(model: nn.Module) -> list[str]:
    """Full names of the bitsandbytes layers (`Linear4bit`, `Linear8bitLt`) in `model`."""
    return sorted(
        name for name, module in model.named_modules() if type(module).__name__ in ("Linear4bit", "Linear8bitLt")
    )


__all__ = [
    "default_compute_dtype",
    "llm_only_bnb_config",
    "llm_only_skip_modules",
    "load_quantized",
    "quantized_module_names",
]
