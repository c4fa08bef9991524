"""The task prompts: one request type per X-SAM task, turned into chat turns.

At inference every task uses ONE fixed question and answer, taken from the official template lists (those strings are
part of the released weights' interface, so they are reproduced verbatim, typos included). With `training=True` the
question and answer are drawn at random from the official strings plus a few paraphrases of ours, using the random
generator the caller passes (`random.Random` or `numpy.random.Generator`), so training runs stay reproducible.

The class order is always the caller's; nothing is shuffled here.
"""

from __future__ import annotations

import random
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np

from .chat_template import (
    IMAGE_TOKEN,
    PHRASE_END_TOKEN,
    PHRASE_START_TOKEN,
    REGION_TOKEN,
    SEG_TOKEN,
    Turn,
)
from .visual_prompts import VisualPrompt

GENERIC_TASKS = ("panoptic", "semantic", "instance", "open_vocabulary")
TASKS = GENERIC_TASKS + ("referring", "reasoning", "gcg", "interactive", "vgd", "conversation")

Rng = Union[random.Random, np.random.Generator]

# --- template lists. The first entry of each is the fixed inference template. ---------------------------------------
# Generic / panoptic / semantic / instance / open-vocabulary segmentation (official strings, then ours).
GENERIC_QUESTIONS = (
    "Can you segment the image based on the following categories: {categories}? Please output the segmentation masks.",
    "Can you generate segmentation masks for this image based on the specified categories: {categories}? "
    "Please generate the segmentation masks.",
    "Could you create segmentation masks for this image according to the specified categories: {categories}? "
    "Please create the segmentation masks.",
    "Please segment this image into the following categories: {categories}. Output the segmentation masks.",
    "Which parts of this image belong to these categories: {categories}? Please output their segmentation masks.",
)
# Answers shared by generic, interactive and VGD segmentation.
SEGMENTATION_ANSWERS = (
    "Sure, it is <SEG>.",
    "<SEG>.",
    "It is <SEG>.",
    "Sure, <SEG>.",
    "Sure, the segmentation result is <SEG>.",
    "Here is the segmentation result: <SEG>.",
)
REFERRING_QUESTIONS = (
    "Can you segment {phrase} in this image? Please generate the segmentation mask.",
    "Please segment {phrase} in this image.",
    "What is {phrase} in this image? Please output the corresponding segmentation mask.",
    "Where is {phrase} in this image? Please output its segmentation mask.",
    "Please find {phrase} in this image and output its segmentation mask.",
)
REFERRING_ANSWERS = (
    "Sure, <SEG>.",
    "<SEG>.",
    "It is <SEG>.",
    "Sure, it is <SEG>.",
    "Sure, the segmentation mask is <SEG>.",
)
# Reasoning: sentence queries are followed by a request for the mask; phrase queries use the referring questions.
REASONING_SENTENCE_QUESTIONS = (
    "{sentence} Please output the corresponding segmentation mask.",
    "{sentence} Please respond with the corresponding segmentation mask.",
    "{sentence} Answer with the segmentation mask of the target.",
)
REASONING_EXPLANATORY_QUESTIONS = (
    "{sentence} Please explain why and output the corresponding segmentation mask.",
    "{sentence} Please give the reason and output the corresponding segmentation mask.",
)
REASONING_ANSWERS = ("It is <SEG>.", "<SEG>.", "Sure, <SEG>.", "Sure, it is <SEG>.")
REASONING_EXPLANATION_ANSWERS = (
    "{explanation} And it is <SEG>.",
    "{explanation} And <SEG>.",
    "{explanation} And the segmentation mask is <SEG>.",
)
GCG_QUESTIONS = (
    "Can you provide a brief description of the this image? "
    "Please output interleaved segmentation masks for the corresponding phrases.",
    "Please describe this image briefly and output interleaved segmentation masks for the phrases you mention.",
    "Could you give a short caption of this image with interleaved segmentation masks for its grounded phrases?",
)
GCG_ANSWER_SUFFIXES = ("And <SEG>.", "<SEG>.", "The segmentation mask is <SEG>.", "And the segmentation mask is <SEG>.")
VISUAL_PROMPT_QUESTIONS = (
    "Can you segment the image based on the following regions: {regions}? "
    "Please output the corresponding segmentation mask.",
    "Please segment the image according to these regions: {regions}. Output the corresponding segmentation masks.",
    "Which objects do these regions point to: {regions}? Please output their segmentation masks.",
)
# The single-region question of the official demo configs; used for training variety on interactive samples.
SINGLE_REGION_QUESTIONS = (
    "Can you segment the {regions} in this image? Please output the corresponding segmentation mask.",
)

