"""The synthetic world's tokenizer: a byte-level BPE in which every word the world or a task prompt says is one token.

The golden tiny tokenizer (378 tokens) splits a world word into ~4.4 pieces, so a from-scratch 2-layer LLM must first
learn to assemble words before it can learn what they mean, and every sequence is ~4x longer. This one is trained
on the world's own texts and the task prompt templates until no merge is left, so each of their words (with and
without its leading space) is a single token; being byte-level, it still encodes any other text, byte by byte.

Special tokens keep the tiny tokenizer's layout: ``<unk> <s> </s>`` first, then Phi-3's chat tokens and X-SAM's
``<SEG> <p> </p>`` at the end of the vocabulary.

``python -m xsam_hf.synthetic.tokenizer OUTPUT_DIR`` rebuilds the asset shipped in ``xsam_hf/assets/tokenizers/world``.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Iterable, Iterator

from ..processing import prompts as prompt_templates
from .vocabulary import CLASS_NAMES, WORLD_VOCABULARY

LEADING_SPECIAL_TOKENS = ("<unk>", "<s>", "</s>")
TRAILING_SPECIAL_TOKENS = ("<|endoftext|>", "<|assistant|>", "<|system|>", "<|end|>", "<|user|>", "<SEG>", "<p>",
                           "</p>")
CORPUS_SCENES = 400  # train scenes whose texts join the corpus (word order matters little: no merge is left over)
_PLACEHOLDER = re.compile(r"\{[a-z_]+\}")
_SPECIAL = re.compile(r"<SEG>|<p>|</p>|<image>|<region>")


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)


def prompt_texts() -> list[str]:
    """Every template string of the task prompts, placeholders and special tokens removed."""
    texts = []
    for name in dir(prompt_templates):
        value = getattr(prompt_templates, name)
        if name.isupper() and isinstance(value, tuple) and all(isinstance(v, str) for v in value):
            texts += [_SPECIAL.sub(" ", _PLACEHOLDER.sub(" ", v)) for v in value]
    return texts


def world_texts(seed: int = 0, num_scenes: int = CORPUS_SCENES) -> list[str]:
    """The texts of ``num_scenes`` train scenes: expressions, questions, answers, captions, explanations."""
    from .writer import build_image_record

    texts = []
    for index in range(num_scenes):
        record = build_image_record(seed, "train", index)
        for part in (record.refs, record.reasoning, record.explanation, record.gcg["caption"], record.chat,
                     record.caption_chat):
            texts += [_SPECIAL.sub(" ", t) for t in _strings(part) if not t.endswith(".jpg")]
    return texts


def corpus(seed: int = 0, num_scenes: int = CORPUS_SCENES) -> list[str]:
    words = sorted(set(WORLD_VOCABULARY) | set(CLASS_NAMES))
    # Each word alone and after a space, capitalised too, so it is whole wherever a sentence puts it.
    single = [form for w in words for form in (w, f" {w}", w.capitalize(), f" {w.capitalize()}")]
    return prompt_texts() + world_texts(seed, num_scenes) + single


def build_world_tokenizer(texts: Iterable[str] | None = None):
    """A ``PreTrainedTokenizerFast`` trained on ``texts`` (default: :func:`corpus`)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=100_000, min_frequency=1, show_progress=False,
                                  special_tokens=list(LEADING_SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(list(texts if texts is not None else corpus()), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="<|endoftext|>", unk_token="<unk>",
        pad_token="<|endoftext|>", model_max_length=4096, padding_side="right", clean_up_tokenization_spaces=False)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|assistant|>", "<|system|>", "<|end|>",
                                                                "<|user|>"]})
    tokenizer.add_tokens(["<SEG>", "<p>", "</p>"], special_tokens=True)
    return tokenizer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output_dir")
    args = parser.parse_args(argv)
    tokenizer = build_world_tokenizer()
    os.makedirs(args.output_dir, exist_ok=True)
    tokenizer.save_pretrained(args.output_dir)
    print(f"{len(tokenizer)} tokens -> {args.output_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
