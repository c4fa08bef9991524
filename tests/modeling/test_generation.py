"""Generate-then-segment on the tiny model: KV-cached generation, then one forward for the generated `<SEG>`.

The weights are random, so the answers are forced from a script with a logits processor; what is checked is the
plumbing: the script comes back as ids and text, the masks equal a teacher-forced forward over the same full
sequence, no per-layer hidden state is ever requested, batches equal per-sample runs.
"""

import numpy as np
import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from xsam_hf.modeling.generation import XSamGenerationOutput, left_align
from xsam_hf.processing import XSamProcessor

from .conftest import P_CLOSE, P_OPEN, PAD, SEG, build_tiny, pad_batch, random_images, synthetic_prompt

END = 373  # <|end|> in the tiny tokenizer (the Phi-3 stop word); PAD 370 is <|endoftext|>, the config's EOS


class ScriptedLogits(LogitsProcessor):
    """Force row b's i-th new token to `scripts[b][i]` (the last entry repeats once a script runs out)."""

    def __init__(self, scripts: list[list[int]]):
        self.scripts = scripts

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        step = input_ids.shape[1]  # generation from inputs_embeds: input_ids holds the new tokens only
        forced = torch.full_like(scores, float("-inf"))
        for b, script in enumerate(self.scripts):
            forced[b, script[min(step, len(script) - 1)]] = 0.0
        return forced


def forced(*scripts: list[int]) -> LogitsProcessorList:
    return LogitsProcessorList([ScriptedLogits(list(scripts))])


# A GCG-style answer: two phrases, then one <SEG>, then the stop word; the tokens after it must never be produced.
GCG_ANSWER = [P_OPEN, 40, 41, P_CLOSE, 42, P_OPEN, 43, P_CLOSE, 44, 45, SEG, 46, END]
CHAT_ANSWER = [50, 51, 52, END]
SEG_ONLY_ANSWER = [60, SEG, 61, END]  # for a prompt that names the classes itself (<p><region></p>)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_tiny()


@pytest.fixture(scope="module")
def tokenizer():
    return XSamProcessor.from_preset("tiny").tokenizer


class ForwardSpy:
    """Wrap a module's forward, recording the keyword arguments of every call."""

    def __init__(self, module):
        self.module, self.calls, self.original = module, [], module.forward

        def spy(*args, **kwargs):
            self.calls.append(kwargs)
            return self.original(*args, **kwargs)

        module.forward = spy

    def restore(self):
        self.module.forward = self.original