_RESERVED = (IMAGE_TOKEN, REGION_TOKEN, SEG_TOKEN, PHRASE_START_TOKEN, PHRASE_END_TOKEN)


@dataclass(frozen=True)
class TaskPrompt:
    """A request turned into chat turns, plus what post-processing needs to read the answer.

    `class_names[k]` names condition k (the k-th `<p>...</p>` of the text): a category, an expression, a query or
    a visual prompt. `visual_prompts` follow the order of the `<region>` placeholders.
    """

    task: str
    turns: tuple[Turn, ...]
    class_names: tuple[str, ...]
    visual_prompts: tuple[VisualPrompt, ...] = ()
    label_ids_to_fuse: frozenset[int] = frozenset()

    @property
    def generate(self) -> bool:
        """True when the model must generate the last answer (GCG, conversation) rather than read it."""
        return self.turns[-1].assistant is None


def phrase(text: str) -> str:
    """Wrap text as a condition: `<p>text</p>`."""
    return f"{PHRASE_START_TOKEN}{text}{PHRASE_END_TOKEN}"


def clean_category_name(name: str) -> str:
    """The official category tagging: drop -merged/-other/-stuff, '-' -> ' ', lower case ("wall-other-merged" ->
    "wall")."""
    for suffix in ("-merged", "-other", "-stuff"):
        name = name.replace(suffix, "")
    return " ".join(name.replace("-", " ").split()).lower()


def parse_category_prompt(text: str) -> tuple[list[str], list[str]]:
    """Parse the demo syntax "ins: person, dog; sem: sky, grass" into (categories in order, stuff categories).

    Names without a prefix are things. Empty names are ignored.
    """
    categories: list[str] = []
    stuff: list[str] = []
    for group in text.split(";"):
        prefix, sep, names = group.partition(":")
        is_stuff = bool(sep) and prefix.strip().lower() in {"sem", "stuff", "semantic"}
        if not sep:
            names = group
        elif prefix.strip().lower() not in {"ins", "thing", "things", "instance", "sem", "stuff", "semantic"}:
            raise ValueError(f"Unknown category group {prefix.strip()!r}: use 'ins:' for things and 'sem:' for stuff.")
        for name in (n.strip() for n in names.split(",")):
            if name:
                categories.append(name)
                if is_stuff:
                    stuff.append(name)
    return categories, stuff


def pick(options: Sequence[str], training: bool, rng: Rng | None) -> str:
    """The fixed first option at inference, a random one when training."""
    if not training:
        return options[0]
    if rng is None:
        rng = random.Random()
    if isinstance(rng, np.random.Generator):
        return options[int(rng.integers(len(options)))]
    return options[rng.randrange(len(options))]


def _check_text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be a non-empty string, got {value!r}.")
    for token in _RESERVED:
        if token in value:
            raise ValueError(f"{what} {value!r} contains the reserved token {token}.")
    return value.strip()


def _as_list(value: str | Sequence[str], what: str) -> list[str]:
    items = [value] if isinstance(value, str) else list(value)
    if not items:
        raise ValueError(f"At least one {what} is needed.")
    return [_check_text(item, what.capitalize()) for item in items]


@dataclass(frozen=True)
class GenericSegmentationRequest:
    """Panoptic, semantic, instance or open-vocabulary segmentation over a list of category names.

    All four share one prompt; `task` only picks the post-processing. `stuff_categories` (names or indices) are
    merged into one segment per class by panoptic post-processing. Names are cleaned as in training
    (`clean_category_name`) unless `clean_names=False`; the readable labels keep the caller's spelling.
    """

    categories: Sequence[str]
    task: str = "panoptic"
    stuff_categories: Collection[str | int] = ()
    clean_names: bool = True
    question: str | None = None
    answer: str | None = None

    def to_prompt(self, training: bool = False, rng: Rng | None = None) -> TaskPrompt:
        if self.task not in GENERIC_TASKS:
            raise ValueError(f"A generic segmentation task is one of {GENERIC_TASKS}, got {self.task!r}.")
        names = _as_list(self.categories, "category")
        shown = [clean_category_name(n) if self.clean_names else n for n in names]
        categories = ", ".join(phrase(n) for n in shown)
        question = (self.question or pick(GENERIC_QUESTIONS, training, rng)).format(categories=categories)
        answer = self.answer or pick(SEGMENTATION_ANSWERS, training, rng)
        return TaskPrompt(
            task=self.task,
            turns=(Turn(question, answer),),
            class_names=tuple(names),
            label_ids_to_fuse=frozenset(_stuff_indices(self.stuff_categories, names)),
        )


