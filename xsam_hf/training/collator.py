"""From training examples (the data layer's `XSamExample`) to `XSamForSegmentation` inputs and targets.

One call turns a micro-batch into:

* S2 / S3: the processor's training-mode encoding (prompt and answer templates drawn at random, `labels` on the
  answers only) plus the segmentation targets of every decoder instance: `mask_labels` (masks on the SAM canvas,
  resized and padded exactly like the image) and `class_labels` (indices into the sample's own conditions), one
  entry per `<SEG>` token, in sample order then `<SEG>` order. Referring / reasoning batches set
  `pack_across_batch=True` (every expression is classified against all expressions of the batch).
* S1: the SAM canvas only (`extra_pixel_values`) with the random scale + centre crop of `augment`, and the
  closed-set targets (class index = position in the data set's category list).

Randomness (templates, S1 scales, visual-prompt picks) comes from a generator seeded by `(seed, epoch, record id)`,
so a sample is prepared identically whatever the number of processes or workers, and differently every epoch.

What each task becomes (the request classes live in `xsam_hf.processing`):

| task | request | decoder instances |
|---|---|---|
| genseg / ovseg | `GenericSegmentationRequest(categories)` | 1: every object, class = its category's position |
| refseg | `ReferringRequest(expressions)` (one turn each) | K: turn k -> the mask of expression k, class k |
| reaseg | `ReasoningRequest(queries)` (explanation on the first turn with p = 0.5) | K, as refseg |
| gcgseg | `GCGRequest(caption, phrase spans)` | 1: phrase k -> class k |
| vgdseg | `VGDRequest(prompts)` (prompt of class k: an instance of that category, from any image of the batch) | 1 |
| intseg | `InteractiveRequest(prompt)` | 1: the prompted object, class 0 |
| chat | `ConversationRequest(turns)` | none (LM loss only) |
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..processing import (
    ConversationRequest,
    GCGRequest,
    GenericSegmentationRequest,
    InteractiveRequest,
    ReasoningRequest,
    ReferringRequest,
    VGDRequest,
    VisualPrompt,
    load_image,
)
from ..processing.visual_prompts import mask_to_canvas
from .augment import CanvasGeometry, RandomScaleCenterCrop
from .data.masks import decode_rle
from .data.schema import XSamExample
from .data.skips import SkipCounter

logger = logging.getLogger(__name__)

PACKED_TASKS = ("refseg", "reaseg")
"""Tasks whose batches are classified across the whole batch (`pack_across_batch=True`)."""
MULTI_SEG_TASKS = ("refseg", "reaseg")
"""Tasks with one `<SEG>` (one decoder instance) per condition."""
SKIPPED_SAMPLES_KEY = "skipped_samples"
"""Batch key with the number of samples skipped since the previous batch (consumed by `XSamTrainer`)."""
TASK_KEY = "task"
"""Batch key with the batch's task (consumed by `XSamTrainer`, which counts the steps of each task)."""
MODEL_INPUT_KEYS = (
    "input_ids",
    "attention_mask",
    "pixel_values",
    "extra_pixel_values",
    "labels",
    "region_masks",
    "region_image_indices",
    "region_pixel_values",
)


@dataclass
class _Prepared:
    """One sample ready for the processor: its request, image and per-instance targets (original resolution)."""

    example: XSamExample
    image: Image.Image | None
    rng: np.random.Generator
    request: Any = None
    instance_targets: list[tuple[list[np.ndarray], list[int]]] | None = None


