"""Building X-SAM from separately pretrained SigLIP, SAM and causal-LM checkpoints (the released model's recipe).

The official code (architecture spec §1.1, §2.1) starts from `google/siglip2-so400m-patch14-384` (a fixed-resolution
SigLIP), the image encoder of `facebook/sam-vit-large` and `microsoft/Phi-3-mini-4k-instruct`; it adds `<SEG>`,
`<p>`, `</p>` to the tokenizer as special tokens, in that order, and resizes the LLM's embeddings to the new
tokenizer length, which SHRINKS Phi-3's padded 32064 rows to 32014. Everything else (the three projectors, the
connector, the Mask2Former decoder, the background embedding and the class head's logit scale) is new and
initialised here exactly as a freshly constructed `XSamForSegmentation` initialises it.

The components are loaded first and moved into a model skeleton built on the meta device, so the pretrained weights
are neither copied nor randomly initialised first (a released-size build costs one load of each checkpoint).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    SamModel,
    SamVisionModel,
    SiglipModel,
    SiglipVisionModel,
)

# Added in this order so the released ids come out as <SEG>=32011, <p>=32012, </p>=32013 (spec §2.1).
SPECIAL_TOKENS = ("<SEG>", "<p>", "</p>")
# The pretrained parts of XSamForSegmentation; every other child module is new.
PRETRAINED_PARTS = ("vision_tower", "segmentation_encoder", "language_model")

ModelSource = str | os.PathLike | nn.Module


def load_vision_model(source: ModelSource, **load_kwargs: Any) -> SiglipVisionModel:
    """A `SiglipVisionModel` from a SigLIP vision checkpoint, the vision half of a full SigLIP checkpoint (both load
    with `SiglipVisionModel.from_pretrained`), or a loaded `SiglipVisionModel` / `SiglipModel`."""
    if isinstance(source, SiglipVisionModel):
        return source
    if isinstance(source, SiglipModel):
        vision = SiglipVisionModel(source.config.vision_config).to(source.dtype)
        vision.load_state_dict(source.vision_model.state_dict())
        return vision.to(source.device)
    if isinstance(source, nn.Module):
        raise TypeError(f"vision_model must be a SigLIP (vision) model or checkpoint, got {type(source).__name__}.")
    return SiglipVisionModel.from_pretrained(source, **load_kwargs)


def load_segmentation_model(source: ModelSource, **load_kwargs: Any) -> SamVisionModel:
    """SAM's image encoder as a `SamVisionModel`, from a `SamModel` checkpoint (its prompt encoder and mask decoder
    are not used by X-SAM and are skipped) or a loaded `SamModel` / `SamVisionModel`."""
    if isinstance(source, SamVisionModel):
        return source
    if isinstance(source, SamModel):
        encoder = SamVisionModel(source.config.vision_config)
        encoder.vision_encoder = source.vision_encoder
        return encoder
    if isinstance(source, nn.Module):
        raise TypeError(f"segmentation_model must be a SAM model or checkpoint, got {type(source).__name__}.")
    return SamVisionModel.from_pretrained(source, **load_kwargs)


def load_language_model(source: ModelSource, **load_kwargs: Any) -> PreTrainedModel:
    """Any causal LM (`AutoModelForCausalLM`), from a checkpoint or already loaded."""
    if isinstance(source, nn.Module):
        if not hasattr(source, "get_input_embeddings") or not hasattr(source, "resize_token_embeddings"):
            raise TypeError(f"language_model must be a transformers causal LM, got {type(source).__name__}.")
        return source
    return AutoModelForCausalLM.from_pretrained(source, **load_kwargs)


def add_special_tokens(tokenizer: PreTrainedTokenizerBase) -> dict[str, int]:
    """Add `<SEG>`, `<p>`, `</p>` (those missing, as special tokens, in that order) and return their ids."""
    missing = [token for token in SPECIAL_TOKENS if token not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_tokens(missing, special_tokens=True)
    return {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}


def connector_layers_for(segmentation_config) -> list[int]:
    """The SAM hidden states the connector reads: the outputs of the last three global-attention blocks (hidden
    state i is the output of block i - 1), i.e. 12, 18, 24 for ViT-L's global blocks 5, 11, 17, 23."""
    return [index + 1 for index in list(segmentation_config.global_attn_indexes)[-3:]]