def _stuff_indices(stuff: Collection[str | int], names: list[str]) -> set[int]:
    indices = set()
    for item in stuff:
        if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            if not 0 <= int(item) < len(names):
                raise ValueError(f"Stuff category index {item} is out of range for {len(names)} categories.")
            indices.add(int(item))
        elif item in names:
            indices.add(names.index(item))
        else:
            raise ValueError(f"Stuff category {item!r} is not among the categories {names}.")
    return indices


@dataclass(frozen=True)
class ReferringRequest:
    """Referring segmentation: one mask per expression. Several expressions become a multi-turn chat with one
    `<SEG>` per turn (expressions are lower-cased, as in training)."""

    expressions: str | Sequence[str]
    question: str | None = None
    answer: str | None = None

    def to_prompt(self, training: bool = False, rng: Rng | None = None) -> TaskPrompt:
        expressions = _as_list(self.expressions, "expression")
        turns = tuple(
            Turn(
                (self.question or pick(REFERRING_QUESTIONS, training, rng)).format(phrase=phrase(e.lower())),
                self.answer or pick(REFERRING_ANSWERS, training, rng),
            )
            for e in expressions
        )
        return TaskPrompt(task="referring", turns=turns, class_names=tuple(expressions))


@dataclass(frozen=True)
class ReasoningRequest:
    """Reasoning segmentation: one mask per query. Queries are sentences by default (`is_sentence`); short phrase
    queries use the referring questions. `explanations` (training only) are taught before the `<SEG>` answer."""

    queries: str | Sequence[str]
    is_sentence: bool | Sequence[bool] = True
    explanations: Sequence[str | None] | None = None

    def to_prompt(self, training: bool = False, rng: Rng | None = None) -> TaskPrompt:
        queries = _as_list(self.queries, "query")
        flags = [self.is_sentence] * len(queries) if isinstance(self.is_sentence, bool) else list(self.is_sentence)
        explanations = list(self.explanations) if self.explanations is not None else [None] * len(queries)
        if len(flags) != len(queries) or len(explanations) != len(queries):
            raise ValueError("`is_sentence` and `explanations` need one entry per query.")
        turns = []
        for query, is_sentence, explanation in zip(queries, flags, explanations):
            if explanation:
                question = pick(REASONING_EXPLANATORY_QUESTIONS, training, rng).format(sentence=phrase(query))
                answer = pick(REASONING_EXPLANATION_ANSWERS, training, rng).format(explanation=explanation.strip())
            elif is_sentence:
                question = pick(REASONING_SENTENCE_QUESTIONS, training, rng).format(sentence=phrase(query))
                answer = pick(REASONING_ANSWERS, training, rng)
            else:
                question = pick(REFERRING_QUESTIONS, training, rng).format(phrase=phrase(query))
                answer = pick(REASONING_ANSWERS, training, rng)
            turns.append(Turn(question, answer))
        return TaskPrompt(task="reasoning", turns=tuple(turns), class_names=tuple(queries))


@dataclass(frozen=True)
class GCGRequest:
    """Grounded conversation generation: the model writes a caption with `<p>phrase</p>` spans and one `<SEG>`.

    At inference leave `caption` empty (the answer is generated). For training pass the caption and its grounded
    `phrases`, as `(start, end)` character spans or as substrings found left to right; the answer is then built as in
    training: lower-cased caption, each phrase wrapped as `<p>phrase</p> `, then " And <SEG>." (or a variant).
    """

    caption: str | None = None
    phrases: Sequence[tuple[int, int] | str] = ()

    def to_prompt(self, training: bool = False, rng: Rng | None = None) -> TaskPrompt:
        question = pick(GCG_QUESTIONS, training, rng)
        if self.caption is None:
            return TaskPrompt(task="gcg", turns=(Turn(question, None),), class_names=())
        caption = _check_text(self.caption, "The caption")
        spans = _phrase_spans(caption, self.phrases)
        pieces, previous = [], 0
        for start, end in spans:
            pieces.append(caption[previous:start].lower() + phrase(caption[start:end].lower()) + " ")
            previous = end
        pieces.append(caption[previous:].lower())
        answer = "".join(pieces) + " " + pick(GCG_ANSWER_SUFFIXES, training, rng)
        names = tuple(caption[start:end] for start, end in spans)
        return TaskPrompt(task="gcg", turns=(Turn(question, answer),), class_names=names)