def test_forced_gcg_answer_masks_equal_teacher_forced_forward(model, tokenizer, monkeypatch):
    prompt = synthetic_prompt(0, num_seg=0, seed=3)  # BOS, text, <image>, text: nothing to segment yet
    input_ids, attention_mask = pad_batch([prompt])
    pixel_values, extra_pixel_values = random_images(1, seed=3)

    lm_spy, decoder_spy = ForwardSpy(model.language_model), ForwardSpy(model.language_model.model)
    generate_configs = []
    original_generate = model.language_model.generate

    def generate_spy(*args, **kwargs):
        generate_configs.append(kwargs)
        return original_generate(*args, **kwargs)

    monkeypatch.setattr(model.language_model, "generate", generate_spy)
    try:
        out = model.generate(
            input_ids,
            attention_mask,
            pixel_values=pixel_values,
            extra_pixel_values=extra_pixel_values,
            tokenizer=tokenizer,
            logits_processor=forced(GCG_ANSWER + [1, 2, 3]),
        )
    finally:
        lm_spy.restore()
        decoder_spy.restore()

    assert isinstance(out, XSamGenerationOutput)
    # The script through the stop word, nothing after it; the text keeps the grounding tokens, drops the stop word.
    assert out.generated_ids.tolist() == [GCG_ANSWER]
    assert out.generated_texts == [tokenizer.decode(GCG_ANSWER[:-1], skip_special_tokens=False)]
    assert out.generated_texts[0].count("<p>") == 2 and "<SEG>" in out.generated_texts[0]
    assert out.sequences.tolist() == [prompt + GCG_ANSWER] and out.segmented.tolist() == [True]

    # No per-layer hidden states anywhere: not asked of generate, not passed to any LLM forward.
    assert len(generate_configs) == 1
    config = generate_configs[0]["generation_config"]
    assert config.output_hidden_states is False and config.output_attentions is False
    # The official predict mode: greedy, 512 new tokens at most, stop at <|end|> (373) or the EOS (370).
    assert config.max_new_tokens == 512 and config.do_sample is False and config.num_beams == 1
    assert set(config.eos_token_id) == {370, END}
    assert "output_hidden_states" not in generate_configs[0]
    for call in lm_spy.calls + decoder_spy.calls:
        assert call.get("output_hidden_states") is not True
    # KV cache: the prompt once (16 SigLIP + 16 SAM tokens replace <image>), then one token per step, then the one
    # segmentation forward over the whole (expanded) sequence without a cache.
    # (Decode steps feed the new token's id; the prompt and the segmentation forward feed embeddings.)
    lengths = [(call.get("inputs_embeds") if call.get("inputs_embeds") is not None else call["input_ids"]).shape[1]
               for call in lm_spy.calls]
    expanded_prompt = len(prompt) - 1 + 32
    assert lengths == [expanded_prompt] + [1] * (len(GCG_ANSWER) - 1) + [expanded_prompt + len(GCG_ANSWER)]
    assert all(call["past_key_values"] is not None for call in lm_spy.calls[1:-1])

    # The masks equal an independent teacher-forced forward over the same full sequence (images re-encoded).
    full_ids, full_mask = pad_batch([prompt + GCG_ANSWER])
    with torch.no_grad():
        reference = model(
            input_ids=full_ids, attention_mask=full_mask, pixel_values=pixel_values,
            extra_pixel_values=extra_pixel_values,
        )
    torch.testing.assert_close(out.masks_queries_logits, reference.masks_queries_logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(out.class_queries_logits, reference.class_queries_logits, rtol=0, atol=1e-5)
    assert out.masks_queries_logits.shape == (1, 8, 16, 16)
    # Two generated phrases + background are the classes.
    assert out.condition_mask.tolist() == [[True, True, True]]
    assert out.instance_sample_index.tolist() == [0] and out.instance_condition_index.tolist() == [-1]


def test_greedy_kv_cached_tokens_are_the_teacher_forced_argmax(model):
    prompt = synthetic_prompt(0, num_seg=0, seed=5)
    input_ids, attention_mask = pad_batch([prompt])
    pixel_values, extra_pixel_values = random_images(1, seed=5)
    out = model.generate(
        input_ids, attention_mask, pixel_values=pixel_values, extra_pixel_values=extra_pixel_values,
        max_new_tokens=6, stop_token_ids=[END],
    )
    answer = out.generated_ids[0].tolist()
    answer = answer[: answer.index(END) + 1] if END in answer else answer
    assert len(answer) >= 2
    with torch.no_grad():
        logits = model(input_ids=out.sequences, attention_mask=out.attention_mask, pixel_values=pixel_values,
                       extra_pixel_values=extra_pixel_values).logits[0]
    first = logits.shape[0] - len(answer) - 1  # the logits at the last prompt position predict answer[0]
    assert logits[first : first + len(answer)].argmax(-1).tolist() == answer


def test_batch_with_left_padding_equals_per_sample_runs(model, tokenizer):
    """Three prompts of different lengths: a chat answer (nothing to segment), a GCG answer, and a visual prompt
    whose class comes from the prompt (`<p><region></p>`) with the <SEG> generated. Batched, the merged prompts are
    left padded for generation; each sample's ids and masks equal its own batch-of-one run."""
    prompts = [
        synthetic_prompt(0, num_seg=0, seed=11),
        synthetic_prompt(0, num_seg=0, seed=12)[:-2],
        synthetic_prompt(1, num_seg=0, seed=13, regions=1),
    ]
    scripts = [CHAT_ANSWER, GCG_ANSWER, SEG_ONLY_ANSWER]
    pixel_values, extra_pixel_values = random_images(3, seed=7)
    region = torch.zeros(1, 128, 128, dtype=torch.bool)
    region[0, 30:70, 40:90] = True
    region_masks = [None, None, region]
    region_image_indices = [None, None, torch.tensor([2])]
    input_ids, attention_mask = pad_batch(prompts)
    batch = model.generate(
        input_ids, attention_mask, pixel_values=pixel_values, extra_pixel_values=extra_pixel_values,
        region_masks=region_masks, region_image_indices=region_image_indices, tokenizer=tokenizer,
        logits_processor=forced(*scripts),
    )
    assert batch.segmented.tolist() == [False, True, True]
    assert batch.instance_sample_index.tolist() == [1, 2]
    assert batch.generated_ids[0].tolist() == CHAT_ANSWER + [PAD] * (len(GCG_ANSWER) - len(CHAT_ANSWER))
    assert batch.generated_texts[0] == tokenizer.decode(CHAT_ANSWER[:-1])

    for b in range(3):
        ids, mask = pad_batch([prompts[b]])
        single = model.generate(
            ids, mask, pixel_values=pixel_values[b : b + 1], extra_pixel_values=extra_pixel_values[b : b + 1],
            region_masks=[region_masks[b]] if b == 2 else None, tokenizer=tokenizer,
            logits_processor=forced(scripts[b]),
        )
        assert single.generated_ids[0].tolist() == scripts[b]
        assert batch.generated_ids[b, : len(scripts[b])].tolist() == scripts[b]
        assert batch.generated_texts[b] == single.generated_texts[0]
        valid = batch.attention_mask[b].bool()
        assert batch.sequences[b][valid].tolist() == prompts[b] + scripts[b] == single.sequences[0].tolist()
        if b == 0:
            assert single.masks_queries_logits is None and not single.segmented.any()
            continue
        n = batch.instance_sample_index.tolist().index(b)
        columns = batch.condition_mask[n]
        torch.testing.assert_close(batch.masks_queries_logits[n], single.masks_queries_logits[0], rtol=0, atol=1e-5)
        torch.testing.assert_close(
            batch.class_queries_logits[n][:, columns], single.class_queries_logits[0][:, single.condition_mask[0]],
            rtol=0, atol=1e-5,
        )
    # The visual prompt's class (from the prompt) and the background.
    assert int(batch.condition_mask[1].sum()) == 2


def test_left_align_moves_right_padding_to_the_left():
    embeds = torch.arange(2 * 4 * 1, dtype=torch.float32).reshape(2, 4, 1)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    aligned, aligned_mask = left_align(embeds, mask)
    assert aligned_mask.tolist() == [[0, 0, 1, 1], [1, 1, 1, 1]]
    assert aligned[0, :, 0].tolist() == [0, 0, 0, 1] and aligned[1, :, 0].tolist() == [4, 5, 6, 7]


def test_generation_settings(model):
    ids, mask = pad_batch([synthetic_prompt(0, num_seg=0, seed=2)])
    pixel_values, extra_pixel_values = random_images(1, seed=2)
    inputs = dict(pixel_values=pixel_values, extra_pixel_values=extra_pixel_values)
    with pytest.raises(ValueError, match="hidden states"):
        model.generate(ids, mask, output_hidden_states=True, **inputs)
    with pytest.raises(TypeError, match="Unknown generation arguments"):
        model.generate(ids, mask, max_new_tokenz=3, **inputs)
    # Sampling is seeded by the global RNG.
    torch.manual_seed(1)
    first = model.generate(ids, mask, do_sample=True, top_k=20, max_new_tokens=5, stop_token_ids=[END], **inputs)
    torch.manual_seed(1)
    second = model.generate(ids, mask, do_sample=True, top_k=20, max_new_tokens=5, stop_token_ids=[END], **inputs)
    assert torch.equal(first.generated_ids, second.generated_ids) and first.generated_ids.shape[1] <= 5
    # Text only: no segmentation forward even when the answer could be segmented.
    text_only = model.generate(
        ids, mask, segment=False, stop_token_ids=[END], logits_processor=forced(GCG_ANSWER), **inputs
    )
    assert text_only.generated_ids.tolist() == [GCG_ANSWER] and text_only.masks_queries_logits is None


def test_processor_batch_in_grounded_caption_out(model):
    """processor(task="gcg") -> model.generate(**inputs) -> processor.post_process_generation."""
    processor = XSamProcessor.from_preset("tiny")
    image = np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    inputs = processor(images=image, task="gcg")
    text = "<p>a man</p> riding <p>a horse</p> on the beach. And <SEG>.<|end|>"
    answer = processor.tokenizer.encode(text, add_special_tokens=False)
    assert answer.count(P_OPEN) == 2 and answer.count(SEG) == 1 and answer[-1] == END
    out = model.generate(**inputs, tokenizer=processor, logits_processor=forced(answer))
    assert out.generated_ids.tolist() == [answer]
    result = processor.post_process_generation(out.generated_ids, out, inputs)[0]
    assert result["caption"] == "a man riding a horse on the beach."
    assert [phrase for phrase, _, _ in result["entities"]] == ["a man", "a horse"]
    assert all(mask.shape == (60, 80) for _, _, mask in result["entities"])
