"""Every task's prompt: the fixed inference text, class order, multi-turn layout, and training-time sampling."""

import random

import numpy as np
import pytest

from xsam_hf.processing import (
    ConversationRequest,
    GCGRequest,
    GenericSegmentationRequest,
    ReasoningRequest,
    ReferringRequest,
    VGDRequest,
    clean_category_name,
    parse_category_prompt,
)
from xsam_hf.processing.prompts import GENERIC_QUESTIONS, REFERRING_QUESTIONS

IMAGE = np.full((60, 80, 3), 90, dtype=np.uint8)
HEAD = "<s><|user|>\n<image>\n"


def _text(processor, **kwargs):
    return processor(images=IMAGE, **kwargs).texts[0]


@pytest.mark.parametrize("task", ["panoptic", "semantic", "instance", "open_vocabulary"])
def test_generic_tasks_share_one_fixed_prompt_in_the_users_order(processor, task):
    inputs = processor(images=IMAGE, task=task, categories=["zebra", "Wall-other-merged", "person"])
    assert inputs.texts[0] == (
        HEAD + "Can you segment the image based on the following categories: <p>zebra</p>, <p>wall</p>, "
        "<p>person</p>? Please output the segmentation masks.<|end|>\n<|assistant|>\nSure, it is <SEG>.<|end|>\n"
    )
    info = inputs.sample_info[0]
    assert info.task == task and info.class_names == ("zebra", "Wall-other-merged", "person")
    assert not info.generate
    # The answer is teacher-forced: the last tokens are <SEG> . <|end|> \n.
    ids = inputs["input_ids"][0].tolist()
    assert ids[-4:] == [processor.seg_token_id, *processor.tokenizer.encode(".<|end|>\n", add_special_tokens=False)]


def test_stuff_categories_become_label_ids_to_fuse(processor):
    categories = ["person", "sky", "grass"]
    inputs = processor(images=IMAGE, task="panoptic", categories=categories, stuff_categories=["grass", 1])
    assert inputs.sample_info[0].label_ids_to_fuse == frozenset({1, 2})
    with pytest.raises(ValueError, match="not among the categories"):
        processor(images=IMAGE, task="panoptic", categories=["person"], stuff_categories=["sky"])


def test_category_cleaning_and_demo_syntax():
    assert clean_category_name("wall-other-merged") == "wall"
    assert clean_category_name("t-shirt") == "t shirt"
    parsed = parse_category_prompt("ins: person, dog; sem: sky, grass")
    assert parsed == (["person", "dog", "sky", "grass"], ["sky", "grass"])
    assert parse_category_prompt("cat, dog") == (["cat", "dog"], [])
    with pytest.raises(ValueError, match="Unknown category group"):
        parse_category_prompt("foo: cat")


def test_referring_several_expressions_make_one_turn_and_one_seg_each(processor):
    inputs = processor(images=IMAGE, task="referring", expressions=["The man on the LEFT", "the dog"])
    turn = (
        "Can you segment <p>{}</p> in this image? Please generate the segmentation mask."
        "<|end|>\n<|assistant|>\nSure, <SEG>.<|end|>\n"
    )
    assert inputs.texts[0] == HEAD + turn.format("the man on the left") + "<|user|>\n" + turn.format("the dog")
    ids = inputs["input_ids"][0]
    assert int((ids == processor.seg_token_id).sum()) == 2
    assert int((ids == -200).sum()) == 1  # the image only in the first turn
    assert inputs.sample_info[0].class_names == ("The man on the LEFT", "the dog")


def test_reasoning_sentence_and_phrase_queries(processor):
    sentence = _text(processor, task="reasoning", queries="What could I sit on after a long walk?")
    assert sentence == (
        HEAD + "<p>What could I sit on after a long walk?</p> Please output the corresponding segmentation mask."
        "<|end|>\n<|assistant|>\nIt is <SEG>.<|end|>\n"
    )
    phrase = processor(images=IMAGE, requests=ReasoningRequest("the red cup", is_sentence=False)).texts[0]
    assert "Can you segment <p>the red cup</p> in this image?" in phrase


def test_gcg_generates_and_its_training_answer_wraps_phrases(processor):
    inputs = processor(images=IMAGE, task="gcg")
    assert inputs.texts[0].endswith("for the corresponding phrases.<|end|>\n<|assistant|>\n")
    assert inputs.sample_info[0].generate
    trained = GCGRequest(caption="A man riding a horse on the beach.", phrases=["A man", (13, 20)]).to_prompt()
    assert trained.turns[0].assistant == "<p>a man</p>  riding <p>a horse</p>  on the beach. And <SEG>."
    assert trained.class_names == ("A man", "a horse")