def _phrase_spans(caption: str, phrases: Sequence[tuple[int, int] | str]) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    search_from = 0
    for item in phrases:
        if isinstance(item, str):
            start = caption.find(item, search_from)
            if start < 0:
                raise ValueError(f"The phrase {item!r} does not occur in the caption (after position {search_from}).")
            span = (start, start + len(item))
            search_from = span[1]
        else:
            span = (int(item[0]), int(item[1]))
            if not 0 <= span[0] < span[1] <= len(caption):
                raise ValueError(f"The phrase span {item} is outside the caption of length {len(caption)}.")
        spans.append(span)
    # As in the official GCG data: phrases in reading order, overlapping ones dropped.
    kept: list[tuple[int, int]] = []
    for span in sorted(spans):
        if not kept or span[0] >= kept[-1][1]:
            kept.append(span)
    return kept


@dataclass(frozen=True)
class InteractiveRequest:
    """Interactive segmentation: one visual prompt (point, scribble, box or mask) -> the object it designates."""

    prompt: Any
    name: str = "region"

    def to_prompt(self, training: bool = False, rng: Rng | None = None) -> TaskPrompt:
        regions = phrase(REGION_TOKEN)
        questions = VISUAL_PROMPT_QUESTIONS + SINGLE_REGION_QUESTIONS if training else VISUAL_PROMPT_QUESTIONS
        question = pick(questions, training, rng).format(regions=regions)
        answer = pick(SEGMENTATION_ANSWERS, training, rng)
        return TaskPrompt(
            task="interactive",
            turns=(Turn(question, answer),),
            class_names=(self.name,),
            visual_prompts=(VisualPrompt.coerce(self.prompt),),
        )


@dataclass(frozen=True)
class VGDRequest:
    """Visual grounded detection: every object like each visual prompt. Prompts may come from another image
    (cross-image VGD: give the prompt an `image`). `names` label the prompts in the results."""

    prompts: Sequence[Any]
    names: Sequence[str] | None = None

    def to_prompt(self, training: bool = False, rng: Rng | None = None) -> TaskPrompt:
        given = self.prompts if isinstance(self.prompts, Sequence) else [self.prompts]
        prompts = tuple(VisualPrompt.coerce(p) for p in given)
        if not prompts:
            raise ValueError("VGD needs at least one visual prompt.")
        names = tuple(self.names) if self.names is not None else tuple(f"region {i}" for i in range(len(prompts)))
        if len(names) != len(prompts):
            raise ValueError(f"Got {len(names)} names for {len(prompts)} visual prompts.")
        regions = ", ".join(phrase(REGION_TOKEN) for _ in prompts)
        question = pick(VISUAL_PROMPT_QUESTIONS, training, rng).format(regions=regions)
        answer = pick(SEGMENTATION_ANSWERS, training, rng)
        return TaskPrompt(task="vgd", turns=(Turn(question, answer),), class_names=names, visual_prompts=prompts)


@dataclass(frozen=True)
class ConversationRequest:
    """A multi-turn chat about the image, given as `[{"role": "user"|"assistant", "content": str}, ...]` (or
    `Turn`s). Assistant turns are teacher-forced; a trailing user turn is answered by generation."""

    messages: Sequence[Mapping[str, str] | Turn]
    visual_prompts: Sequence[Any] = field(default_factory=tuple)

    def to_prompt(self, training: bool = False, rng: Rng | None = None) -> TaskPrompt:
        turns = _messages_to_turns(self.messages)
        region_count = sum(t.user.count(REGION_TOKEN) + (t.assistant or "").count(REGION_TOKEN) for t in turns)
        prompts = tuple(VisualPrompt.coerce(p) for p in self.visual_prompts)
        if region_count != len(prompts):
            raise ValueError(
                f"The conversation has {region_count} <region> placeholders but {len(prompts)} visual prompts."
            )
        names = tuple(re.findall(f"{re.escape(PHRASE_START_TOKEN)}(.*?){re.escape(PHRASE_END_TOKEN)}",
                                 " ".join(t.user + " " + (t.assistant or "") for t in turns)))
        return TaskPrompt(task="conversation", turns=turns, class_names=names, visual_prompts=prompts)


