"""Generate-then-segment: X-SAM's "predict" mode (GCG, conversation) with masks for the generated `<SEG>`.

The flow (architecture spec §1.11, hf-stack-facts §3):
1. The encoders run once; the prompt's `<image>` / `<region>` placeholders are expanded into `inputs_embeds`.
2. The LLM generates with its KV cache from those embeddings (greedy by default, up to 512 new tokens, stopping at
   `<|end|>` / the EOS ids). Only token ids come back: no hidden state of any layer is requested, because asking
   `generate` for them keeps every layer's states of every step (gigabytes on long captions).
3. ONE teacher-forced forward over prompt + answer (with the cached image features) gives the LLM's last-layer
   states, from which the model reads each `<SEG>` and each `<p>...</p>` phrase exactly as in training; the decoder
   then predicts one mask set per `<SEG>`, classified against the phrases.

Samples whose answer cannot be segmented (no `<SEG>`, no phrase, or several `<SEG>` that do not match the phrases
one to one) are left out of step 3 and get no decoder instance; their text is still returned.

Batches: the merged prompts are LEFT padded for generation (each row's new tokens then follow its own last prompt
token; position ids come from the attention mask), and the step-3 sequences are right padded again as the model's
forward expects. A sample's outputs do not depend on the others in its batch (up to float rounding of padded
attention).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList
from transformers.utils import ModelOutput

from .spans import condition_ids, seg_ids

if TYPE_CHECKING:
    from .modeling_xsam import XSamForSegmentation, XSamImageFeatures

# The official Phi-3 chat template's stop word (architecture spec §2.2).
STOP_WORD = "<|end|>"
# The official "predict" mode's decoding (architecture spec §1.11).
OFFICIAL_DECODING = {"max_new_tokens": 512, "do_sample": False, "num_beams": 1}
# Keys an XSamProcessor batch carries for post-processing only; accepted and ignored so `generate(**inputs)` works.
PROCESSOR_ONLY_KEYS = ("original_sizes", "reshaped_input_sizes", "labels", "cond_ids", "seg_ids")


@dataclass
class XSamGenerationOutput(ModelOutput):
    """Output of [`XSamForSegmentation.generate`].

    N is the number of decoder instances (one per generated `<SEG>` of the samples that could be segmented).

    Args:
        sequences: `(B, L)` prompt + answer ids as the segmentation forward read them: NOT expanded (-200 / -300
            placeholders kept), right padded. Feed them back with `attention_mask` for more forwards.
        attention_mask: `(B, L)` mask of `sequences`.
        generated_ids: `(B, T)` each answer's new tokens through its first stop token, padded with the pad id.
        generated_texts: the decoded answers without the stop token, special tokens (`<p>`, `</p>`, `<SEG>`) kept;
            None when no tokenizer was given.
        segmented: `(B,)` bool, True for the samples whose answer was segmented.
        class_queries_logits: `(N, Q, C_max + 1)` class logits of each instance, background last (None if N = 0).
        masks_queries_logits: `(N, Q, h, w)` mask logits at 1/8 of the SAM canvas.
        instance_sample_index: `(N,)` the batch sample of each instance.
        instance_condition_index: `(N,)` the phrase a multi-`<SEG>` instance targets, -1 otherwise.
        condition_mask: `(N, C_max + 1)` bool, True for real classes and the background.
        scores: the per-step scores / logits `generate` returns when `output_scores` / `output_logits` is set.
    """

    sequences: torch.LongTensor | None = None
    attention_mask: torch.LongTensor | None = None
    generated_ids: torch.LongTensor | None = None
    generated_texts: list[str] | None = None
    segmented: torch.BoolTensor | None = None
    class_queries_logits: torch.FloatTensor | None = None
    masks_queries_logits: torch.FloatTensor | None = None
    instance_sample_index: torch.LongTensor | None = None
    instance_condition_index: torch.LongTensor | None = None
    condition_mask: torch.BoolTensor | None = None
    scores: tuple[torch.FloatTensor, ...] | None = None


def _tokenizer_of(tokenizer_or_processor: Any):
    """Accept a tokenizer or anything holding one (an `XSamProcessor`)."""
    if tokenizer_or_processor is None:
        return None
    return getattr(tokenizer_or_processor, "tokenizer", tokenizer_or_processor)


def _as_id_list(ids: int | Sequence[int] | torch.Tensor | None) -> list[int]:
    if ids is None:
        return []
    if isinstance(ids, torch.Tensor):
        return [int(i) for i in ids.flatten().tolist()]
    if isinstance(ids, int):
        return [ids]
    return [int(i) for i in ids]


def stop_token_ids_for(
    model: XSamForSegmentation, tokenizer: Any = None, generation_config: GenerationConfig | None = None
) -> list[int]:
    """The ids that end an answer: the generation config's EOS ids, plus the tokenizer's `<|end|>` when it has one
    (Phi-3's chat template ends every turn with it; its base EOS `<|endoftext|>` is not what the model emits)."""
    config = generation_config if generation_config is not None else model.language_model.generation_config
    stop = _as_id_list(config.eos_token_id) or _as_id_list(model.config.text_config.eos_token_id)
    tokenizer = _tokenizer_of(tokenizer)
    if tokenizer is not None and STOP_WORD in tokenizer.get_vocab():
        stop.append(tokenizer.convert_tokens_to_ids(STOP_WORD))
    return list(dict.fromkeys(stop))


def left_align(inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move each row's valid (right-padded) positions to the end: generation appends after the last column."""
    lengths = attention_mask.sum(dim=1)
    total = attention_mask.shape[1]
    embeds = torch.zeros_like(inputs_embeds)
    mask = torch.zeros_like(attention_mask)
    for b, n in enumerate(lengths.tolist()):
        valid = attention_mask[b].bool()
        embeds[b, total - n :] = inputs_embeds[b][valid]
        mask[b, total - n :] = 1
    return embeds, mask


def cut_at_stop(new_tokens: torch.Tensor, stop_ids: Sequence[int]) -> list[list[int]]:
    """Each row's tokens through its first stop id (kept, as in training answers); everything after is padding."""
    answers = []
    for row in new_tokens.tolist():
        end = next((i for i, token in enumerate(row) if token in stop_ids), None)
        answers.append(row if end is None else row[: end + 1])
    return answers


def segmentable(sequence: torch.Tensor, config: Any) -> bool:
    """Whether the model's forward can build decoder instances from this prompt + answer (see
    `XSamForSegmentation._gather_instances`): at least one `<SEG>` and one complete phrase, and with several `<SEG>`
    exactly one phrase per `<SEG>`."""
    row = sequence[None]
    num_conditions = int(condition_ids(row, config.phrase_start_token_id, config.phrase_end_token_id).max()) + 1
    num_seg = int((seg_ids(row, config.seg_token_id) >= 0).sum())
    return num_seg >= 1 and num_conditions >= 1 and (num_seg == 1 or num_seg == num_conditions)


def _subset_regions(
    keep: list[int],
    batch_size: int,
    region_masks: list[torch.Tensor | None] | None,
    region_image_indices: list[torch.Tensor | None] | None,
) -> tuple[list | None, list | None]:
    """Region prompts of the kept samples, with source indices renumbered for the smaller batch.

    At inference a prompt comes from its own sample's image (index b) or from `region_pixel_values` (index
    `batch_size + j`, which becomes `len(keep) + j`)."""
    if region_masks is None:
        return None, None
    masks = [region_masks[b] for b in keep]
    if region_image_indices is None:
        return masks, None
    indices = []
    for new_b, b in enumerate(keep):
        sources = region_image_indices[b]
        if sources is None:
            indices.append(None)
            continue
        sources = torch.as_tensor(sources, dtype=torch.long)
        renumbered = torch.where(sources == b, torch.full_like(sources, new_b), sources - batch_size + len(keep))
        indices.append(renumbered)
    return masks, indices


def _generation_config(
    model: XSamForSegmentation,
    generation_config: GenerationConfig | None,
    stop_ids: list[int],
    generate_kwargs: dict[str, Any],
) -> GenerationConfig:
    base = generation_config if generation_config is not None else model.language_model.generation_config
    config = copy.deepcopy(base)
    # The official predict mode (greedy, one beam, 512 new tokens) unless the caller chose otherwise; a given
    # generation_config is taken as it is. The LLM's own defaults (some checkpoints sample) do not apply.
    if generation_config is None:
        defaults = dict(OFFICIAL_DECODING)
        if "max_length" in generate_kwargs:
            defaults.pop("max_new_tokens")
        generate_kwargs = {**defaults, **generate_kwargs}
    unused = config.update(**generate_kwargs)
    if unused:
        raise TypeError(f"Unknown generation arguments: {sorted(unused)}.")
    if config.output_hidden_states or config.output_attentions:
        raise ValueError(
            "X-SAM's generation never asks for per-layer hidden states or attentions: the masks come from one "
            "forward over the finished sequence, which needs only the last layer. Drop output_hidden_states / "
            "output_attentions."
        )
    if (config.num_return_sequences or 1) > 1:
        raise ValueError("num_return_sequences > 1 is not supported: generate one answer per sample.")
    config.eos_token_id = stop_ids
    if config.pad_token_id is None:
        text_pad = model.config.text_config.pad_token_id
        config.pad_token_id = text_pad if text_pad is not None else stop_ids[0]
    config.return_dict_in_generate = True
    return config


@torch.no_grad()
def generate_with_masks(
    model: XSamForSegmentation,
    input_ids: torch.LongTensor,
    attention_mask: torch.Tensor | None = None,
    pixel_values: torch.FloatTensor | None = None,
    extra_pixel_values: torch.FloatTensor | None = None,
    region_masks: list[torch.Tensor | None] | None = None,
    region_image_indices: list[torch.Tensor | None] | None = None,
    region_pixel_values: torch.FloatTensor | None = None,
    image_features: XSamImageFeatures | None = None,
    tokenizer: Any = None,
    generation_config: GenerationConfig | None = None,
    stop_token_ids: int | Sequence[int] | None = None,
    logits_processor: LogitsProcessorList | None = None,
    stopping_criteria: StoppingCriteriaList | None = None,
    segment: bool = True,
    **generate_kwargs: Any,
) -> XSamGenerationOutput:
    r"""Generate each sample's answer, then segment its `<SEG>` tokens with its `<p>...</p>` phrases as classes.

    Args:
        model: an `XSamForSegmentation` with a language model (stage `"s2"` or `"s3"`; only `"s3"` segments).
        input_ids: `(B, L)` prompts ending where the answer starts (after `<|assistant|>\n`), NOT expanded (-200
            for the image, -300 per `<region>`), right or left padded.
        attention_mask: `(B, L)`; defaults to all ones.
        pixel_values, extra_pixel_values, region_masks, region_image_indices, region_pixel_values, image_features:
            as in `XSamForSegmentation.forward` (pass `image_features` to reuse encoded images).
        tokenizer: a tokenizer or `XSamProcessor`: decodes the answers and adds `<|end|>` to the stop ids.
        generation_config: defaults to the language model's with the official decoding (greedy, one beam,
            `max_new_tokens=512`) unless `generate_kwargs` say otherwise; a given one is used as it is.
        stop_token_ids: ids that end an answer, replacing the default (EOS ids + `<|end|>`).
        logits_processor, stopping_criteria: passed to `generate`.
        segment: run the segmentation forward (False: text only).
        generate_kwargs: generation settings (`max_new_tokens`, `do_sample`, `temperature`, `top_p`, ...). Keys an
            `XSamProcessor` batch carries for post-processing only (`original_sizes`, ...) are ignored.
    """
    for key in PROCESSOR_ONLY_KEYS:
        generate_kwargs.pop(key, None)
    if not hasattr(model, "language_model"):
        raise ValueError("Generation needs the language model: the S1 (segmentor-only) form has none.")
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    tokenizer = _tokenizer_of(tokenizer)
    stop_ids = _as_id_list(stop_token_ids) or stop_token_ids_for(model, tokenizer, generation_config)
    config = _generation_config(model, generation_config, stop_ids, generate_kwargs)

    # Encode once: the same features serve generation and the segmentation forward.
    if image_features is None and (pixel_values is not None or extra_pixel_values is not None):
        image_features = model.get_image_features(pixel_values, extra_pixel_values)
    region_tokens = None
    if region_masks is not None:
        if image_features is None or image_features.segmentation_tokens is None:
            raise ValueError("Visual prompts (region_masks) need the image (extra_pixel_values).")
        region_tokens = model._region_tokens(image_features, region_masks, region_image_indices, region_pixel_values)
    merged = model._merge_inputs(input_ids, attention_mask, None, image_features, region_tokens)
    inputs_embeds, generation_mask = left_align(merged.inputs_embeds, merged.attention_mask)

    generated = model.language_model.generate(
        inputs_embeds=inputs_embeds,
        attention_mask=generation_mask,
        generation_config=config,
        logits_processor=logits_processor,
        stopping_criteria=stopping_criteria,
    )
    # With inputs_embeds and no input_ids, generate returns the new tokens only.
    answers = cut_at_stop(generated.sequences, stop_ids)

    batch_size = input_ids.shape[0]
    device = input_ids.device
    prompts = [row[mask.bool()].tolist() for row, mask in zip(input_ids, attention_mask)]
    full = [prompt + answer for prompt, answer in zip(prompts, answers)]
    pad_id = config.pad_token_id
    sequences = torch.full((batch_size, max(map(len, full))), pad_id, dtype=torch.long, device=device)
    sequence_mask = torch.zeros_like(sequences)
    generated_ids = torch.full((batch_size, max(1, max(map(len, answers)))), pad_id, dtype=torch.long, device=device)
    for b, (sequence, answer) in enumerate(zip(full, answers)):
        sequences[b, : len(sequence)] = torch.tensor(sequence, device=device)
        sequence_mask[b, : len(sequence)] = 1
        generated_ids[b, : len(answer)] = torch.tensor(answer, dtype=torch.long, device=device)

    texts = None
    if tokenizer is not None:
        texts = [
            tokenizer.decode(answer[:-1] if answer and answer[-1] in stop_ids else answer, skip_special_tokens=False)
            for answer in answers
        ]

    output = XSamGenerationOutput(
        sequences=sequences,
        attention_mask=sequence_mask,
        generated_ids=generated_ids,
        generated_texts=texts,
        segmented=torch.zeros(batch_size, dtype=torch.bool, device=device),
        scores=generated.get("scores") if generated.get("scores") is not None else generated.get("logits"),
    )
    can_segment = (
        segment
        and model.config.stage == "s3"
        and image_features is not None
        and image_features.feature_pyramid is not None
    )
    keep = [
        b
        for b in range(batch_size)
        if can_segment and segmentable(sequences[b][sequence_mask[b].bool()], model.config)
    ]
    if not keep:
        return output

    # One teacher-forced forward over prompt + answer of the segmentable samples, with the cached features.
    keep_index = torch.tensor(keep, device=device)
    masks_subset, indices_subset = _subset_regions(keep, batch_size, region_masks, region_image_indices)
    seg_out = model(
        input_ids=sequences.index_select(0, keep_index),
        attention_mask=sequence_mask.index_select(0, keep_index),
        image_features=image_features.select(keep),
        region_masks=masks_subset,
        region_image_indices=indices_subset,
        region_pixel_values=region_pixel_values,
        use_cache=False,
    )
    output.segmented[keep_index] = True
    output.class_queries_logits = seg_out.class_queries_logits
    output.masks_queries_logits = seg_out.masks_queries_logits
    output.instance_sample_index = keep_index[seg_out.instance_sample_index]
    output.instance_condition_index = seg_out.instance_condition_index
    output.condition_mask = seg_out.condition_mask
    return output


__all__ = ["XSamGenerationOutput", "generate_with_masks", "stop_token_ids_for"]