def test_visual_prompt_tasks(processor):
    interactive = _text(processor, task="interactive", visual_prompts={"box": (5, 5, 30, 30)})
    assert "following regions: <p><region></p>? Please output the corresponding segmentation mask." in interactive
    inputs = processor(
        images=IMAGE,
        task="vgd",
        visual_prompts=[{"point": (10, 10)}, {"box": (40, 20, 70, 50)}],
        prompt_names=["a", "b"],
    )
    assert "regions: <p><region></p>, <p><region></p>?" in inputs.texts[0]
    assert int((inputs["input_ids"][0] == -300).sum()) == 2
    assert inputs.sample_info[0].class_names == ("a", "b")
    with pytest.raises(ValueError, match="one visual prompt per sample"):
        processor(images=IMAGE, task="interactive", visual_prompts=[{"point": (1, 1)}, {"point": (2, 2)}])


def test_conversation_multi_turn_labels_only_answers(processor):
    messages = [
        {"role": "user", "content": "What animal is this? <image>"},
        {"role": "assistant", "content": "A cat."},
        {"role": "user", "content": "What colour is it?"},
    ]
    inputs = processor(images=IMAGE, task="conversation", conversation=messages, return_labels=True)
    assert inputs.texts[0] == (
        HEAD
        + "What animal is this?<|end|>\n<|assistant|>\nA cat.<|end|>\n"
        + "<|user|>\nWhat colour is it?<|end|>\n<|assistant|>\n"
    )
    assert inputs.sample_info[0].generate
    labels = inputs["labels"][0]
    supervised = processor.tokenizer.decode(labels[labels != -100])
    assert supervised == "A cat.<|end|>"
    with pytest.raises(ValueError, match="alternate"):
        ConversationRequest([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]).to_prompt()


def test_free_text_is_a_generation_prompt(processor):
    inputs = processor(images=IMAGE, text="Describe the image.")
    assert inputs.texts[0] == HEAD + "Describe the image.<|end|>\n<|assistant|>\n"
    assert "labels" not in inputs


def test_training_templates_are_sampled_reproducibly(processor):
    def texts(seed, rng_type):
        rng = random.Random(seed) if rng_type == "random" else np.random.default_rng(seed)
        requests = [GenericSegmentationRequest(["cat", "dog"]) for _ in range(4)]
        return [processor(images=IMAGE, requests=r, training=True, rng=rng).texts[0] for r in requests]

    for rng_type in ("random", "numpy"):
        first, again = texts(7, rng_type), texts(7, rng_type)
        assert first == again
        assert len(set(texts(7, rng_type) + texts(8, rng_type))) > 1
    # Without `training` the text never varies, and training returns labels.
    trained = processor(images=IMAGE, task="panoptic", categories=["cat", "dog"], training=True, rng=random.Random(0))
    assert trained["labels"] is not None
    question_seen = {
        GenericSegmentationRequest(["cat"]).to_prompt(training=True, rng=random.Random(s)).turns[0].user
        for s in range(40)
    }
    assert len(question_seen) == len(GENERIC_QUESTIONS)
    referring = {ReferringRequest("x").to_prompt(training=True, rng=random.Random(s)).turns[0].user for s in range(40)}
    assert len(referring) == len(REFERRING_QUESTIONS)


def test_reserved_tokens_and_empty_inputs_are_rejected(processor):
    with pytest.raises(ValueError, match="reserved token"):
        processor(images=IMAGE, task="referring", expressions="the <SEG> thing")
    with pytest.raises(ValueError, match="At least one category"):
        processor(images=IMAGE, task="panoptic", categories=[])
    with pytest.raises(ValueError, match="needs \\['categories'\\]"):
        processor(images=IMAGE, task="semantic")
    with pytest.raises(ValueError, match="does not use"):
        processor(images=IMAGE, task="referring", expressions="x", categories=["y"])
    with pytest.raises(ValueError, match="Unknown task"):
        processor(images=IMAGE, task="depth")
    with pytest.raises(ValueError, match="needs an image"):
        processor(text="hello")
    with pytest.raises(ValueError, match="2 names for 1 visual prompts"):
        VGDRequest([{"point": (1, 1)}], names=["a", "b"]).to_prompt()


def test_mixed_task_batch_with_request_objects(processor):
    inputs = processor(
        images=[IMAGE, IMAGE[:40]],
        requests=[GenericSegmentationRequest(["cat"], task="semantic"), ReferringRequest(["the cat", "the dog"])],
    )
    assert [i.task for i in inputs.sample_info] == ["semantic", "referring"]
    assert inputs["input_ids"].shape[0] == 2
    lengths = inputs["attention_mask"].sum(1).tolist()
    assert lengths[1] > lengths[0]  # two turns against one
    pad = processor.tokenizer.pad_token_id
    assert inputs["input_ids"][0, lengths[0]:].eq(pad).all() and inputs["attention_mask"][0, lengths[0]:].eq(0).all()