def build_from_components(
    model_class: type,
    vision_model: ModelSource,
    segmentation_model: ModelSource,
    language_model: ModelSource,
    tokenizer: PreTrainedTokenizerBase | str | os.PathLike | None = None,
    *,
    dtype: torch.dtype | str | None = None,
    attn_implementation: str | None = None,
    load_kwargs: dict[str, Any] | None = None,
    return_tokenizer: bool = False,
    **config_overrides: Any,
):
    """Assemble an `XSamForSegmentation` (stage "s3") from pretrained parts; the X-SAM-specific parts start fresh.

    Args:
        model_class: the class to build (`XSamForSegmentation`, or a subclass).
        vision_model: SigLIP checkpoint (directory or Hub id; a full `SiglipModel` checkpoint works too) or model.
        segmentation_model: SAM checkpoint (a `SamModel`'s; only its image encoder is kept) or model.
        language_model: causal-LM checkpoint or model.
        tokenizer: the LLM's tokenizer (object, directory or Hub id); defaults to the one saved with
            `language_model` when that is a path. A tokenizer object is modified in place (tokens added).
        dtype: dtype to load the checkpoints in (the new parts follow the language model's dtype).
        attn_implementation: passed to each checkpoint's `from_pretrained` (e.g. "sdpa", "eager").
        load_kwargs: other `from_pretrained` arguments for all three (`revision`, `cache_dir`, `token`, ...).
        return_tokenizer: also return the tokenizer with the added tokens (to build an `XSamProcessor`).
        config_overrides: `XSamConfig` fields (e.g. `decoder_config`, `connector_hidden_size`, `stage` is fixed to
            "s3"). `connector_feature_layers` defaults to the SAM encoder's last three global-attention blocks.

    Returns:
        The model in eval mode, or `(model, tokenizer)` with `return_tokenizer=True`.
    """
    kwargs = dict(load_kwargs or {})
    if dtype is not None:
        kwargs["dtype"] = dtype
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    if config_overrides.get("stage", "s3") != "s3":
        raise ValueError("from_components builds the full (s3) model; build other stages from a config.")

    if tokenizer is None:
        if isinstance(language_model, nn.Module):
            raise ValueError("Pass the language model's tokenizer: it gets the <SEG>, <p>, </p> tokens.")
        tokenizer = language_model
    if not isinstance(tokenizer, PreTrainedTokenizerBase):
        tokenizer = AutoTokenizer.from_pretrained(tokenizer, **(load_kwargs or {}))

    vision = load_vision_model(vision_model, **kwargs)
    segmentation = load_segmentation_model(segmentation_model, **kwargs)
    llm = load_language_model(language_model, **kwargs)

    token_ids = add_special_tokens(tokenizer)
    # As the official recipe: to the tokenizer's length, which may shrink a padded vocabulary (Phi-3: 32064 -> 32014).
    llm.resize_token_embeddings(len(tokenizer))

    config_class = model_class.config_class
    config = config_class(
        **{
            "connector_feature_layers": connector_layers_for(segmentation.config),
            **config_overrides,
            "vision_config": vision.config,
            "segmentation_encoder_config": segmentation.config,
            "text_config": llm.config,
            "stage": "s3",
            "seg_token_id": token_ids["<SEG>"],
            "phrase_start_token_id": token_ids["<p>"],
            "phrase_end_token_id": token_ids["</p>"],
        }
    )

    # A skeleton on the meta device: no memory, no initialisation; the pretrained parts are then moved in.
    with torch.device("meta"):
        model = model_class(config)
    model.vision_tower, model.segmentation_encoder, model.language_model = vision, segmentation, llm
    model.config.vision_config, model.config.segmentation_encoder_config = vision.config, segmentation.config
    model.config.text_config = llm.config

    reference = next(llm.parameters())
    for name, child in model.named_children():
        if name not in PRETRAINED_PARTS:
            child.to_empty(device=reference.device)
    # The same initialisation a fresh model gets (including Mask2Former's own for the decoder), applied only to the
    # new parts: every pretrained module is marked as initialised, which `initialize_weights` respects.
    for name in PRETRAINED_PARTS:
        for module in getattr(model, name).modules():
            module._is_hf_initialized = True
    model.initialize_weights()
    for name, child in model.named_children():
        if name not in PRETRAINED_PARTS:
            child.to(reference.dtype)

    leftover = [name for name, tensor in [*model.named_parameters(), *model.named_buffers()] if tensor.is_meta]
    if leftover:
        raise RuntimeError(f"Parameters left on the meta device: {leftover[:5]}")
    model.eval()
    return (model, tokenizer) if return_tokenizer else model


__all__ = [
    "SPECIAL_TOKENS",
    "add_special_tokens",
    "build_from_components",
    "connector_layers_for",
    "load_language_model",
    "load_segmentation_model",
    "load_vision_model",
]
