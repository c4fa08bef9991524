"""Per-sample training sampling (which classes a prompt names, in which order) and evaluation expansions.

Every function takes a loaded :class:`~.schema.XSamExample` and returns new example(s) whose ``class_names`` are the
prompt's conditions in order and whose objects' ``class_index`` point into them. Randomness only comes from the
``numpy.random.Generator`` argument; :class:`~.training_dataset.XSamTrainingDataset` seeds one per sample, so a
sample is drawn once and is the same in every epoch and on every rank.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from .schema import PROMPT_TYPES, SegObject, XSamExample

GENSEG_VARIANT_PROBABILITY = 0.5
VGD_NEGATIVE_PROBABILITY = 0.5
VGD_NUM_CLASS = 5


def _positive_class_indices(example: XSamExample) -> list[int]:
    return sorted({o.class_index for o in example.objects if o.class_index >= 0 and not o.iscrowd})


def _restrict_to_classes(example: XSamExample, chosen: Sequence[int]) -> XSamExample:
    """Keep the classes ``chosen`` (old indices, new order) and the non-crowd objects of those classes."""
    new_index = {old: new for new, old in enumerate(chosen)}
    objects = [replace(o, class_index=new_index[o.class_index]) for o in example.objects
               if o.class_index in new_index and not o.iscrowd]
    return example.evolve(class_names=[example.class_names[i] for i in chosen],
                          class_ids=[example.class_ids[i] for i in chosen], objects=objects)


def sample_genseg(example: XSamExample, rng: np.random.Generator, *,
                  variant_probability: float = GENSEG_VARIANT_PROBABILITY, num_class: int | None = None,
                  use_full_categories: bool = True) -> XSamExample:
    """With ``variant_probability``: every positive category plus a random number (0 up to ``num_class`` − #pos,
    unlimited when ``num_class`` is None) of negatives; otherwise every category. Either way shuffled."""
    positives = _positive_class_indices(example)
    all_classes = list(range(len(example.class_names)))
    if rng.random() < variant_probability or not use_full_categories:
        positive_set = set(positives)
        negatives = [c for c in all_classes if c not in positive_set]
        room = len(negatives) if num_class is None else max(0, num_class - len(positives))
        count = int(rng.integers(0, min(room, len(negatives)) + 1))
        chosen = positives + [int(c) for c in rng.choice(negatives, size=count, replace=False)] if count else positives
    else:
        chosen = all_classes
    return _restrict_to_classes(example, [int(c) for c in rng.permutation(chosen)])


def refseg_tuple_count(example: XSamExample) -> int:
    """How many multi-turn samples :func:`expand_refseg` makes: min(Π #sentences, Σ #sentences)."""
    counts = [len(o.texts) for o in example.objects if o.texts]
    return min(math.prod(counts), sum(counts)) if counts else 0  # math.prod: exact, no int64 overflow


def expand_refseg(example: XSamExample, rng: np.random.Generator, *,
                  max_objects: int | None = None) -> list[XSamExample]:
    """One multi-turn sample per sentence tuple (one sentence for each referred object).

    Tuples are ``itertools.product`` over each object's sentences (each list shuffled first, so the cap does not
    always keep the same leading sentences), capped at Σ #sentences. ``max_objects`` keeps a random subset of objects
    (None: all, the [A] setting). Turn ``k`` is ``class_names[k]``, answered by object ``k``.
    """
    objects = [o for o in example.objects if o.texts]
    if max_objects is not None and len(objects) > max_objects:
        keep = sorted(int(i) for i in rng.choice(len(objects), size=max_objects, replace=False))
        objects = [objects[i] for i in keep]
    sentence_lists = [[o.texts[i] for i in rng.permutation(len(o.texts))] for o in objects]
    cap = sum(len(s) for s in sentence_lists)
    samples = []
    for number, sentences in enumerate(itertools.islice(itertools.product(*sentence_lists), cap)):
        samples.append(example.evolve(
            record_id=f"{example.record_id}#{number}", class_names=list(sentences), class_ids=[-1] * len(sentences),
            objects=[replace(o, class_index=k, texts=[sentences[k]]) for k, o in enumerate(objects)]))
    return samples


def sample_reaseg(example: XSamExample) -> XSamExample:
    """Every question of the image becomes a turn; all turns answer with the same mask."""
    turns = [(text, obj) for obj in example.objects for text in obj.texts]
    return example.evolve(class_names=[text for text, _ in turns], class_ids=[-1] * len(turns),
                          objects=[replace(obj, class_index=k, texts=[text]) for k, (text, obj) in enumerate(turns)])


def sample_gcg(example: XSamExample) -> XSamExample:
    """Phrases sorted by character start; a phrase overlapping an earlier kept one is dropped; class = order."""
    order = sorted(range(len(example.phrases)), key=lambda k: (example.phrases[k].start, example.phrases[k].end))
    kept: list[int] = []
    for k in order:
        if not kept or example.phrases[k].start >= example.phrases[kept[-1]].end:
            kept.append(k)
    object_of = {o.class_index: o for o in example.objects}
    phrases = [example.phrases[k] for k in kept]
    return example.evolve(class_names=[p.text for p in phrases], class_ids=[-1] * len(phrases), phrases=phrases,
                          objects=[replace(object_of[k], class_index=new) for new, k in enumerate(kept)
                                   if k in object_of])


def choose_visual_prompt(obj: SegObject, rng: np.random.Generator) -> SegObject:
    """Keep one prompt: a random type, falling back to the other types (random order) when it is missing."""
    available = {p.type: p for p in obj.visual_prompts}
    for prompt_type in rng.permutation(PROMPT_TYPES):
        if str(prompt_type) in available:
            return replace(obj, visual_prompts=[available[str(prompt_type)]])
    return replace(obj, visual_prompts=[])


def sample_vgd(example: XSamExample, rng: np.random.Generator, *, use_negative_sample: bool = True,
               num_class: int = VGD_NUM_CLASS, negative_probability: float = VGD_NEGATIVE_PROBABILITY) -> XSamExample:
    """Positives plus, with ``negative_probability``, 0..``num_class`` random negatives; shuffled. One prompt per
    object (:func:`choose_visual_prompt`)."""
    positives = _positive_class_indices(example)
    chosen = list(positives)
    if use_negative_sample and rng.random() < negative_probability:
        positive_set = set(positives)
        negatives = [c for c in range(len(example.class_names)) if c not in positive_set]
        count = min(int(rng.integers(0, num_class + 1)), len(negatives))
        chosen += [int(c) for c in rng.choice(negatives, size=count, replace=False)] if count else []
    sampled = _restrict_to_classes(example, [int(c) for c in rng.permutation(chosen)])
    return sampled.evolve(objects=[choose_visual_prompt(o, rng) for o in sampled.objects])


def _single_object(example: XSamExample, obj: SegObject, suffix: str) -> XSamExample:
    name = example.class_names[obj.class_index] if obj.class_index >= 0 else ""
    class_id = example.class_ids[obj.class_index] if obj.class_index >= 0 else -1
    return example.evolve(record_id=f"{example.record_id}#{suffix}", class_names=[name], class_ids=[class_id],
                          objects=[replace(obj, class_index=0)])


def sample_intseg(example: XSamExample, rng: np.random.Generator) -> XSamExample:
    """One random object with one random prompt (interactive = VGD with a single region)."""
    candidates = [o for o in example.objects if o.visual_prompts and o.class_index >= 0]
    if not candidates:
        return example.evolve(class_names=[], class_ids=[], objects=[])
    obj = candidates[int(rng.integers(len(candidates)))]
    return _single_object(example, choose_visual_prompt(obj, rng), obj.object_id)


def expand_interactive_eval(example: XSamExample, prompt_types: Sequence[str] = PROMPT_TYPES) -> list[XSamExample]:
    """Evaluation: one sample per annotation per prompt type present."""
    return [_single_object(example, replace(obj, visual_prompts=[p]), f"{obj.object_id}:{p.type}")
            for obj in example.objects for p in obj.visual_prompts if p.type in prompt_types and obj.class_index >= 0]


def expand_per_expression(example: XSamExample) -> list[XSamExample]:
    """Evaluation of refseg / reaseg: one single-turn sample per sentence (K = 1)."""
    samples = []
    for obj in example.objects:
        for number, text in enumerate(obj.texts):
            samples.append(example.evolve(record_id=f"{example.record_id}#{obj.object_id}:{number}",
                                          class_names=[text], class_ids=[-1],
                                          objects=[replace(obj, class_index=0, texts=[text])]))
    return samples


def training_samples(example: XSamExample, rng: np.random.Generator) -> list[XSamExample]:
    """The training sample(s) of one loaded example, per task (refseg may give several, or none)."""
    if example.task in ("genseg", "ovseg"):
        return [sample_genseg(example, rng)]
    if example.task == "refseg":
        return expand_refseg(example, rng)
    if example.task == "reaseg":
        return [sample_reaseg(example)]
    if example.task == "gcgseg":
        return [sample_gcg(example)]
    if example.task == "vgdseg":
        return [sample_vgd(example, rng)]
    if example.task == "intseg":
        return [sample_intseg(example, rng)]
    return [example]