def _messages_to_turns(messages: Sequence[Mapping[str, str] | Turn]) -> tuple[Turn, ...]:
    if not messages:
        raise ValueError("A conversation needs at least one message.")
    if all(isinstance(m, Turn) for m in messages):
        return tuple(messages)  # type: ignore[arg-type]
    turns: list[Turn] = []
    pending: str | None = None
    for message in messages:
        if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
            raise ValueError(f"Each message needs 'role' and 'content', got {message!r}.")
        role, content = message["role"], message["content"]
        if not isinstance(content, str):
            raise ValueError(f"Message content must be text, got {type(content).__name__}.")
        if role == "system":
            raise ValueError("System messages are not part of the X-SAM template.")
        if role == "user":
            if pending is not None:
                raise ValueError("Two user messages in a row: user and assistant messages must alternate.")
            pending = content
        elif role == "assistant":
            if pending is None:
                raise ValueError("An assistant message must follow a user message.")
            turns.append(Turn(pending, content))
            pending = None
        else:
            raise ValueError(f"Unknown role {role!r}: use 'user' or 'assistant'.")
    if pending is not None:
        turns.append(Turn(pending, None))
    return tuple(turns)


TaskRequest = Union[
    GenericSegmentationRequest,
    ReferringRequest,
    ReasoningRequest,
    GCGRequest,
    InteractiveRequest,
    VGDRequest,
    ConversationRequest,
]


def request_for_task(task: str, **arguments: Any) -> TaskRequest:
    """Build the request of `task` from keyword arguments (the processor's task keywords).

    panoptic / semantic / instance / open_vocabulary: `categories`, optional `stuff_categories`;
    referring: `expressions`; reasoning: `queries`; gcg: nothing (or `caption`, `phrases` to train);
    interactive: `visual_prompts` (one); vgd: `visual_prompts` and optional `prompt_names`;
    conversation: `conversation` (messages) or `text`.
    """
    given = {k: v for k, v in arguments.items() if v is not None}

    def take(*names: str, required: tuple[str, ...] = ()) -> dict[str, Any]:
        extra = set(given) - set(names)
        if extra:
            raise ValueError(f"Task {task!r} does not use {sorted(extra)}.")
        missing = [n for n in required if n not in given]
        if missing:
            raise ValueError(f"Task {task!r} needs {missing}.")
        return {n: given[n] for n in names if n in given}

    if task in GENERIC_TASKS:
        kw = take("categories", "stuff_categories", required=("categories",))
        return GenericSegmentationRequest(task=task, **kw)
    if task == "referring":
        return ReferringRequest(**take("expressions", required=("expressions",)))
    if task == "reasoning":
        return ReasoningRequest(**take("queries", required=("queries",)))
    if task == "gcg":
        return GCGRequest(**take("caption", "phrases"))
    if task == "interactive":
        kw = take("visual_prompts", required=("visual_prompts",))
        prompts = kw["visual_prompts"]
        if isinstance(prompts, Sequence) and not isinstance(prompts, (str, Mapping)):
            if len(prompts) != 1:
                raise ValueError(
                    f"Interactive segmentation takes one visual prompt per sample, got {len(prompts)}; "
                    "use task='vgd' for several, or one sample per prompt."
                )
            prompts = prompts[0]
        return InteractiveRequest(prompt=prompts)
    if task == "vgd":
        kw = take("visual_prompts", "prompt_names", required=("visual_prompts",))
        prompts = kw["visual_prompts"]
        if not isinstance(prompts, Sequence) or isinstance(prompts, Mapping):
            prompts = [prompts]
        return VGDRequest(prompts=prompts, names=kw.get("prompt_names"))
    if task == "conversation":
        kw = take("conversation", "text", "visual_prompts")
        if ("conversation" in kw) == ("text" in kw):
            raise ValueError("The conversation task needs either `conversation` (messages) or `text`.")
        messages = kw.get("conversation") or [{"role": "user", "content": kw["text"]}]
        return ConversationRequest(messages=messages, visual_prompts=kw.get("visual_prompts", ()))
    raise ValueError(f"Unknown task {task!r}; expected one of {TASKS}.")
