"""The texts of a scene: referring expressions, reasoning questions, grounded captions and chat questions.

All are built from :mod:`.vocabulary` templates with a seeded generator, and each is true of the scene by
construction:

* a referring expression names attributes of its target (size, colour, shape) and, when those match two or more
  objects, adds a relation that only the target satisfies: a superlative among the matching objects (largest,
  smallest) or a binary relation to a uniquely described anchor (left of, right of, above, below, next to);
* a reasoning question describes its target by what the shape or colour is like (never its name), by the sky's colour,
  by its size, or (for stuff) by what happens there, using only facts that single it out;
* a caption lists every object (identical ones grouped: "two red circles") and every stuff region; each phrase is
  grounded to its masks;
* a chat question has a short exact answer read off the scene (a count, a colour, a shape, an object, yes or no).
"""

from __future__ import annotations

import itertools
import string
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .scene import Scene, SceneObject, StuffRegion
from .vocabulary import (BINARY_RELATIONS, CAPTION_TEMPLATES, CHAT_QUESTIONS, COLOUR_CLUES, COLOURS,
                         EXPLANATION_TEMPLATES, NUMBER_WORDS, REASONING_PHRASE_TEMPLATES,
                         REASONING_SENTENCE_TEMPLATES, REASONING_STUFF_PHRASE_TEMPLATES,
                         REASONING_STUFF_SENTENCE_TEMPLATES, REFERRING_NOUN, SHAPE_CLUES, SHAPE_PLURALS, SHAPES,
                         SIZE_CLUES, SIZES, SKY_COLOUR_CLUE, STUFF, STUFF_CLUES, SUPERLATIVES)

POSITION_MARGIN = 6.0  # px between centroids for "left of" / "above" ... to hold
NEAR_DISTANCE = 3.0  # px: "next to" holds when the masks come this close
FAR_DISTANCE = 10.0  # px: a competing candidate must be at least this far for "next to" to single out the target
SUPERLATIVE_RATIO = 1.3  # visible-area ratio for "largest" / "smallest"
SENTENCES_PER_REF = 2
QUERIES_PER_REASONING = 2
STUFF_REASONING_PROBABILITY = 0.2
CHAT_TURNS = (3, 4)
# Turns of a training chat record with `dense_rng`: a from-scratch LLM gets ~1 object-attribute question per image from
# 3-4 turns, too few to learn to read an object's colour or shape from the image tokens.
DENSE_CHAT_TURNS = 12
# "identify" turns added to a training chat record with `identify_turns`: each names an object the way a referring
# expression does and asks what it is, so its answer must be read from the named object's image tokens.
IDENTIFY_CHAT_TURNS = 6


# ---- attributes and relations ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Attributes:
    """An attribute description; ``None`` fields are left unsaid."""

    size: str | None = None
    colour: str | None = None
    shape: str | None = None

    def matches(self, obj: SceneObject) -> bool:
        return ((self.size is None or obj.size == self.size) and (self.colour is None or obj.colour == self.colour)
                and (self.shape is None or obj.shape == self.shape))

    def words(self, superlative: str | None = None) -> str:
        parts = [superlative, self.size, self.colour, self.shape or REFERRING_NOUN]
        return " ".join(p for p in parts if p)

    def text(self, superlative: str | None = None) -> str:
        return f"the {self.words(superlative)}"


# (size, colour, shape) combinations used to describe an object, the most natural first.
ATTRIBUTE_COMBINATIONS: tuple[tuple[bool, bool, bool], ...] = (
    (False, True, True), (False, False, True), (True, True, True), (True, False, True), (False, True, False),
    (True, True, False),
)
ANCHOR_COMBINATIONS = ATTRIBUTE_COMBINATIONS[:3]


def attributes_of(obj: SceneObject, combination: tuple[bool, bool, bool]) -> Attributes:
    with_size, with_colour, with_shape = combination
    return Attributes(size=obj.size if with_size else None, colour=obj.colour if with_colour else None,
                      shape=obj.shape if with_shape else None)


def matching(objects: list[SceneObject], attributes: Attributes) -> list[SceneObject]:
    return [obj for obj in objects if attributes.matches(obj)]


