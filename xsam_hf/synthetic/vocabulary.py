"""The closed vocabulary of the synthetic world: attributes, categories and every word its texts can use.

Everything the world says (panoptic category names, referring expressions, reasoning questions, GCG captions, chat
questions and answers, explanations) is built from the word lists and templates here, so the set of words is known in
advance: :data:`WORLD_VOCABULARY` lists it, and a tokenizer of a few hundred tokens covers it. The task prompt templates
of :mod:`xsam_hf.processing.prompts` ("Can you segment ...") are not part of it; a tokenizer needs those words too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

CANVAS_SIZE = 128
MAX_OBJECTS = 6

# Object colours: name -> base RGB. Saturated and far apart, so a colour word is learnable from a few pixels.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (205, 35, 35),
    "orange": (240, 135, 25),
    "yellow": (235, 215, 45),
    "green": (40, 160, 55),
    "blue": (35, 65, 205),
    "purple": (135, 55, 175),
    "white": (240, 240, 240),
    "black": (25, 25, 25),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "ring", "cross")
SHAPE_PLURALS: dict[str, str] = {shape: f"{shape}es" if shape == "cross" else f"{shape}s" for shape in SHAPES}
# Size class -> range of the half extent (pixels from the centre to the outline) on the 128 px canvas.
SIZES: dict[str, tuple[int, int]] = {"small": (8, 10), "medium": (12, 15), "large": (18, 22)}

# Stuff: sky above a (slightly wavy) horizon, ground and/or water below it.
STUFF: tuple[str, ...] = ("sky", "ground", "water")
# The sky's colour has a name shared with the object colours ("the thing with the same colour as the sky").
SKY_COLOURS: dict[str, tuple[int, int, int]] = {
    "blue": (125, 175, 230),
    "orange": (245, 185, 125),
    "white": (215, 220, 226),
}
GROUND_COLOURS: tuple[tuple[int, int, int], ...] = ((125, 98, 62), (104, 118, 60), (150, 128, 88))
WATER_COLOUR: tuple[int, int, int] = (45, 95, 160)

# Panoptic categories. Things are colour-agnostic shapes: the shape is what an object IS, the colour an attribute
# (COCO's "car" is a car whatever its paint). Colour x shape classes would give 48 sparse classes and a 51-name
# prompt, and colour is already taught by the referring, reasoning, GCG and chat data. Ids: things 1-6, stuff 7-9,
# so the contiguous order (sorted by id) is things then stuff, as in COCO.
THING_CATEGORIES: tuple[dict[str, object], ...] = tuple(
    {"id": index + 1, "name": shape, "isthing": 1, "supercategory": "shape"} for index, shape in enumerate(SHAPES))
STUFF_CATEGORIES: tuple[dict[str, object], ...] = tuple(
    {"id": len(SHAPES) + index + 1, "name": stuff, "isthing": 0, "supercategory": "stuff"}
    for index, stuff in enumerate(STUFF))
CATEGORIES: tuple[dict[str, object], ...] = THING_CATEGORIES + STUFF_CATEGORIES
CATEGORY_ID: dict[str, int] = {str(c["name"]): int(c["id"]) for c in CATEGORIES}  # type: ignore[arg-type]
CLASS_NAMES: tuple[str, ...] = tuple(str(c["name"]) for c in CATEGORIES)
"""The generic-segmentation class names a user can prompt, in contiguous-id order."""

# Referring relations. Binary ones take an anchor object; superlatives compare the candidates' visible areas.
BINARY_RELATIONS: dict[str, str] = {
    "left": "left of", "right": "right of", "above": "above", "below": "below", "near": "next to",
}
SUPERLATIVES: dict[str, str] = {"largest": "largest", "smallest": "smallest"}

NUMBER_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six")

# ---- reasoning clues: none names a shape, a colour or a stuff class ---------------------------------------------
# Each clue is a verb phrase that completes "the thing that ..." and "Which object in this picture ...?".
SHAPE_CLUES: dict[str, tuple[str, ...]] = {
    "circle": ("could roll down a hill", "looks like a full moon", "is round and has no hole"),
    "square": ("has four equal sides", "looks like a window", "has four corners and four equal sides"),
    "triangle": ("points up", "has three corners", "looks like a mountain peak"),
    "star": ("has five points", "would twinkle at night", "could sit on top of a tree"),
    "ring": ("has a hole in the middle", "could be worn on a finger", "looks like a donut"),
    "cross": ("looks like a plus sign", "has four arms", "marks a first aid kit"),
}
COLOUR_CLUES: dict[str, tuple[str, ...]] = {
    "red": ("has the colour of a ripe tomato", "has the colour of a fire truck"),
    "orange": ("has the colour of a carrot", "has the colour of a pumpkin"),
    "yellow": ("has the colour of a banana", "has the colour of a lemon"),
    "green": ("has the colour of fresh grass", "has the colour of a leaf"),
    "blue": ("has the colour of the deep sea", "has the colour of a sapphire"),
    "purple": ("has the colour of grapes", "has the colour of a plum"),
    "white": ("has the colour of snow", "has the colour of milk"),
    "black": ("has the colour of coal", "has the colour of a night without a moon"),
}
SKY_COLOUR_CLUE = "has the same colour as the sky"
SIZE_CLUES: dict[str, tuple[str, ...]] = {
    "largest": ("is bigger than everything else", "takes up the most space"),
    "smallest": ("is smaller than everything else", "takes up the least space"),
}
# Stuff targets: the clue names neither the stuff class nor a colour.
STUFF_CLUES: dict[str, tuple[str, ...]] = {
    "sky": ("is where birds fly", "is where clouds float"),
    "ground": ("is where you could walk", "is where a tree could grow"),
    "water": ("is where a fish could swim", "is where a boat could sail"),
}
REASONING_PHRASE_TEMPLATES: tuple[str, ...] = ("the thing that {clue}", "the object that {clue}",
                                               "something that {clue}")
REASONING_STUFF_PHRASE_TEMPLATES: tuple[str, ...] = ("the part of the scene that {clue}", "the area that {clue}")
REASONING_SENTENCE_TEMPLATES: tuple[str, ...] = ("Which object in this picture {clue}?",
                                                 "In this scene, what {clue}?",
                                                 "What is the thing in the image that {clue}?")
REASONING_STUFF_SENTENCE_TEMPLATES: tuple[str, ...] = ("Which part of this picture {clue}?",
                                                       "In this scene, which area {clue}?")
EXPLANATION_TEMPLATES: tuple[str, ...] = ("It is the {description}, because it {clue}.",
                                          "The {description} {clue}, so it is the answer.")

# ---- referring, captions and chat ----------------------------------------------------------------------------
REFERRING_NOUN = "object"  # the head noun when an expression does not name the shape ("the red object")
CAPTION_TEMPLATES: tuple[str, ...] = (
    "{objects} in front of {stuff}.",
    "A picture of {objects} with {stuff}.",
    "The scene shows {objects}, with {stuff}.",
)
PRETRAIN_QUESTIONS: tuple[str, ...] = ("Describe the image briefly.", "What is in this picture?",
                                       "Give a short description of the image.")
CHAT_QUESTIONS: dict[str, tuple[str, ...]] = {
    "count_shape": ("How many {plural} are there?", "How many {plural} can you see?"),
    "count_colour": ("How many {colour} objects are there?",),
    "count_all": ("How many objects are there?",),
    "shape_colour": ("What colour is the {shape}?", "Which colour does the {shape} have?"),
    "colour_shape": ("What shape is the {colour} object?",),
    "left_of": ("What is left of the {anchor}?",),
    "right_of": ("What is right of the {anchor}?",),
    "exists": ("Is there {article} {colour} {shape}?", "Is there {article} {colour} {shape} in the image?"),
    "exists_stuff": ("Is there {stuff} in the image?",),
    "sky_colour": ("What colour is the sky?",),
    # training chat only (write_world's identify_train_chat): an object named by a referring expression
    "identify": ("What is {expression}?",),
}
YES_NO: tuple[str, str] = ("yes", "no")

_WORD = re.compile(r"[a-z]+|[0-9]+|[^\sa-z0-9]")
_PLACEHOLDER = re.compile(r"\{[a-z_]+\}")


def words(text: str) -> list[str]:
    """The lower-cased word and punctuation tokens of ``text`` (the unit of :data:`WORLD_VOCABULARY`)."""
    return _WORD.findall(text.lower())


def _template_words(templates: Iterable[str]) -> set[str]:
    return {w for template in templates for w in words(_PLACEHOLDER.sub(" ", template))}


def _all_vocabulary() -> tuple[str, ...]:
    vocabulary: set[str] = set()
    vocabulary |= set(COLOURS) | set(SHAPES) | set(SHAPE_PLURALS.values()) | set(SIZES) | set(STUFF)
    vocabulary |= _template_words(BINARY_RELATIONS.values()) | set(SUPERLATIVES) | set(NUMBER_WORDS)
    vocabulary |= {str(n) for n in range(MAX_OBJECTS + 1)} | set(YES_NO)
    vocabulary |= {"the", "a", "an", "and", ",", ".", "?", REFERRING_NOUN}
    for clues in (*SHAPE_CLUES.values(), *COLOUR_CLUES.values(), *SIZE_CLUES.values(), *STUFF_CLUES.values()):
        vocabulary |= _template_words(clues)
    vocabulary |= _template_words((SKY_COLOUR_CLUE,))
    vocabulary |= _template_words(REASONING_PHRASE_TEMPLATES + REASONING_STUFF_PHRASE_TEMPLATES
                                  + REASONING_SENTENCE_TEMPLATES + REASONING_STUFF_SENTENCE_TEMPLATES
                                  + EXPLANATION_TEMPLATES + CAPTION_TEMPLATES + PRETRAIN_QUESTIONS)
    vocabulary |= _template_words(q for questions in CHAT_QUESTIONS.values() for q in questions)
    return tuple(sorted(vocabulary))


WORLD_VOCABULARY: tuple[str, ...] = _all_vocabulary()
"""Every lower-cased word and punctuation token that any text of the world contains (see :func:`words`)."""
