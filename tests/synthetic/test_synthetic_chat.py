"""LLaVA files: every answer is short, exact and recomputed here from the drawn scene."""

from __future__ import annotations

import re

import numpy as np

from xsam_hf.evaluation.conversation import llava_question_answer_pairs, normalize_answer
from xsam_hf.synthetic.vocabulary import SHAPE_PLURALS
from xsam_hf.training.data import load_llava
from xsam_hf.training.data.json_io import load_json

from .conftest import NUM_TRAIN, NUM_VAL

PLURAL_TO_SHAPE = {plural: shape for shape, plural in SHAPE_PLURALS.items()}


def _cx(obj):
    return np.nonzero(obj.mask)[1].mean()


def _named(objects, words):
    """The one object that 'colour shape' or 'shape' names."""
    *colour, shape = words.split()
    (obj,) = [o for o in objects if o.shape == shape and (not colour or o.colour == colour[0])]
    return obj


def _answer(question, scene):
    objects = scene.objects
    if m := re.fullmatch(r"How many (\w+) (?:are there|can you see)\?", question):
        word = m.group(1)
        if word == "objects":
            return str(len(objects))
        return str(sum(o.shape == PLURAL_TO_SHAPE[word] for o in objects))
    if m := re.fullmatch(r"How many (\w+) objects are there\?", question):
        return str(sum(o.colour == m.group(1) for o in objects))
    if m := re.fullmatch(r"(?:What colour is|Which colour does) the (\w+)(?: have)?\?", question):
        if m.group(1) == "sky":
            return scene.sky_colour
        return _named(objects, m.group(1)).colour
    if m := re.fullmatch(r"What shape is the (\w+) object\?", question):
        (obj,) = [o for o in objects if o.colour == m.group(1)]
        return obj.shape
    if m := re.fullmatch(r"What is (left|right) of the ([\w ]+)\?", question):
        anchor = _named(objects, m.group(2))
        side = [o for o in objects if o is not anchor and (_cx(o) < _cx(anchor)) == (m.group(1) == "left")]
        (obj,) = side
        return f"{obj.colour} {obj.shape}"
    if m := re.fullmatch(r"Is there (a|an) (\w+) (\w+)(?: in the image)?\?", question):
        article, colour, shape = m.groups()
        assert article == ("an" if colour == "orange" else "a")
        return "yes" if any((o.colour, o.shape) == (colour, shape) for o in objects) else "no"
    if m := re.fullmatch(r"Is there (\w+) in the image\?", question):
        return "yes" if m.group(1) in scene.stuff_names else "no"
    raise AssertionError(f"unknown question {question!r}")


def test_chat_answers_are_computable_from_the_scene(world):
    kinds = set()
    for split, count in (("train", NUM_TRAIN), ("val", NUM_VAL)):
        path = world.root / f"chat/llava_qa_{split}.json"
        examples = list(load_llava(path, world.root / f"images/{split}"))
        assert len(examples) == count
        for record, example in zip(load_json(path), examples):
            scene = world.scene(int(record["image"][:-4]))
            assert example.image_path == str(world.root / f"images/{split}" / scene.file_name)
            assert record["conversations"][0]["value"].startswith("<image>\n")
            pairs = llava_question_answer_pairs(record)
            assert 3 <= len(pairs) <= 4 and len({q for q, _ in pairs}) == len(pairs)
            for question, answer in pairs:
                assert answer == _answer(question, scene), question
                assert len(answer.split()) <= 2 and normalize_answer(answer) == answer
                kinds.add(question.split()[0] + " " + question.split()[1])
    assert len(kinds) >= 5  # counts, colours, shapes, positions, existence


def test_caption_chat_is_the_gcg_caption(world):
    for split in ("train", "val"):
        records = load_json(world.root / f"chat/llava_caption_{split}.json")
        assert len(records) == (NUM_TRAIN if split == "train" else NUM_VAL)
        for record in records:
            question, answer = llava_question_answer_pairs(record)[0]
            assert question.endswith((".", "?")) and answer.endswith(".")
            assert all(o.shape in answer or SHAPE_PLURALS[o.shape] in answer
                       for o in world.scene(int(record["image"][:-4])).objects)


