"""ReasonSeg files: the target mask is one drawn segment, and no query names its target's shape or colour."""

from __future__ import annotations

import numpy as np

from xsam_hf.synthetic import COLOURS, SHAPES, STUFF, words
from xsam_hf.synthetic.vocabulary import SHAPE_PLURALS
from xsam_hf.training.data import load_reasonseg
from xsam_hf.training.data.masks import decode_rle

from .conftest import NUM_TRAIN, NUM_VAL

# No query names any colour or shape (so certainly not its target's); a stuff target's query names no stuff class.
# An object's query may mention the sky ("the same colour as the sky").
FORBIDDEN = set(COLOURS) | set(SHAPES) | set(SHAPE_PLURALS.values())


def _target_of(scene, mask):
    matches = [item for item in [*scene.objects, *scene.stuff] if np.array_equal(item.mask, mask)]
    assert len(matches) == 1
    return matches[0]


def test_reasoning_queries_never_name_the_target_and_masks_are_exact(world):
    kinds = {"object": 0, "stuff": 0}
    for split, count in (("train", NUM_TRAIN), ("val", NUM_VAL)):
        explanatory = world.root / "reasonseg/explanatory/train.json" if split == "train" else None
        examples = list(load_reasonseg(world.root / "reasonseg" / split, explanatory_json=explanatory))
        assert len(examples) == count
        for example in examples:
            scene = world.scene(int(example.meta["file_name"][:-4]))
            (obj,) = example.objects
            target = _target_of(scene, decode_rle(obj.mask))
            kinds["object" if hasattr(target, "shape") else "stuff"] += 1
            assert example.ignore_mask is None and len(obj.texts) == 2
            forbidden = FORBIDDEN if hasattr(target, "shape") else FORBIDDEN | set(STUFF)
            for query in obj.texts:
                assert forbidden.isdisjoint(words(query)), query
                assert query.endswith("?") == example.is_sentence, query
            if split == "train":
                assert example.explanation and example.explanation.endswith(".")
                name = target.shape if hasattr(target, "shape") else target.name
                assert name in words(example.explanation)  # the answer may name it; the question may not
            else:
                assert example.explanation is None
    assert kinds["object"] > kinds["stuff"] > 0 or kinds["object"] == NUM_TRAIN + NUM_VAL


def test_reasoning_clues_single_out_their_target(world):
    """Spot checks of the clue logic: a shape clue means the shape is unique, the sky clue the sky's colour."""
    shape_clue = {"could roll down a hill": "circle", "has five points": "star", "points up": "triangle",
                  "has a hole in the middle": "ring", "looks like a plus sign": "cross",
                  "has four equal sides": "square"}
    checked = 0
    for split in ("train", "val"):
        for example in load_reasonseg(world.root / "reasonseg" / split):
            scene = world.scene(int(example.meta["file_name"][:-4]))
            target = _target_of(scene, decode_rle(example.objects[0].mask))
            for query in example.objects[0].texts:
                for clue, shape in shape_clue.items():
                    if clue in query and " and " not in query:
                        assert target.shape == shape and [o.shape for o in scene.objects].count(shape) == 1
                        checked += 1
                if "same colour as the sky" in query:
                    assert target.colour == scene.sky_colour
                    assert [o.colour for o in scene.objects].count(target.colour) == 1
    assert checked > 0