class Geometry:
    """Centroids and mask distances of a scene's objects, computed once."""

    def __init__(self, objects: list[SceneObject]) -> None:
        self.objects = objects
        self.centroids = {id(o): o.centroid for o in objects}
        self._distance_maps: dict[int, np.ndarray] = {}

    def _distance_to(self, obj: SceneObject) -> np.ndarray:
        if id(obj) not in self._distance_maps:
            self._distance_maps[id(obj)] = ndimage.distance_transform_edt(~obj.mask)
        return self._distance_maps[id(obj)]

    def gap(self, a: SceneObject, b: SceneObject) -> float:
        """Smallest distance between a pixel of ``a`` and a pixel of ``b`` (0 when they touch)."""
        return float(max(self._distance_to(b)[a.mask].min() - 1.0, 0.0))

    def signed(self, relation: str, target: SceneObject, anchor: SceneObject) -> float:
        """How far ``relation(target, anchor)`` holds: positional relations in px of centroid difference."""
        (tx, ty), (ax, ay) = self.centroids[id(target)], self.centroids[id(anchor)]
        return {"left": ax - tx, "right": tx - ax, "above": ay - ty, "below": ty - ay}[relation]

    def holds(self, relation: str, target: SceneObject, anchor: SceneObject) -> bool:
        if relation == "near":
            return self.gap(target, anchor) <= NEAR_DISTANCE
        return self.signed(relation, target, anchor) >= POSITION_MARGIN

    def clearly_not(self, relation: str, other: SceneObject, anchor: SceneObject) -> bool:
        if relation == "near":
            return self.gap(other, anchor) >= FAR_DISTANCE
        return self.signed(relation, other, anchor) <= 0.0


def superlative_holds(superlative: str, target: SceneObject, candidates: list[SceneObject]) -> bool:
    others = [c.area for c in candidates if c is not target]
    if not others:
        return False
    if superlative == "largest":
        return target.area >= SUPERLATIVE_RATIO * max(others)
    return target.area * SUPERLATIVE_RATIO <= min(others)


def unique_description(obj: SceneObject, objects: list[SceneObject],
                       combinations: tuple[tuple[bool, bool, bool], ...] = ANCHOR_COMBINATIONS) -> Attributes | None:
    """The first attribute description (in ``combinations`` order) that matches ``obj`` only."""
    for combination in combinations:
        attributes = attributes_of(obj, combination)
        if matching(objects, attributes) == [obj]:
            return attributes
    return None


# ---- referring -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReferringExpression:
    """One expression; ``relation`` is a key of BINARY_RELATIONS or SUPERLATIVES, ``anchor`` its anchor's words."""

    attributes: Attributes
    relation: str | None = None
    anchor: Attributes | None = None

    @property
    def text(self) -> str:
        if self.relation in SUPERLATIVES:
            return self.attributes.text(superlative=SUPERLATIVES[self.relation])
        if self.relation is not None and self.anchor is not None:
            return f"{self.attributes.text()} {BINARY_RELATIONS[self.relation]} {self.anchor.text()}"
        return self.attributes.text()


def referring_candidates(target: SceneObject, objects: list[SceneObject],
                         geometry: Geometry) -> tuple[list[ReferringExpression], list[ReferringExpression]]:
    """(attribute-only expressions that single out ``target``, relational ones whose attributes alone do not)."""
    unique, relational = [], []
    anchors = {id(a): unique_description(a, objects) for a in objects if a is not target}
    for combination in ATTRIBUTE_COMBINATIONS:
        attributes = attributes_of(target, combination)
        candidates = matching(objects, attributes)
        if len(candidates) == 1:
            unique.append(ReferringExpression(attributes))
            continue
        if attributes.size is None:
            relational += [ReferringExpression(attributes, superlative) for superlative in SUPERLATIVES
                           if superlative_holds(superlative, target, candidates)]
        rivals = [c for c in candidates if c is not target]
        for anchor in objects:
            anchor_words = anchors.get(id(anchor))
            if anchor is target or anchor_words is None or attributes.matches(anchor):
                continue
            for relation in BINARY_RELATIONS:
                if geometry.holds(relation, target, anchor) and all(geometry.clearly_not(relation, r, anchor)
                                                                     for r in rivals):
                    relational.append(ReferringExpression(attributes, relation, anchor_words))
    return unique, relational