class XSamDataCollator:
    """Collate `TrainingSample`s (or bare `XSamExample`s) into model inputs.

    Args:
        processor: an `XSamProcessor` (its tokenizer, SigLIP and SAM settings are used; templates are drawn in
            training mode).
        stage: `"s1"` (segmentor: SAM canvas and closed-set targets only), `"s2"` or `"s3"`.
        augmentation: S1's `RandomScaleCenterCrop` (None: the plain SAM preprocessing).
        seed: base seed of every per-sample generator.
        allow_mixed_tasks: accept batches mixing tasks (the source-grouped sampler never makes them; a mixed batch
            usually means a plain sampler was used by mistake, so it is an error by default).
        counter: where unusable samples are counted (a new `SkipCounter` if None).
    """

    def __init__(
        self,
        processor,
        stage: str = "s3",
        augmentation: RandomScaleCenterCrop | None = None,
        seed: int = 0,
        allow_mixed_tasks: bool = False,
        counter: SkipCounter | None = None,
    ) -> None:
        if stage not in ("s1", "s2", "s3"):
            raise ValueError(f"stage must be 's1', 's2' or 's3', got {stage!r}.")
        if augmentation is not None and stage != "s1":
            raise ValueError("The random scale + crop augmentation belongs to S1 (the segmentor alone).")
        self.processor = processor
        self.stage = stage
        self.augmentation = augmentation
        self.seed = seed
        self.allow_mixed_tasks = allow_mixed_tasks
        self.counter = counter if counter is not None else SkipCounter()
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Change the per-sample random draws (templates, scales) for a new epoch."""
        self.epoch = int(epoch)

    def rng_for(self, example: XSamExample) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, zlib.crc32(example.record_id.encode("utf-8"))])

    # ------------------------------------------------------------------------------------------------------------
    def __call__(self, samples: Sequence[Any]) -> dict[str, Any]:
        if not samples:
            raise ValueError("Empty batch.")
        skipped = sum(int(getattr(sample, "skipped", 0)) for sample in samples)
        items = []
        for sample in samples:
            example = sample if isinstance(sample, XSamExample) else sample.example
            image = None if isinstance(sample, XSamExample) else getattr(sample, "image", None)
            if image is None and example.image_path is not None:
                image = load_image(example.image_path)
            items.append(_Prepared(example=example, image=image, rng=self.rng_for(example)))
        tasks = sorted({item.example.task for item in items})
        if len(tasks) > 1 and not self.allow_mixed_tasks:
            raise ValueError(
                f"The batch mixes tasks {tasks}; X-SAM trains on one task per batch (use the source-grouped batch "
                "sampler, or allow_mixed_tasks=True)."
            )
        if self.stage == "s1":
            batch = self._collate_segmentor(items)
        else:
            usable = self._prepare_requests(items)
            skipped += len(items) - len(usable)
            if not usable:
                raise RuntimeError(f"No usable sample in the batch: {self.counter.summary_line()}")
            batch = self._collate_prompted(usable)
        if any(hasattr(sample, "skipped") for sample in samples):
            # Bookkeeping for the trainer (popped before the forward); absent when bare examples are collated.
            batch[SKIPPED_SAMPLES_KEY] = skipped
            batch[TASK_KEY] = "+".join(tasks)
        return batch

    # ------------------------------------------------------------------------------------------------------------
    # S1
    def _collate_segmentor(self, items: list[_Prepared]) -> dict[str, Any]:
        canvas = self.processor.canvas_size
        sam = self.processor.seg_image_processor
        pixel_values, mask_labels, class_labels = [], [], []
        for item in items:
            if item.image is None:
                raise ValueError(f"{item.example.record_id} has no image; S1 trains on images only.")
            height, width = item.image.height, item.image.width
            if self.augmentation is not None:
                geometry = self.augmentation.sample(height, width, canvas, item.rng)
            else:
                geometry = CanvasGeometry.identity(height, width, canvas)
            pixel_values.append(geometry.image_to_canvas(item.image, sam.image_mean, sam.image_std))
            masks, labels = [], []
            for obj in item.example.objects:
                if obj.iscrowd or obj.class_index < 0:
                    continue
                mask = geometry.mask_to_canvas(decode_rle(obj.mask))
                if mask.any():  # an object cropped away (or empty from the start) is no target
                    masks.append(mask)
                    labels.append(obj.class_index)
            mask_labels.append(_stack_masks(masks, canvas))
            class_labels.append(torch.tensor(labels, dtype=torch.long))
        return {
            "extra_pixel_values": torch.stack(pixel_values),
            "mask_labels": mask_labels,
            "class_labels": class_labels,
        }

    # ------------------------------------------------------------------------------------------------------------
    # S2 / S3
    def _prepare_requests(self, items: list[_Prepared]) -> list[_Prepared]:
        vgd_prompts = self._pick_vgd_prompts(items) if any(i.example.task == "vgdseg" for i in items) else {}
        usable = []
        for position, item in enumerate(items):
            try:
                item.request, item.instance_targets = self._request_and_targets(item, vgd_prompts.get(position))
            except ValueError as error:
                self.counter.record(item.example.source, "unusable_for_prompt", item.example.record_id, error)
                continue
            usable.append(item)
        return usable

    def _request_and_targets(self, item: _Prepared, vgd: Any) -> tuple[Any, list | None]:
        example = item.example
        task = example.task
        if task == "chat":
            messages = [{"role": turn.role, "content": turn.text} for turn in example.conversation]
            return ConversationRequest(messages=messages), None
        if item.image is None:
            raise ValueError(f"A {task} sample needs an image.")
        objects = [o for o in example.objects if not o.iscrowd and o.class_index >= 0]
        if task in ("genseg", "ovseg"):
            request = GenericSegmentationRequest(categories=list(example.class_names), clean_names=False)
        elif task == "refseg":
            request = ReferringRequest(expressions=list(example.class_names))
        elif task == "reaseg":
            explanations = None
            if example.explanation and item.rng.random() < 0.5:
                explanations = [example.explanation] + [None] * (len(example.class_names) - 1)
            is_sentence = True if example.is_sentence is None else bool(example.is_sentence)
            request = ReasoningRequest(queries=list(example.class_names), is_sentence=is_sentence,
                                       explanations=explanations)
        elif task == "gcgseg":
            if example.caption is None:
                raise ValueError("A GCG sample needs a caption.")
            request = GCGRequest(caption=example.caption, phrases=[(p.start, p.end) for p in example.phrases])
        elif task == "intseg":
            prompted = [o for o in objects if o.visual_prompts]
            if len(prompted) != 1:
                raise ValueError(f"An interactive sample needs one prompted object, got {len(prompted)}.")
            prompt = prompted[0].visual_prompts[0]
            request = InteractiveRequest(prompt=VisualPrompt.mask(decode_rle(prompt.mask)),
                                         name=example.class_names[prompted[0].class_index] or "region")
            objects = prompted
        elif task == "vgdseg":
            if vgd is None:
                raise ValueError("No visual prompt could be found for any class of this VGD sample.")
            request, kept_classes = vgd
            remap = {old: new for new, old in enumerate(kept_classes)}
            objects = [o for o in objects if o.class_index in remap]
            return request, [([decode_rle(o.mask) for o in objects], [remap[o.class_index] for o in objects])]
        else:
            raise ValueError(f"Unknown task {task!r}.")
        if not example.class_names:
            raise ValueError(f"A {task} sample without any condition cannot be prompted.")
        if task in MULTI_SEG_TASKS:
            targets = []
            for k in range(len(example.class_names)):
                chosen = [o for o in objects if o.class_index == k]
                targets.append(([decode_rle(o.mask) for o in chosen], [k] * len(chosen)))
            return request, targets
        return request, [([decode_rle(o.mask) for o in objects], [o.class_index for o in objects])]

    def _pick_vgd_prompts(self, items: list[_Prepared]) -> dict[int, tuple[VGDRequest, list[int]]]:
        """One visual prompt per sampled class of every VGD sample (architecture spec §1.9).

        The prompt of class k is a random instance of that category from ANY image of the batch (a prompt taken from
        another image teaches cross-image grounding); if the category appears nowhere in the batch, a random
        instance of a category absent from this image is used (a negative: nothing to segment); a class with neither
        is dropped.
        """
        pool: list[tuple[int, int, np.ndarray]] = []  # (batch position, category id, prompt mask)
        for position, item in enumerate(items):
            example = item.example
            if example.task != "vgdseg" or item.image is None:
                continue
            for obj in example.objects:
                if obj.iscrowd or obj.class_index < 0 or not obj.visual_prompts or obj.visual_prompts[0].mask is None:
                    continue
                mask = decode_rle(obj.visual_prompts[0].mask)
                if mask.any():
                    pool.append((position, example.class_ids[obj.class_index], mask))
        chosen: dict[int, tuple[VGDRequest, list[int]]] = {}
        for position, item in enumerate(items):
            example = item.example
            if example.task != "vgdseg" or item.image is None:
                continue
            present = {example.class_ids[o.class_index] for o in example.objects if o.class_index >= 0}
            prompts, names, kept = [], [], []
            for k, category in enumerate(example.class_ids):
                candidates = [entry for entry in pool if entry[1] == category]
                if not candidates:
                    candidates = [entry for entry in pool if entry[1] not in present]
                if not candidates:
                    continue
                source, _, mask = candidates[int(item.rng.integers(len(candidates)))]
                image = None if source == position else items[source].image
                prompts.append(VisualPrompt.mask(mask, image=image))
                names.append(example.class_names[k])
                kept.append(k)
            if prompts:
                chosen[position] = (VGDRequest(prompts=prompts, names=names), kept)
        return chosen

    def _collate_prompted(self, items: list[_Prepared]) -> dict[str, Any]:
        prompts = [item.request.to_prompt(training=True, rng=item.rng) for item in items]
        images = [item.image for item in items]
        if any(image is None for image in images):
            raise ValueError("Every X-SAM sample needs an image (text-only conversations are excluded).")
        encoded = self.processor.encode_prompts(images, prompts, return_labels=True)
        batch = {key: encoded[key] for key in MODEL_INPUT_KEYS if key in encoded}
        if all(item.instance_targets is None for item in items):
            return batch
        canvas = self.processor.canvas_size
        mask_labels, class_labels = [], []
        for b, item in enumerate(items):
            reshaped = tuple(int(v) for v in encoded["reshaped_input_sizes"][b])
            for masks, labels in item.instance_targets or []:
                on_canvas = [mask_to_canvas(m, reshaped, canvas) if m.any() else None for m in masks]
                kept = [(m, label) for m, label in zip(on_canvas, labels) if m is not None]
                mask_labels.append(_stack_masks([m for m, _ in kept], canvas))
                class_labels.append(torch.tensor([label for _, label in kept], dtype=torch.long))
        batch["mask_labels"] = mask_labels
        batch["class_labels"] = class_labels
        batch["pack_across_batch"] = all(item.example.task in PACKED_TASKS for item in items)
        return batch


def _stack_masks(masks: list[torch.Tensor], canvas: int) -> torch.Tensor:
    return torch.stack(masks) if masks else torch.zeros((0, canvas, canvas), dtype=torch.bool)


__all__ = ["MODEL_INPUT_KEYS", "PACKED_TASKS", "SKIPPED_SAMPLES_KEY", "TASK_KEY", "XSamDataCollator"]
