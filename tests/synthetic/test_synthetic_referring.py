"""RefCOCO files: every expression is true of its target and singles it out; relations are needed often enough."""

from __future__ import annotations

import numpy as np

from xsam_hf.synthetic import COLOURS, SHAPES, SIZES
from xsam_hf.training.data import load_refcoco
from xsam_hf.training.data.masks import decode_rle

from .conftest import split_and_index

RELATIONS = {"left of": "left", "right of": "right", "above": "above", "below": "below", "next to": "near"}


def _parse_attributes(text):
    """'the [largest|smallest] [size] [colour] shape|object' -> (superlative, size, colour, shape)."""
    tokens = text.split()
    assert tokens[0] == "the", text
    tokens = tokens[1:]
    superlative = tokens.pop(0) if tokens[0] in ("largest", "smallest") else None
    size = tokens.pop(0) if tokens[0] in SIZES else None
    colour = tokens.pop(0) if tokens[0] in COLOURS else None
    assert len(tokens) == 1 and tokens[0] in (*SHAPES, "object"), text
    return superlative, size, colour, None if tokens[0] == "object" else tokens[0]


def _matches(obj, size, colour, shape):
    return (size in (None, obj.size)) and (colour in (None, obj.colour)) and (shape in (None, obj.shape))


def _centroid(mask):
    ys, xs = np.nonzero(mask)
    return xs.mean(), ys.mean()


def _gap(a, b):
    ya, xa = np.nonzero(a)
    yb, xb = np.nonzero(b)
    return np.sqrt(((ya[:, None] - yb[None]) ** 2 + (xa[:, None] - xb[None]) ** 2).min()) - 1


def _holds(relation, target, anchor):
    (tx, ty), (ax, ay) = _centroid(target.mask), _centroid(anchor.mask)
    return {"left": tx < ax, "right": tx > ax, "above": ty < ay, "below": ty > ay,
            "near": _gap(target.mask, anchor.mask) <= 3}[relation]


def _check_sentence(sentence, target, objects):
    """Asserts that the sentence is true of ``target`` only; returns whether its attributes alone are ambiguous."""
    relation_words = next((words for words in RELATIONS if f" {words} " in sentence), None)
    head = sentence.split(f" {relation_words} ")[0] if relation_words else sentence
    superlative, size, colour, shape = _parse_attributes(head)
    assert _matches(target, size, colour, shape), sentence
    candidates = [o for o in objects if _matches(o, size, colour, shape)]
    if superlative:
        areas = {id(o): o.mask.sum() for o in candidates}
        pick = max if superlative == "largest" else min
        assert pick(candidates, key=lambda o: areas[id(o)]) is target, sentence
        assert len(candidates) >= 2
    elif relation_words:
        _, a_size, a_colour, a_shape = _parse_attributes(sentence.split(f" {relation_words} ")[1])
        (anchor,) = [o for o in objects if _matches(o, a_size, a_colour, a_shape)]  # the anchor is unique
        relation = RELATIONS[relation_words]
        assert anchor is not target and _holds(relation, target, anchor), sentence
        assert [o for o in candidates if _holds(relation, o, anchor)] == [target], sentence
    else:
        assert candidates == [target], sentence
    return len(candidates) >= 2


def test_refcoco_expressions_are_true_and_unambiguous_with_their_relation(world):
    root = world.root
    ambiguous_by_split = {}
    for split in ("train", "val"):
        source = load_refcoco(root / "refcoco", root / f"images/{split}", split=split)
        assert source.name == f"refcoco_unc_{split}"
        examples = list(source)
        assert {e.meta["image_id"] for e in examples} <= {s.image_id for s in world.split_scenes(split)}
        assert len(examples) >= 0.9 * len(world.split_scenes(split))
        flags = []
        for example in examples:
            scene = world.scene(example.meta["image_id"])
            assert split_and_index(scene.image_id)[0] == split
            for obj, ann_id in zip(example.objects, example.meta["ann_ids"]):
                target = scene.objects[ann_id - scene.image_id * 10 - 1]
                assert np.array_equal(decode_rle(obj.mask), target.mask)
                assert example.meta["category_names"][example.objects.index(obj)] == target.shape
                assert 1 <= len(obj.texts) <= 2 and len(set(obj.texts)) == len(obj.texts)
                flags += [_check_sentence(text, target, scene.objects) for text in obj.texts]
        ambiguous_by_split[split] = sum(flags) / len(flags)
    print(f"\nexpressions ambiguous without their relation: {ambiguous_by_split}")
    assert ambiguous_by_split["val"] >= 0.30


def test_every_referrable_object_is_referred_to(world):
    source = load_refcoco(world.root / "refcoco", world.root / "images/val", split="val")
    referred = sum(len(example.objects) for example in source)
    total = sum(len(s.objects) for s in world.split_scenes("val"))
    assert referred >= 0.85 * total  # only exact twins with no separating relation are left out