def referring_expressions(scene: Scene, rng: np.random.Generator) -> list[tuple[int, list[str]]]:
    """``[(object position in scene.objects, [sentence, ...]), ...]`` for every object that can be referred to.

    A relational sentence comes first when there is one (these are the ones the relation is needed for), then an
    attribute-only one, else a second relational one.
    """
    geometry = Geometry(scene.objects)
    refs = []
    for position, target in enumerate(scene.objects):
        unique, relational = referring_candidates(target, scene.objects, geometry)
        chosen: list[ReferringExpression] = []
        if relational:
            chosen.append(relational[int(rng.integers(len(relational)))])
        pool = unique if unique else [r for r in relational if r not in chosen]
        while pool and len(chosen) < SENTENCES_PER_REF:
            pick = pool.pop(int(rng.integers(len(pool))))
            if pick.text not in {c.text for c in chosen}:
                chosen.append(pick)
        if chosen:
            refs.append((position, [c.text for c in chosen]))
    return refs


def parse_referring(sentence: str) -> ReferringExpression:
    """Inverse of :attr:`ReferringExpression.text` (used by checks and tests)."""
    def parse_attributes(text: str) -> tuple[Attributes, str | None]:
        tokens = text.split()
        if tokens[:1] == ["the"]:
            tokens = tokens[1:]
        superlative = tokens.pop(0) if tokens and tokens[0] in SUPERLATIVES else None
        size = tokens.pop(0) if tokens and tokens[0] in SIZES else None
        colour = tokens.pop(0) if tokens and tokens[0] in COLOURS else None
        if len(tokens) != 1 or tokens[0] not in (*SHAPES, REFERRING_NOUN):
            raise ValueError(f"not an attribute description: {text!r}")
        return Attributes(size, colour, None if tokens[0] == REFERRING_NOUN else tokens[0]), superlative

    for relation, words in BINARY_RELATIONS.items():
        marker = f" {words} "
        if marker in sentence:
            left, right = sentence.split(marker, 1)
            return ReferringExpression(parse_attributes(left)[0], relation, parse_attributes(right)[0])
    attributes, superlative = parse_attributes(sentence)
    return ReferringExpression(attributes, superlative)


# ---- reasoning -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReasoningQuestion:
    """Queries about one target (an object or a stuff region), all of one style (sentence or phrase)."""

    target: SceneObject | StuffRegion
    queries: list[str]
    is_sentence: bool
    explanation: str


def _object_clue_sets(target: SceneObject, scene: Scene) -> list[list[tuple[str, str]]]:
    """Sets of (kind, key) facts that single ``target`` out; kinds: shape, colour, sky, size."""
    others = [o for o in scene.objects if o is not target]
    shape_unique = all(o.shape != target.shape for o in others)
    colour_unique = all(o.colour != target.colour for o in others)
    sets: list[list[tuple[str, str]]] = []
    if shape_unique:
        sets.append([("shape", target.shape)])
    if colour_unique:
        sets.append([("colour", target.colour)])
        if scene.sky_colour == target.colour:
            sets.append([("sky", target.colour)])
    if not shape_unique and not colour_unique and all((o.shape, o.colour) != (target.shape, target.colour)
                                                      for o in others):
        sets.append([("shape", target.shape), ("colour", target.colour)])
    if others:
        for superlative in SIZE_CLUES:
            if superlative_holds(superlative, target, scene.objects):
                sets.append([("size", superlative)])
    return sets