def test_dense_training_chat_adds_checked_turns_and_changes_no_other_file(world, tmp_path):
    import filecmp

    from xsam_hf.synthetic import write_world
    from xsam_hf.synthetic.language import DENSE_CHAT_TURNS

    dense = tmp_path / "dense"
    manifest = write_world(dense, world.manifest["seed"], NUM_TRAIN, NUM_VAL, dense_train_chat=True)
    assert manifest["dense_train_chat"] is True and world.manifest["dense_train_chat"] is False
    changed = []
    for path in sorted(p for p in world.root.rglob("*") if p.is_file()):
        if not filecmp.cmp(path, dense / path.relative_to(world.root), shallow=False):
            changed.append(str(path.relative_to(world.root)))
    assert changed == ["chat/llava_qa_train.json", "world.json"]

    sparse_records = load_json(world.root / "chat/llava_qa_train.json")
    lengths = []
    for sparse, record in zip(sparse_records, load_json(dense / "chat/llava_qa_train.json"), strict=True):
        pairs = llava_question_answer_pairs(record)
        # the 3-4 turns of the plain world come first, unchanged, then other questions of the same scene
        assert pairs[:len(llava_question_answer_pairs(sparse))] == llava_question_answer_pairs(sparse)
        assert len({q for q, _ in pairs}) == len(pairs) <= DENSE_CHAT_TURNS
        scene = world.scene(int(record["image"][:-4]))
        assert all(answer == _answer(question, scene) for question, answer in pairs)
        lengths.append(len(pairs))
    assert np.mean(lengths) > 2.5 * np.mean([len(llava_question_answer_pairs(r)) for r in sparse_records])


def test_identify_training_chat_asks_what_a_referring_expression_names(world, tmp_path):
    import filecmp

    from xsam_hf.synthetic import write_world
    from xsam_hf.synthetic.language import IDENTIFY_CHAT_TURNS

    from .test_synthetic_referring import RELATIONS, _check_sentence, _parse_attributes

    both = tmp_path / "both"
    manifest = write_world(both, world.manifest["seed"], NUM_TRAIN, NUM_VAL, dense_train_chat=True,
                           identify_train_chat=True)
    assert manifest["identify_train_chat"] is True and world.manifest["identify_train_chat"] is False
    changed = [str(p.relative_to(world.root)) for p in sorted(world.root.rglob("*"))
               if p.is_file() and not filecmp.cmp(p, both / p.relative_to(world.root), shallow=False)]
    assert changed == ["chat/llava_qa_train.json", "world.json"]
    dense = tmp_path / "dense"
    write_world(dense, world.manifest["seed"], NUM_TRAIN, 0, dense_train_chat=True)

    asked, by_relation = [], 0
    for dense_record, record in zip(load_json(dense / "chat/llava_qa_train.json"),
                                    load_json(both / "chat/llava_qa_train.json"), strict=True):
        pairs, first = llava_question_answer_pairs(record), llava_question_answer_pairs(dense_record)
        assert pairs[:len(first)] == first  # the dense turns come first, unchanged
        extra = pairs[len(first):]
        assert len(extra) <= IDENTIFY_CHAT_TURNS and len(set(extra)) == len(extra)
        scene = world.scene(int(record["image"][:-4]))
        for question, answer in extra:
            expression = re.fullmatch(r"What is (the [\w ]+)\?", question).group(1)
            relation = next((words for words in RELATIONS if f" {words} " in expression), None)
            _, _, colour, shape = _parse_attributes(expression.split(f" {relation} ")[0] if relation else expression)
            assert colour is None or shape is None, question  # the answer is not in the question
            by_relation += relation is not None or expression.split()[1] in ("largest", "smallest")
            referents = []
            for obj in scene.objects:
                try:  # the referring files' own check: true of this object and of no other
                    _check_sentence(expression, obj, scene.objects)
                    referents.append(obj)
                except AssertionError:
                    pass
            (referent,) = referents
            assert answer == f"{referent.colour} {referent.shape}", question
        asked.append(len(extra))
    assert np.mean(asked) > 4 and by_relation >= 0.2 * sum(asked)
