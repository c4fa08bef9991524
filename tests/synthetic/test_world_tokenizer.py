"""The synthetic world's tokenizer (xsam_hf/assets/tokenizers/world) and the `world` preset that uses it."""

from __future__ import annotations

import pytest

from xsam_hf.modeling.configuration_xsam import XSamConfig
from xsam_hf.processing import XSamProcessor
from xsam_hf.synthetic import WORLD_VOCABULARY, words
from xsam_hf.synthetic.tokenizer import build_world_tokenizer, corpus, prompt_texts, world_texts


@pytest.fixture(scope="module")
def processor():
    return XSamProcessor.from_preset("world")


def test_every_world_and_prompt_word_is_one_token(processor):
    tokenizer = processor.tokenizer
    for word in WORLD_VOCABULARY:
        assert len(tokenizer(f" {word}", add_special_tokens=False).input_ids) == 1, word
        assert len(tokenizer(word, add_special_tokens=False).input_ids) == 1, word
    for template in prompt_texts():
        text = " ".join(template.split())  # placeholders were removed, leaving double spaces
        # One token per word and per punctuation mark: no template word is split.
        assert len(tokenizer(text, add_special_tokens=False).input_ids) == len(words(text)), text


def test_unseen_validation_texts_cost_about_one_token_a_word_and_round_trip(processor):
    tiny = XSamProcessor.from_preset("tiny").tokenizer
    texts = world_texts(seed=7, num_scenes=15)  # another seed: scenes the corpus never saw
    num_words = sum(len(t.split()) for t in texts)
    world_tokens = sum(len(processor.tokenizer(t, add_special_tokens=False).input_ids) for t in texts)
    tiny_tokens = sum(len(tiny(t, add_special_tokens=False).input_ids) for t in texts)
    assert world_tokens / num_words < 1.3
    assert tiny_tokens / world_tokens > 3  # why the world has its own tokenizer
    for text in texts:
        ids = processor.tokenizer(text, add_special_tokens=False).input_ids
        assert processor.tokenizer.decode(ids) == text


def test_any_other_text_still_encodes_byte_by_byte(processor):
    text = "Segment the café's dog 🐕 <SEG> now"
    ids = processor.tokenizer(text, add_special_tokens=False).input_ids
    assert processor.tokenizer.unk_token_id not in ids
    assert processor.tokenizer.decode(ids) == text
    assert processor.seg_token_id in ids


def test_world_preset_matches_its_tokenizer(processor):
    config = XSamConfig.from_preset("world")
    tokenizer = processor.tokenizer
    assert config.text_config.vocab_size == len(tokenizer)
    assert config.seg_token_id == processor.seg_token_id == tokenizer.convert_tokens_to_ids("<SEG>")
    assert config.phrase_start_token_id == tokenizer.convert_tokens_to_ids("<p>")
    assert config.phrase_end_token_id == tokenizer.convert_tokens_to_ids("</p>")
    assert config.text_config.eos_token_id == tokenizer.eos_token_id
    assert config.text_config.bos_token_id == tokenizer.bos_token_id
    # A scene has up to 6 objects + 3 stuff regions: every segment needs its own query.
    assert config.decoder_config.num_queries >= 9


def test_builder_is_deterministic_and_makes_every_corpus_word_whole():
    texts = prompt_texts() + world_texts(seed=3, num_scenes=5)
    first, second = build_world_tokenizer(texts), build_world_tokenizer(texts)
    assert first.get_vocab() == second.get_vocab()
    for template in texts:  # every word and punctuation mark of the corpus is one token
        text = " ".join(template.split())
        assert len(first(text, add_special_tokens=False).input_ids) == len(words(text)), text


@pytest.mark.slow
def test_shipped_asset_is_what_the_builder_makes(processor):
    rebuilt = build_world_tokenizer(corpus())
    assert rebuilt.get_vocab() == processor.tokenizer.get_vocab()
