"""The processor reproduces the official inputs of the golden generic-segmentation case exactly."""

import torch
from PIL import Image
from transformers import AutoTokenizer

from xsam_hf.processing import GenericSegmentationRequest, XSamProcessor
from xsam_hf.processing.image_processing import build_sam_image_processor, build_siglip_image_processor

from .conftest import GOLDEN

GOLDEN_QUESTION = (
    "Could you create segmentation masks for this image according to the specified categories: {categories}? "
    "Please create the segmentation masks."
)


def _golden_inputs(processor, request):
    image = Image.open(GOLDEN / "synthetic.png")
    return processor(images=image, requests=request, return_labels=True, return_condition_ids=True)


def _assert_matches_golden(inputs, golden):
    expected = golden["genseg"]["inputs"]["data_dict"]
    for key in ("input_ids", "labels", "cond_ids", "seg_ids"):
        assert torch.equal(inputs[key], expected[key]), key
    assert inputs["attention_mask"].sum().item() == expected["input_ids"].shape[1]
    torch.testing.assert_close(inputs["pixel_values"], expected["pixel_values"], atol=1e-6, rtol=0)
    torch.testing.assert_close(inputs["extra_pixel_values"], expected["extra_pixel_values"], atol=1e-6, rtol=0)
    assert inputs["original_sizes"].tolist() == [[100, 140]]
    assert inputs["reshaped_input_sizes"].tolist() == golden["genseg"]["inputs"]["data_samples"]["scaled_sizes"]


def test_task_api_reproduces_golden_inputs(processor, golden):
    request = GenericSegmentationRequest(
        ["person", "dog", "sky"], question=GOLDEN_QUESTION, answer="Sure, it is <SEG>."
    )
    inputs = _golden_inputs(processor, request)
    _assert_matches_golden(inputs, golden)
    # The text as the model reads it equals the official one (which prints <image> as nothing).
    assert inputs.texts[0].replace("<image>", "") == golden["genseg"]["text"]
    assert inputs.sample_info[0].class_names == ("person", "dog", "sky")


def test_conversation_api_reproduces_golden_inputs(processor, golden):
    conversation = golden["genseg"]["conversation"][0]
    question = conversation["input"].removeprefix("<|user|>\n<image>\n").removesuffix("<|end|>\n<|assistant|>\n")
    answer = conversation["output"].removesuffix("<|end|>")
    image = Image.open(GOLDEN / "synthetic.png")
    inputs = processor(
        images=image,
        task="conversation",
        conversation=[{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
        return_labels=True,
        return_condition_ids=True,
    )
    _assert_matches_golden(inputs, golden)


def test_special_tokens_are_added_to_the_base_tokenizer_in_order(golden):
    """From the tokenizer before X-SAM's additions, the processor adds <SEG>, <p>, </p> as ids 375, 376, 377."""
    tokenizer = AutoTokenizer.from_pretrained(GOLDEN / "tokenizer_base")
    assert len(tokenizer) == 375
    processor = XSamProcessor(build_siglip_image_processor(56), build_sam_image_processor(128), tokenizer)
    assert (processor.seg_token_id, processor.phrase_start_token_id, processor.phrase_end_token_id) == (375, 376, 377)
    assert len(processor.tokenizer) == 378
    request = GenericSegmentationRequest(
        ["person", "dog", "sky"], question=GOLDEN_QUESTION, answer="Sure, it is <SEG>."
    )
    _assert_matches_golden(_golden_inputs(processor, request), golden)


def test_shipped_tiny_tokenizer_is_the_golden_one(processor):
    golden_tokenizer = AutoTokenizer.from_pretrained(GOLDEN / "tokenizer")
    assert processor.tokenizer.get_vocab() == golden_tokenizer.get_vocab()
    text = "<|user|>\nCan you segment <p>the dog</p>?<|end|>\n<|assistant|>\nSure, <SEG>.<|end|>"
    assert processor.tokenizer.encode(text, add_special_tokens=False) == golden_tokenizer.encode(
        text, add_special_tokens=False
    )