def _clue_text(kind: str, key: str, rng: np.random.Generator) -> str:
    options = {"shape": SHAPE_CLUES, "colour": COLOUR_CLUES, "size": SIZE_CLUES, "stuff": STUFF_CLUES}
    if kind == "sky":
        return SKY_COLOUR_CLUE
    choices = options[kind][key]
    return choices[int(rng.integers(len(choices)))]


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def reasoning_question(scene: Scene, rng: np.random.Generator) -> ReasoningQuestion:
    """One reasoning target of the scene with :data:`QUERIES_PER_REASONING` queries."""
    object_targets = [(o, sets) for o in scene.objects if (sets := _object_clue_sets(o, scene))]
    stuff_targets = [r for r in scene.stuff if r.area >= 300] or list(scene.stuff)
    is_sentence = bool(rng.random() < 0.5)
    if object_targets and rng.random() >= STUFF_REASONING_PROBABILITY:
        target, clue_sets = object_targets[int(rng.integers(len(object_targets)))]
        templates = REASONING_SENTENCE_TEMPLATES if is_sentence else REASONING_PHRASE_TEMPLATES
        queries: list[str] = []
        explanation_clue = ""
        for _ in range(8 * QUERIES_PER_REASONING):  # distinct queries; a few draws suffice
            clue_set = clue_sets[int(rng.integers(len(clue_sets)))]
            clue = " and ".join(_clue_text(kind, key, rng) for kind, key in clue_set)
            query = _pick(rng, templates).format(clue=clue)
            if query not in queries:
                queries.append(query)
                explanation_clue = explanation_clue or clue
            if len(queries) == QUERIES_PER_REASONING:
                break
        description = f"{target.colour} {target.shape}"
    else:
        target = stuff_targets[int(rng.integers(len(stuff_targets)))]
        templates = REASONING_STUFF_SENTENCE_TEMPLATES if is_sentence else REASONING_STUFF_PHRASE_TEMPLATES
        clues = list(STUFF_CLUES[target.name])
        rng.shuffle(clues)
        queries = [_pick(rng, templates).format(clue=clue) for clue in clues[:QUERIES_PER_REASONING]]
        explanation_clue, description = clues[0], target.name
    explanation = _pick(rng, EXPLANATION_TEMPLATES).format(description=description, clue=explanation_clue)
    return ReasoningQuestion(target=target, queries=queries, is_sentence=is_sentence, explanation=explanation)


# ---- grounded captions -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GroundedPhrase:
    text: str
    start: int
    end: int
    members: tuple[SceneObject | StuffRegion, ...]


def _article(next_word: str) -> str:
    return "an" if next_word[0] in "aeiou" else "a"


def _object_phrase(attributes: tuple[str, str, str], count: int) -> str:
    size, colour, shape = attributes
    if count > 1:
        return f"{NUMBER_WORDS[count]} {size} {colour} {SHAPE_PLURALS[shape]}"
    return f"{_article(size)} {size} {colour} {shape}"


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def grounded_caption(scene: Scene, rng: np.random.Generator) -> tuple[str, list[GroundedPhrase]]:
    """A caption naming every object (left to right, identical ones grouped) and every stuff region."""
    groups: dict[tuple[str, str, str], list[SceneObject]] = {}
    for obj in sorted(scene.objects, key=lambda o: o.centroid[0]):
        groups.setdefault((obj.size, obj.colour, obj.shape), []).append(obj)
    object_phrases = [(_object_phrase(key, len(members)), tuple(members)) for key, members in groups.items()]
    stuff_phrases = [(f"the {scene.sky_colour} sky" if r.name == "sky" else f"the {r.name}", (r,))
                     for r in scene.stuff]
    template = _pick(rng, CAPTION_TEMPLATES)
    if not object_phrases:
        template = "A picture of {stuff}."
    pieces = {"objects": object_phrases, "stuff": stuff_phrases}
    caption, phrases = "", []
    for literal, field_name, _, _ in string.Formatter().parse(template):
        caption += literal
        if field_name is None:
            continue
        items = pieces[field_name]
        for k, (text, members) in enumerate(items):
            if k:
                caption += " and " if k == len(items) - 1 else ", "
            if not caption:
                text = text[0].upper() + text[1:]
            phrases.append(GroundedPhrase(text, len(caption), len(caption) + len(text), members))
            caption += text
    return caption, phrases


# ---- chat ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ChatTurn:
    kind: str
    question: str
    answer: str


def _left_right_questions(scene: Scene, geometry: Geometry) -> list[ChatTurn]:
    turns = []
    for anchor in scene.objects:
        words = unique_description(anchor, scene.objects, ((False, True, True), (False, False, True)))
        if words is None:
            continue
        for relation in ("left", "right"):
            holding = [o for o in scene.objects if o is not anchor and geometry.holds(relation, o, anchor)]
            others = [o for o in scene.objects if o is not anchor and o not in holding]
            if len(holding) == 1 and all(geometry.clearly_not(relation, o, anchor) for o in others):
                kind = f"{relation}_of"
                question = CHAT_QUESTIONS[kind][0].format(anchor=words.words())
                turns.append(ChatTurn(kind, question, f"{holding[0].colour} {holding[0].shape}"))
    return turns


