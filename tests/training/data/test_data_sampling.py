import itertools
from collections import Counter

import numpy as np
from xsam_data_fixtures import box_mask

from xsam_hf.training.data import (expand_interactive_eval, expand_per_expression, expand_refseg, sample_gcg,
                                   sample_genseg, sample_intseg, sample_reaseg, sample_vgd)
from xsam_hf.training.data.masks import encode_mask
from xsam_hf.training.data.sampling import choose_visual_prompt, refseg_tuple_count
from xsam_hf.training.data.schema import PhraseSpan, SegObject, VisualPrompt, XSamExample

NAMES = [f"class{i}" for i in range(20)]
MASKS = [encode_mask(box_mask(10, 10, i, 0, i + 1, 10)) for i in range(10)]


def _genseg() -> XSamExample:
    objects = [SegObject(mask=MASKS[0], class_index=3, object_id="a"),
               SegObject(mask=MASKS[1], class_index=3, object_id="b"),
               SegObject(mask=MASKS[2], class_index=11, object_id="c"),
               SegObject(mask=MASKS[3], class_index=7, iscrowd=True, object_id="crowd")]
    return XSamExample(record_id="g/1", task="genseg", source="g", class_names=list(NAMES),
                       class_ids=list(range(100, 120)), objects=objects)


def test_genseg_sampling_keeps_positives_and_relabels_by_sampled_order():
    rng = np.random.default_rng(0)
    full, variant = 0, 0
    for _ in range(200):
        sampled = sample_genseg(_genseg(), rng)
        assert {"class3", "class11"} <= set(sampled.class_names)
        assert len(set(sampled.class_names)) == len(sampled.class_names)
        assert [o.object_id for o in sampled.objects] == ["a", "b", "c"]  # crowd never becomes a target
        for obj, original in zip(sampled.objects, ["class3", "class3", "class11"]):
            assert sampled.class_names[obj.class_index] == original
            assert sampled.class_ids[obj.class_index] == 100 + NAMES.index(original)
        if len(sampled.class_names) == 20:
            full += 1
        else:
            variant += 1
    assert 60 < full < 140 and variant > 60  # about half take every category
    # With a class budget the variant never exceeds it (but positives always stay).
    capped = [len(sample_genseg(_genseg(), rng, num_class=4, use_full_categories=False).class_names)
              for _ in range(50)]
    assert max(capped) == 4 and min(capped) == 2


def _refseg(sentences_per_object) -> XSamExample:
    objects = [SegObject(mask=MASKS[k % len(MASKS)], object_id=str(k), texts=[f"o{k}s{j}" for j in range(n)])
               for k, n in enumerate(sentences_per_object)]
    return XSamExample(record_id="r/1", task="refseg", source="r", objects=objects)


def test_refseg_sentence_tuples_come_from_the_product_capped_at_the_sentence_total():
    example = _refseg([3, 2, 1])
    assert refseg_tuple_count(example) == 6  # min(3*2*1, 3+2+1)
    samples = expand_refseg(example, np.random.default_rng(1))
    assert len(samples) == 6
    product = set(itertools.product(*[o.texts for o in example.objects]))
    assert {tuple(s.class_names) for s in samples} == product  # all 6 distinct tuples
    for sample in samples:
        assert [sample.class_names[o.class_index] for o in sample.objects] == [o.texts[0] for o in sample.objects]
        assert [o.object_id for o in sample.objects] == ["0", "1", "2"]
    big = expand_refseg(_refseg([4, 4, 4]), np.random.default_rng(1))
    assert len(big) == 12 and len({tuple(s.class_names) for s in big}) == 12
    assert refseg_tuple_count(_refseg([5] * 40)) == 200  # 5**40 overflows int64; the cap is still exact
    assert len({s.record_id for s in big}) == 12
    assert [len(s.objects) for s in expand_refseg(_refseg([2, 2, 2]), np.random.default_rng(0), max_objects=2)] \
        == [2] * 4


