"""GCG files: every phrase indexes the caption, names its objects correctly and is grounded to their exact masks."""

from __future__ import annotations

import numpy as np

from xsam_hf.synthetic.vocabulary import NUMBER_WORDS, SHAPE_PLURALS
from xsam_hf.training.data import load_gcg, load_gcg_eval, sample_gcg
from xsam_hf.training.data.masks import decode_rle

from .conftest import NUM_TRAIN, NUM_VAL

PLURAL_TO_SHAPE = {plural: shape for shape, plural in SHAPE_PLURALS.items()}


def _members(phrase, scene):
    """The scene items a phrase describes, read from its words alone."""
    tokens = phrase.lower().split()
    if tokens[0] == "the":
        name = tokens[-1]
        if name == "sky":
            assert tokens[1] == scene.sky_colour
        return [r for r in scene.stuff if r.name == name]
    count = 1 if tokens[0] in ("a", "an") else NUMBER_WORDS.index(tokens[0])
    size, colour, noun = tokens[1:]
    shape = PLURAL_TO_SHAPE.get(noun, noun) if count > 1 else noun
    members = [o for o in scene.objects if (o.size, o.colour, o.shape) == (size, colour, shape)]
    assert len(members) == count, phrase
    return members


def _check_example(example, scene):
    covered = []
    for phrase, obj in zip(example.phrases, example.objects):
        assert example.caption[phrase.start:phrase.end] == phrase.text
        members = _members(phrase.text, scene)
        assert np.array_equal(decode_rle(obj.mask), np.logical_or.reduce([m.mask for m in members]))
        covered += members
    # every object and every stuff region is named exactly once
    assert sorted(map(id, covered)) == sorted(map(id, [*scene.objects, *scene.stuff]))


def test_grandf_shaped_files_ground_every_phrase(world):
    root = world.root
    paths = {"train": root / "gcg/annotations/train/GranDf_HA_GCG_train.json",
             "val": root / "gcg/annotations/val_test/GranDf_HA_GCG_val.json"}
    for split, count in (("train", NUM_TRAIN), ("val", NUM_VAL)):
        examples = list(load_gcg(paths[split], root / f"images/{split}"))
        assert len(examples) == count
        for example in examples:
            scene = world.scene(example.meta["image_id"])
            _check_example(example, scene)
            sampled = sample_gcg(example)  # phrases sorted, overlaps dropped: none overlap
            assert [p.text for p in sampled.phrases] == [p.text for p in example.phrases]
            assert example.caption.endswith(".") and example.caption[0].isupper()


def test_gcg_evaluation_files_pair_the_caption_with_the_phrase_masks(world):
    root = world.root / "gcg/annotations/val_test"
    grounded = {e.meta["image_id"]: e for e in load_gcg(root / "GranDf_HA_GCG_val.json", world.root / "images/val")}
    examples = list(load_gcg_eval(root / "val_gcg_coco_mask_gt.json", root / "val_gcg_coco_caption_gt.json",
                                  world.root / "images/val"))
    assert len(examples) == NUM_VAL
    for example in examples:
        image_id = int(example.meta["image_id"])
        assert example.image_path == str(world.root / "images/val" / world.scene(image_id).file_name)
        reference = grounded[image_id]
        assert example.caption == reference.caption
        assert [np.array_equal(decode_rle(a.mask), decode_rle(b.mask))
                for a, b in zip(example.objects, reference.objects)] == [True] * len(reference.objects)
        assert len(example.objects) == len(reference.objects)