def chat_turns(scene: Scene, rng: np.random.Generator, dense_rng: np.random.Generator | None = None,
               max_turns: int = DENSE_CHAT_TURNS) -> list[ChatTurn]:
    """3 or 4 question/answer pairs, each of a different kind, with short exact answers.

    With ``dense_rng``, the scene's other questions follow them (any kind, in an order drawn from ``dense_rng``) up to
    ``max_turns`` in all; ``rng`` is drawn exactly as without it, so the first turns and every other file of the
    world stay the same.
    """
    objects = scene.objects
    options: dict[str, list[ChatTurn]] = {}

    def add(kind: str, answer: str, **fields: str) -> None:
        question = _pick(rng, CHAT_QUESTIONS[kind]).format(**fields)
        options.setdefault(kind, []).append(ChatTurn(kind, question, answer))

    shapes = [o.shape for o in objects]
    colours = [o.colour for o in objects]
    add("count_all", str(len(objects)))
    for shape in SHAPES:
        add("count_shape", str(shapes.count(shape)), plural=SHAPE_PLURALS[shape])
    for colour in sorted(set(colours)):
        add("count_colour", str(colours.count(colour)), colour=colour)
    for obj in objects:
        if shapes.count(obj.shape) == 1:
            add("shape_colour", obj.colour, shape=obj.shape)
        if colours.count(obj.colour) == 1:
            add("colour_shape", obj.shape, colour=obj.colour)
    present = {(o.colour, o.shape) for o in objects}
    if present and rng.random() < 0.5:
        colour, shape = sorted(present)[int(rng.integers(len(present)))]
        add("exists", "yes", article=_article(colour), colour=colour, shape=shape)
    else:
        absent = [pair for pair in itertools.product(COLOURS, SHAPES) if pair not in present]
        colour, shape = absent[int(rng.integers(len(absent)))]
        add("exists", "no", article=_article(colour), colour=colour, shape=shape)
    stuff = str(rng.choice(STUFF[1:]))  # "Is there water / ground"; the sky question is asked as its colour
    add("exists_stuff", "yes" if stuff in scene.stuff_names else "no", stuff=stuff)
    if scene.sky_colour is not None:
        add("sky_colour", scene.sky_colour)
    for turn in _left_right_questions(scene, Geometry(objects)):
        options.setdefault(turn.kind, []).append(turn)

    kinds = sorted(options)
    rng.shuffle(kinds)
    count = int(rng.integers(CHAT_TURNS[0], CHAT_TURNS[1] + 1))
    turns = [options[kind][int(rng.integers(len(options[kind])))] for kind in kinds[:count]]
    if dense_rng is None:
        return turns
    rest = [turn for kind in sorted(options) for turn in options[kind] if turn not in turns]
    return turns + [rest[i] for i in dense_rng.permutation(len(rest))[:max(max_turns - len(turns), 0)]]


def identify_turns(scene: Scene, rng: np.random.Generator, max_turns: int = IDENTIFY_CHAT_TURNS) -> list[ChatTurn]:
    """Up to ``max_turns`` questions "What is <referring expression>?" answered "<colour> <shape>".

    Only expressions that leave out the object's colour or its shape are asked ("What is the object left of the red
    star?" -> "blue circle"), so the answer is never a copy of the question: the LLM must find the object the
    expression names (by attributes, a superlative or a relation) and read the missing attribute from its image tokens.
    """
    geometry = Geometry(scene.objects)
    turns = []
    for target in scene.objects:
        unique, relational = referring_candidates(target, scene.objects, geometry)
        for expression in unique + relational:
            if expression.attributes.colour is None or expression.attributes.shape is None:
                question = CHAT_QUESTIONS["identify"][0].format(expression=expression.text)
                turns.append(ChatTurn("identify", question, f"{target.colour} {target.shape}"))
    return [turns[i] for i in rng.permutation(len(turns))[:max_turns]]
