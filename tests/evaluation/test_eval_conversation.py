"""Conversation accuracy on LLaVA-format questions, and the results-table formatter."""

from __future__ import annotations

import math

import pytest

from xsam_hf.evaluation import (
    AnswerPrior,
    ConversationAccuracy,
    conversation_accuracy,
    extract_choice_letter,
    format_results_table,
    llava_question_answer_pairs,
    normalize_answer,
)

LLAVA_RECORD = {
    "id": "000000033471",
    "image": "coco/train2017/000000033471.jpg",
    "conversations": [
        {"from": "human", "value": "<image>\nWhat are the colors of the bus in the image?"},
        {"from": "gpt", "value": "White and red."},
        {
            "from": "human",
            "value": "Which vehicle is shown?\nA. A car\nB. A bus\nC. A bicycle\nAnswer with the option's letter.",
        },
        {"from": "gpt", "value": "B"},
        {"from": "human", "value": "How many buses are there?"},
        {"from": "gpt", "value": "One"},
    ],
}


def test_normalisation_and_letter_extraction():
    assert normalize_answer("  The Bus is RED, and white! ") == "bus is red and white"
    assert normalize_answer("an apple") == normalize_answer("Apple.")
    cases = {
        "B": "B", "C.": "C", "(D) a bicycle": "D", "A) A car": "A", "B: a bus": "B",
        "The answer is C.": "C", "Answer: (A)": "A", "I would pick option B here": "B",
        "It is clearly (B), the bus.": "B",
        "A bus.": None,  # the article, not option A
        "The answer is a bus": None, "(A) or (B)": "A", "I am not sure": None,
    }
    for text, letter in cases.items():
        assert extract_choice_letter(text) == letter, text
    assert extract_choice_letter("E", num_choices=4) is None


def test_accuracy_on_llava_record():
    pairs = llava_question_answer_pairs(LLAVA_RECORD)
    assert [question.startswith("<image>") for question, _ in pairs] == [False, False, False]
    assert pairs[0] == ("What are the colors of the bus in the image?", "White and red.")
    generations = ["white and red", "The answer is B.", "two"]
    accumulator = ConversationAccuracy()
    verdicts = [accumulator.add(generation, answer) for generation, (_, answer) in zip(generations, pairs)]
    assert verdicts == [True, True, False]
    assert accumulator.compute() == {
        "accuracy": 2 / 3, "exact_match_accuracy": 1 / 2, "multiple_choice_accuracy": 1.0, "num_questions": 3,
    }
    forced = conversation_accuracy(["B"], ["B"], mode="exact")
    assert forced["exact_match_accuracy"] == 1.0 and math.isnan(forced["multiple_choice_accuracy"])


def test_bad_conversation_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="2 predictions for 1 references"):
        conversation_accuracy(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="holds no option letter"):
        ConversationAccuracy().add("B", "a bus", mode="choice")
    with pytest.raises(ValueError, match="turn 0 must be from 'human'"):
        turns = [{"from": "gpt", "value": "x"}, {"from": "human", "value": "y"}]
        llava_question_answer_pairs({"id": 1, "conversations": turns})
    with pytest.raises(ValueError, match="human/gpt turn pairs"):
        llava_question_answer_pairs({"id": 1, "conversations": [{"from": "human", "value": "x"}]})


def test_results_table():
    table = format_results_table(
        {
            "COCO-Pan": {"PQ": 0.5461, "PQ_th": 0.6, "n": 133, "per_category": {1: {"PQ": 1.0}}},
            "RefCOCO val": {"cIoU": 0.8546, "gIoU": float("nan"), "num_samples": 10},
            "COCO-Int": {"point": {"mIoU": 0.7, "cIoU": 0.65, "num_samples": 3}},
        }
    )
    assert table.splitlines() == [
        "| Benchmark | PQ | PQ_th | cIoU | gIoU | point/mIoU | point/cIoU |",
        "|---|---:|---:|---:|---:|---:|---:|",
        "| COCO-Pan | 54.6 | 60.0 | - | - | - | - |",
        "| RefCOCO val | - | - | 85.5 | - | - | - |",
        "| COCO-Int | - | - | - | - | 70.0 | 65.0 |",
    ]


def _record(*pairs):
    turns = []
    for question, answer in pairs:
        turns += [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
    turns[0]["value"] = "<image>\n" + turns[0]["value"]
    return {"id": "x", "conversations": turns}


def test_answer_prior_answers_each_question_with_its_most_frequent_training_answer():
    training = [
        _record(("What colour is the sky?", "Blue."), ("How many stars are there?", "0")),
        _record(("What colour is the sky?", "orange"), ("How many stars are there?", "2")),
        _record(("What colour is the sky?", "blue"), ("Is there water?", "no")),
        _record(("How many stars are there?", "2"), ("Is there water?", "no")),
    ]
    prior = AnswerPrior.from_llava(training)
    # "Blue." and "blue" normalise alike (2 of 3); stars: "2" twice, "0" once; an unseen question gets the
    # most frequent answer overall ("blue", "2" and "no" all twice: the first met, "blue", wins the tie)
    assert prior("What colour is the sky?") == "blue"
    assert prior("How many stars are there?") == "2"
    assert prior("Is there water?") == "no"
    assert prior("What shape is the red object?") == "blue"
    questions = ["What colour is the sky?", "What colour is the sky?", "How many stars are there?",
                 "What shape is the red object?"]
    assert prior.accuracy(questions, ["The blue", "white", "2", "circle"]) == pytest.approx(2 / 4)
    assert math.isnan(prior.accuracy([], []))
    with pytest.raises(ValueError, match="2 questions for 1 references"):
        prior.accuracy(questions[:2], ["blue"])
    with pytest.raises(ValueError, match="at least one"):
        AnswerPrior([])
