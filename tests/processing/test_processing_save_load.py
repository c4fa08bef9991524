"""Saving, loading, Auto registration and presets."""

import json

import numpy as np
import pytest
import torch
from transformers import AutoProcessor, AutoTokenizer

from xsam_hf import XSamConfig
from xsam_hf.processing import XSamProcessor

from .conftest import GOLDEN

IMAGE = np.random.default_rng(0).integers(0, 255, (70, 90, 3), dtype=np.uint8)


def _same_outputs(a, b):
    request = dict(task="vgd", visual_prompts=[{"box": (5, 5, 40, 40)}, {"point": (60, 30)}])
    first, second = a(images=IMAGE, **request), b(images=IMAGE, **request)
    assert first.keys() == second.keys()
    for key in first:
        if isinstance(first[key], torch.Tensor):
            assert torch.equal(first[key], second[key]), key
        else:
            assert all(torch.equal(x, y) for x, y in zip(first[key], second[key])), key


def test_save_and_load_round_trip(processor, tmp_path):
    custom = XSamProcessor(
        processor.image_processor, processor.seg_image_processor, processor.tokenizer, pad_to_square=False
    )
    custom.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "processor_config.json").read_text())
    assert config["processor_class"] == "XSamProcessor" and config["pad_to_square"] is False
    loaded = XSamProcessor.from_pretrained(tmp_path)
    assert loaded.pad_to_square is False
    assert loaded.image_processor.backend == "pil" and loaded.seg_image_processor.backend == "pil"
    assert loaded.canvas_size == 128 and loaded.image_processor.size["height"] == 56
    assert loaded.tokenizer.get_vocab() == processor.tokenizer.get_vocab()
    assert loaded.seg_token_id == 375
    _same_outputs(custom, loaded)


def test_auto_processor(processor, tmp_path):
    # The package registers XSamProcessor for XSamConfig (registration repeated here so the check stands alone).
    AutoProcessor.register(XSamConfig, XSamProcessor, exist_ok=True)
    XSamConfig.from_preset("tiny").save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded) is XSamProcessor and loaded.pad_to_square is True
    _same_outputs(processor, loaded)


def test_presets(processor):
    assert processor.canvas_size == 128 and processor.image_processor.size["height"] == 56
    # The released sizes with an explicitly given tokenizer (the real Phi-3 tokenizer cannot be downloaded here).
    tokenizer = AutoTokenizer.from_pretrained(GOLDEN / "tokenizer_base")
    released = XSamProcessor.from_preset("x-sam-phi3-mini", tokenizer=tokenizer)
    assert released.canvas_size == 1024 and released.image_processor.size["height"] == 384
    assert released.seg_token_id == 375  # added to the given tokenizer
    inputs = released(images=IMAGE, task="semantic", categories=["cat"])
    assert inputs["pixel_values"].shape == (1, 3, 384, 384) and inputs["extra_pixel_values"].shape == (1, 3, 1024, 1024)
    assert inputs["reshaped_input_sizes"].tolist() == [[796, 1024]]
    from_path = XSamProcessor.from_preset("x-sam-phi3-mini", tokenizer=GOLDEN / "tokenizer")
    assert from_path.phrase_end_token_id == 377
    with pytest.raises(ValueError, match="Unknown X-SAM preset"):
        XSamProcessor.from_preset("huge")


def test_released_preset_without_tokenizer_explains_what_to_do(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    try:
        XSamProcessor.from_preset("x-sam-phi3-mini")
    except OSError as error:
        assert "tokenizer=" in str(error) and "Phi-3" in str(error)
    else:  # a machine with the tokenizer in its Hub cache
        pass


def test_batch_feature_keeps_its_sample_info_through_to_and_pickle(processor):
    import pickle

    inputs = processor(images=IMAGE, task="interactive", visual_prompts={"point": (20, 20)})
    moved = inputs.to(torch.float64)
    assert moved is inputs and moved["pixel_values"].dtype == torch.float64 and moved["input_ids"].dtype == torch.long
    assert moved["region_masks"][0].dtype == torch.bool
    restored = pickle.loads(pickle.dumps(inputs))
    assert restored.sample_info == inputs.sample_info and restored.texts == inputs.texts
    assert torch.equal(restored["input_ids"], inputs["input_ids"])
