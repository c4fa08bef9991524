"""Conversation accuracy on LLaVA-format question/answer pairs.

Two kinds of question:
* open answers: exact match after :func:`normalize_answer` (lower case, punctuation and the articles a/an/the
  removed, whitespace collapsed);
* multiple choice: the option letter is pulled out of the generation with :func:`extract_choice_letter` and
  compared with the reference letter; a generation with no recognisable letter counts as wrong.
Accuracies are fractions in [0, 1] (NaN when there is no question of that kind).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans({c: " " for c in string.punctuation})
# "B", "B.", "(B)", "B)", "B: text" at the very start; a bare "A " is not taken (it is usually the article)
_LEADING_LETTER = re.compile(r"^\(?([A-Z])(?:[.:)]|\s*$)")
# "the answer is B", "answer: (C)", "option D", "choice: A"
# keywords in any case, the letter upper case only ("the answer is a cat" names no option)
_STATED_LETTER = re.compile(r"\b(?i:answer|option|choice)\s*(?:is|:)?\s*\(?([A-Z])\)?(?![A-Za-z])")
_PARENTHESISED_LETTER = re.compile(r"\(([A-Z])\)")
_IMAGE_TOKEN = "<image>"


def normalize_answer(text: str) -> str:
    """Lower-case, replace punctuation by spaces, drop the articles a/an/the, and collapse whitespace."""
    text = text.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def extract_choice_letter(text: str, num_choices: int | None = None) -> str | None:
    """Option letter chosen by a generated answer, or ``None``.

    Looks, in order, for a letter opening the answer ("B", "B.", "(B) ..."), a stated choice ("The answer is
    C", "Option (D)"), then a single distinct parenthesised letter anywhere. With ``num_choices`` only the first
    ``num_choices`` letters (A, B, ...) are accepted.
    """
    allowed = string.ascii_uppercase[: num_choices if num_choices is not None else 26]
    stripped = text.strip()
    match = _LEADING_LETTER.match(stripped)
    if match and match.group(1) in allowed:
        return match.group(1)
    stated = [m.group(1) for m in _STATED_LETTER.finditer(stripped)]
    stated = [letter for letter in stated if letter in allowed]
    if stated:
        return stated[0]
    parenthesised = {m.group(1) for m in _PARENTHESISED_LETTER.finditer(stripped)} & set(allowed)
    if len(parenthesised) == 1:
        return parenthesised.pop()
    return None


def is_choice_letter(reference: str) -> bool:
    """True when a reference answer is just an option letter ("B" or "B.")."""
    return re.fullmatch(r"\(?[A-Z]\)?\.?", reference.strip()) is not None


def llava_question_answer_pairs(record: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(question, reference answer)`` pairs from one LLaVA record ``{"conversations": [{"from", "value"}, ...]}``.

    Turns must alternate human -> gpt; the ``<image>`` placeholder is removed from questions.
    """
    turns = record.get("conversations")
    if not isinstance(turns, Sequence) or len(turns) % 2:
        raise ValueError(f"record {record.get('id')!r}: 'conversations' must be a list of human/gpt turn pairs")
    pairs = []
    for index in range(0, len(turns), 2):
        question, answer = turns[index], turns[index + 1]
        if question.get("from") != "human" or answer.get("from") != "gpt":
            raise ValueError(
                f"record {record.get('id')!r}: turn {index} must be from 'human' and turn {index + 1} from 'gpt', "
                f"got {question.get('from')!r} and {answer.get('from')!r}"
            )
        pairs.append((question["value"].replace(_IMAGE_TOKEN, "").strip(), answer["value"]))
    return pairs


@dataclass
class ConversationAccuracy:
    """Streaming accuracy over open and multiple-choice questions."""

    open_correct: int = 0
    open_total: int = 0
    choice_correct: int = 0
    choice_total: int = 0

    def add(
        self,
        prediction: str,
        reference: str,
        mode: Literal["auto", "exact", "choice"] = "auto",
        num_choices: int | None = None,
    ) -> bool:
        """Score one generated answer; return whether it is correct.

        ``mode="auto"`` treats the question as multiple choice when the reference is a bare option letter.
        """
        if not isinstance(prediction, str) or not isinstance(reference, str):
            raise ValueError("prediction and reference must be strings")
        if mode not in ("auto", "exact", "choice"):
            raise ValueError(f"mode must be 'auto', 'exact' or 'choice', got {mode!r}")
        if mode == "choice" or (mode == "auto" and is_choice_letter(reference)):
            reference_letter = extract_choice_letter(reference, num_choices)
            if reference_letter is None:
                raise ValueError(f"multiple-choice reference {reference!r} holds no option letter")
            correct = extract_choice_letter(prediction, num_choices) == reference_letter
            self.choice_total += 1
            self.choice_correct += int(correct)
        else:
            correct = normalize_answer(prediction) == normalize_answer(reference)
            self.open_total += 1
            self.open_correct += int(correct)
        return correct

    def compute(self) -> dict[str, float]:
        """Return ``{"accuracy", "exact_match_accuracy", "multiple_choice_accuracy", "num_questions"}``."""
        total = self.open_total + self.choice_total

        def ratio(correct: int, count: int) -> float:
            return correct / count if count else float("nan")

        return {
            "accuracy": ratio(self.open_correct + self.choice_correct, total),
            "exact_match_accuracy": ratio(self.open_correct, self.open_total),
            "multiple_choice_accuracy": ratio(self.choice_correct, self.choice_total),
            "num_questions": total,
        }


def conversation_accuracy(
    predictions: Sequence[str], references: Sequence[str], mode: Literal["auto", "exact", "choice"] = "auto"
) -> dict[str, float]:
    """Accuracy of paired lists of generated and reference answers."""
    if len(predictions) != len(references):
        raise ValueError(f"got {len(predictions)} predictions for {len(references)} references")
    accumulator = ConversationAccuracy()
    for prediction, reference in zip(predictions, references):
        accumulator.add(prediction, reference, mode)
    return accumulator.compute()


class AnswerPrior:
    """The no-image baseline of a question/answer set: each question answered with the most frequent (normalised)
    training answer to the identical question, or the most frequent training answer of all for a question never
    seen in training.

    A question-only prior is what a model that ignores the image can reach at best on templated questions ("What
    colour is the sky?" -> the sky's most common colour), so a chat score above it is evidence of image reading; a
    blind model (zeroed image features) is a weaker bar, since its inputs are unlike any it was trained on.
    """

    def __init__(self, training_pairs: Iterable[tuple[str, str]]):
        by_question: dict[str, Counter] = {}
        overall: Counter = Counter()
        for question, answer in training_pairs:
            answer = normalize_answer(answer)
            by_question.setdefault(question.strip(), Counter())[answer] += 1
            overall[answer] += 1
        if not overall:
            raise ValueError("AnswerPrior needs at least one training question/answer pair")
        # ties go to the answer met first: Counter.most_common keeps insertion order among equal counts
        self.answers = {question: counts.most_common(1)[0][0] for question, counts in by_question.items()}
        self.fallback = overall.most_common(1)[0][0]

    @classmethod
    def from_llava(cls, records: Iterable[Mapping[str, Any]]) -> "AnswerPrior":
        return cls(pair for record in records for pair in llava_question_answer_pairs(record))

    def __call__(self, question: str) -> str:
        return self.answers.get(question.strip(), self.fallback)

    def accuracy(self, questions: Sequence[str], references: Sequence[str]) -> float:
        """Exact-match accuracy (a fraction) of the prior's answers; NaN for no questions."""
        if len(questions) != len(references):
            raise ValueError(f"got {len(questions)} questions for {len(references)} references")
        if not questions:
            return float("nan")
        hits = sum(normalize_answer(self(q)) == normalize_answer(r) for q, r in zip(questions, references))
        return hits / len(questions)