def test_reaseg_turns_every_question_with_the_same_mask():
    example = XSamExample(record_id="x/1", task="reaseg", source="x", is_sentence=True, explanation="why",
                          objects=[SegObject(mask=MASKS[4], texts=["q1", "q2", "q3"])])
    sampled = sample_reaseg(example)
    assert sampled.class_names == ["q1", "q2", "q3"]
    assert [o.class_index for o in sampled.objects] == [0, 1, 2]
    assert all(o.mask == MASKS[4] for o in sampled.objects)
    assert sampled.is_sentence is True and sampled.explanation == "why"
    assert [s.class_names for s in expand_per_expression(example)] == [["q1"], ["q2"], ["q3"]]


def test_gcg_phrases_are_sorted_by_start_and_overlaps_dropped():
    caption = "a man riding a brown horse on a beach"
    spans = [("a brown horse", 13, 26), ("a man", 0, 5), ("brown horse", 15, 26), ("a beach", 30, 37)]
    example = XSamExample(
        record_id="c/1", task="gcgseg", source="c", caption=caption,
        class_names=[t for t, *_ in spans], class_ids=[-1] * 4,
        phrases=[PhraseSpan(t, s, e) for t, s, e in spans],
        objects=[SegObject(mask=MASKS[k], class_index=k, object_id=str(k)) for k in range(4)])
    sampled = sample_gcg(example)
    assert sampled.class_names == ["a man", "a brown horse", "a beach"]
    assert [(p.start, p.end) for p in sampled.phrases] == [(0, 5), (13, 26), (30, 37)]
    assert [(o.object_id, o.class_index) for o in sampled.objects] == [("1", 0), ("0", 1), ("3", 2)]


def _prompted(types, class_index, object_id):
    return SegObject(mask=MASKS[0], class_index=class_index, object_id=object_id,
                     visual_prompts=[VisualPrompt(t, MASKS[1]) for t in types])


def _vgd() -> XSamExample:
    objects = [_prompted(["point", "scribble", "box", "mask"], 2, "a"), _prompted(["box"], 2, "b"),
               _prompted([], 9, "c")]
    return XSamExample(record_id="v/1", task="vgdseg", source="v", class_names=list(NAMES),
                       class_ids=list(range(20)), objects=objects)


def test_vgd_sampling_adds_up_to_five_negatives_and_one_prompt_per_object():
    rng = np.random.default_rng(4)
    sizes = Counter()
    types = Counter()
    for _ in range(300):
        sampled = sample_vgd(_vgd(), rng)
        assert {"class2", "class9"} <= set(sampled.class_names)
        sizes[len(sampled.class_names)] += 1
        by_id = {o.object_id: o for o in sampled.objects}
        assert sampled.class_names[by_id["a"].class_index] == "class2"
        assert len(by_id["a"].visual_prompts) == 1
        types[by_id["a"].visual_prompts[0].type] += 1
        assert [p.type for p in by_id["b"].visual_prompts] == ["box"]  # fallback to the only available type
        assert by_id["c"].visual_prompts == []
    assert set(sizes) == set(range(2, 8))  # positives alone, or with 0..5 negatives
    assert sizes[2] > 150  # "positives only" half, plus the variant that drew 0 negatives
    assert set(types) == {"point", "scribble", "box", "mask"} and min(types.values()) > 40
    no_negatives = {len(sample_vgd(_vgd(), rng, use_negative_sample=False).class_names) for _ in range(20)}
    assert no_negatives == {2}


def test_prompt_choice_falls_back_when_the_drawn_type_is_missing():
    obj = _prompted(["mask"], 0, "only-mask")
    assert all(choose_visual_prompt(obj, np.random.default_rng(s)).visual_prompts[0].type == "mask"
               for s in range(10))


def test_interactive_sampling_and_evaluation_expansion():
    example = _vgd().evolve(task="intseg")
    single = sample_intseg(example, np.random.default_rng(0))
    assert len(single.objects) == 1 and len(single.class_names) == 1 and single.objects[0].class_index == 0
    assert len(single.objects[0].visual_prompts) == 1
    expanded = expand_interactive_eval(example)
    assert [(s.objects[0].object_id, s.objects[0].visual_prompts[0].type) for s in expanded] == [
        ("a", "point"), ("a", "scribble"), ("a", "box"), ("a", "mask"), ("b", "box")]
    assert all(s.class_names == ["class2"] for s in expanded)
