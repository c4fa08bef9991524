"""`pipeline("x-sam-segmentation")`: every X-SAM task in one call, in the image-segmentation pipeline's schema.

```python
import xsam_hf
from transformers import pipeline

segmenter = pipeline("x-sam-segmentation", model="path/to/x-sam")
segmenter(image, task="panoptic", classes=["person", "dog", "grass"])
segmenter(image, task="referring", prompt="the dog on the left")
segmenter(image, task="interactive", points=[(120, 80)])        # or boxes=[(x0, y0, x1, y1)], masks=[hw_bool]
segmenter(image, task="vgd", boxes=[(10, 10, 60, 60)], prompt_image=other_image)   # cross-image VGD
segmenter(image, task="gcg")                                       # grounded caption
segmenter(image, task="conversation", prompt="What is in the picture?")
segmenter([image_a, image_b], task="panoptic", classes=[...], batch_size=2)
```

Segmentation tasks return a list of `{"score", "label", "label_id", "mask"}` (mask: PIL image, mode "L", 0/255,
at the original size; semantic segments have `score=None`), like transformers' image-segmentation pipeline.
GCG and conversation return `{"generated_text", "segments"}`, whose segments also carry the phrase's character
`span` in the text. A list of images returns a list of results.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

from .default_model import DEFAULT_MODEL_DIR, embedded_default_available
from .processing import (
    ConversationRequest,
    GCGRequest,
    GenericSegmentationRequest,
    InteractiveRequest,
    ReasoningRequest,
    ReferringRequest,
    VGDRequest,
    VisualPrompt,
)

PIPELINE_TASK = "x-sam-segmentation"
GENERATIVE_TASKS = ("gcg", "conversation")
TASK_ALIASES = {"chat": "conversation", "ovseg": "open_vocabulary", "open-vocabulary": "open_vocabulary"}
SEGMENTATION_TASKS = (
    "panoptic", "semantic", "instance", "open_vocabulary", "referring", "reasoning", "interactive", "vgd",
)


def _visual_prompts(points=None, boxes=None, scribbles=None, masks=None, prompt_image=None) -> list[VisualPrompt]:
    """Visual prompts in original-image coordinates: points (x, y), boxes XYXY, scribbles as lists of (x, y),
    masks HxW bool. `prompt_image` makes them prompts on another image (cross-image VGD)."""
    prompts = [VisualPrompt.point(x, y, image=prompt_image) for x, y in points or ()]
    prompts += [VisualPrompt.box(*box, image=prompt_image) for box in boxes or ()]
    prompts += [VisualPrompt.scribble(line, image=prompt_image) for line in scribbles or ()]
    prompts += [VisualPrompt.mask(np.asarray(mask, dtype=bool), image=prompt_image) for mask in masks or ()]
    return prompts


def build_request(
    task: str,
    classes: Sequence[str] | None = None,
    stuff_classes: Sequence[str] | None = None,
    prompt: str | Sequence[str] | None = None,
    conversation: Sequence[dict] | None = None,
    points=None,
    boxes=None,
    scribbles=None,
    masks=None,
    prompt_image: Any = None,
    names: Sequence[str] | None = None,
):
    """The processor request for one image from plain arguments (shared by the pipeline, the CLI and the demo)."""
    task = TASK_ALIASES.get(task, task)
    if task in ("panoptic", "semantic", "instance", "open_vocabulary"):
        if not classes:
            raise ValueError(f"The {task} task needs `classes`, the category names to segment.")
        return GenericSegmentationRequest(list(classes), task=task, stuff_categories=list(stuff_classes or ()))
    if task in ("referring", "reasoning"):
        if not prompt:
            raise ValueError(f"The {task} task needs `prompt`: an expression (or a list of them).")
        return ReferringRequest(prompt) if task == "referring" else ReasoningRequest(prompt)
    if task in ("interactive", "vgd"):
        prompts = _visual_prompts(points, boxes, scribbles, masks, prompt_image)
        if not prompts:
            raise ValueError(f"The {task} task needs a visual prompt: points, boxes, scribbles or masks.")
        if task == "interactive":
            if len(prompts) != 1:
                raise ValueError(f"Interactive segmentation takes one visual prompt, got {len(prompts)}; use vgd.")
            return InteractiveRequest(prompts[0])
        return VGDRequest(prompts, names=list(names) if names else None)
    if task == "gcg":
        return GCGRequest()
    if task == "conversation":
        if conversation is None:
            if not prompt:
                raise ValueError("The conversation task needs `prompt` (a question) or `conversation` (messages).")
            conversation = [{"role": "user", "content": prompt}]
        return ConversationRequest(list(conversation))
    raise ValueError(f"Unknown task {task!r}; choose from {', '.join(SEGMENTATION_TASKS + GENERATIVE_TASKS)}.")


def _mask_image(mask: torch.Tensor) -> Image.Image:
    return Image.fromarray(mask.to(torch.uint8).mul(255).cpu().numpy(), mode="L")


def segments_from_result(task: str, result: Any, class_names: Sequence[str] = ()) -> list[dict]:
    """The image-segmentation schema from a processor post-processing result of any task."""
    if result is None:
        return []
    if task == "semantic":
        return [
            {
                "score": None,
                "label": class_names[label] if label < len(class_names) else None,
                "label_id": int(label),
                "mask": _mask_image(result == label),
            }
            for label in torch.unique(result).tolist()
            if label >= 0
        ]
    if "segments_info" in result:  # panoptic, instance, open-vocabulary, VGD
        return [
            {
                "score": segment["score"],
                "label": segment.get("label"),
                "label_id": segment["label_id"],
                "mask": _mask_image(result["segmentation"] == segment["id"]),
            }
            for segment in result["segments_info"]
        ]
    if "masks" in result:  # referring, reasoning, interactive
        return [
            {"score": float(score), "label": label, "label_id": label_id, "mask": _mask_image(mask)}
            for mask, score, label, label_id in zip(
                result["masks"], result["scores"].tolist(), result["labels"], result["label_ids"]
            )
        ]
    raise ValueError(f"Unrecognised post-processing result for task {task!r}.")


def grounded_segments(result: dict) -> list[dict]:
    """Segments of a grounded caption: one per phrase that has a mask."""
    segments = []
    for (phrase, span, mask), score in zip(result["entities"], result["scores"] or [None] * len(result["entities"])):
        if mask is not None:
            segments.append({"score": score, "label": phrase, "span": span, "mask": _mask_image(mask)})
    return segments


def segment_record(segment: dict) -> dict:
    """A JSON-ready record of one pipeline segment: label, label_id, score, span (GCG), area, XYXY box, COCO RLE."""
    from .processing.post_processing import mask_to_rle

    mask = np.asarray(segment["mask"]) > 0
    ys, xs = np.nonzero(mask)
    bbox = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1] if len(xs) else None
    record = {k: segment.get(k) for k in ("label", "label_id", "score", "span")}
    record.update({"area": int(mask.sum()), "bbox_xyxy": bbox, "rle": mask_to_rle(torch.from_numpy(mask))})
    return {k: v for k, v in record.items() if v is not None or k in ("label", "score")}


class _Opaque:
    """Carries an object through the pipeline untouched (its device mover rebuilds dicts and would drop the
    processor batch's per-sample information)."""

    def __init__(self, value):
        self.value = value


class XSamSegmentationPipeline(Pipeline):
    """Segment anything a prompt asks for; see the module docstring for the call forms and the output schema."""

    _load_processor = True
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    _PREPROCESS_KEYS = (
        "task", "classes", "stuff_classes", "prompt", "conversation", "points", "boxes", "scribbles", "masks",
        "prompt_image", "names",
    )

    def _sanitize_parameters(self, threshold=None, mask_threshold=None, thresholds=None, max_new_tokens=None,
                             **kwargs):
        unknown = set(kwargs) - set(self._PREPROCESS_KEYS)
        if unknown:
            raise TypeError(f"Unexpected arguments: {sorted(unknown)}.")
        forward = {"max_new_tokens": max_new_tokens} if max_new_tokens is not None else {}
        post = {
            key: value
            for key, value in {"threshold": threshold, "mask_threshold": mask_threshold, "thresholds": thresholds}.items()
            if value is not None
        }
        return dict(kwargs), forward, post

    def __call__(self, images, **kwargs):
        """`images`: one image (path, PIL, numpy, tensor) or a list. Lists are batched `batch_size` at a time
        (default 1) through the processor and model in one call each; results equal one-by-one calls."""
        if isinstance(images, (list, tuple)):
            batch_size = kwargs.pop("batch_size", None) or self._batch_size or 1
            preprocess, forward, post = self._sanitize_parameters(**kwargs)
            results = []
            for start in range(0, len(images), batch_size):
                chunk = list(images[start : start + batch_size])
                model_inputs = self.preprocess(chunk, **preprocess)
                with torch.no_grad():
                    outputs = self._forward(model_inputs, **forward)
                results.extend(self.postprocess(outputs, **post))
            return results
        return super().__call__(images, **kwargs)

    def preprocess(self, images, **request_arguments):
        batched = isinstance(images, list)
        image_list = images if batched else [images]
        task = TASK_ALIASES.get(request_arguments.get("task") or "panoptic", request_arguments.get("task"))
        request_arguments["task"] = task or "panoptic"
        requests = [build_request(**request_arguments) for _ in image_list]
        batch = self.processor(images=image_list, requests=requests)
        return {"batch": _Opaque(batch), "task": request_arguments["task"], "batched": batched}

    def _forward(self, model_inputs, max_new_tokens: int = 512):
        batch = model_inputs["batch"].value
        tensors = {k: v for k, v in batch.items()}
        tensors = self._ensure_tensor_on_device(tensors, self.device)
        if model_inputs["task"] in GENERATIVE_TASKS:
            outputs = self.model.generate(**tensors, tokenizer=self.processor, max_new_tokens=max_new_tokens)
        else:
            outputs = self.model(**tensors)
        return {"outputs": _Opaque(outputs), **model_inputs}

    def postprocess(self, model_outputs, threshold=None, mask_threshold=None, thresholds="default"):
        outputs, batch, task = model_outputs["outputs"].value, model_outputs["batch"].value, model_outputs["task"]
        thresholds = _with_overrides(thresholds, task, threshold, mask_threshold)
        generated = outputs.generated_texts if task in GENERATIVE_TASKS else None
        results = self.processor.post_process(_to_cpu(outputs), batch, generated=generated, thresholds=thresholds)
        if task in GENERATIVE_TASKS:
            shaped = [{"generated_text": r["caption"], "segments": grounded_segments(r)} for r in results]
        else:
            shaped = [
                segments_from_result(task, r, info.class_names) for r, info in zip(results, batch.sample_info)
            ]
        return shaped if model_outputs["batched"] else shaped[0]


def _to_cpu(outputs):
    for key, value in outputs.items():
        if isinstance(value, torch.Tensor):
            outputs[key] = value.float().cpu() if value.is_floating_point() else value.cpu()
    return outputs


def _with_overrides(thresholds, task: str, threshold: float | None, mask_threshold: float | None):
    """A threshold table with the caller's single values applied to this task (and to the table's task keys)."""
    if threshold is None and mask_threshold is None:
        return thresholds
    from .processing import DEFAULT_THRESHOLDS, OFFICIAL_THRESHOLDS

    base = {"default": DEFAULT_THRESHOLDS, "official": OFFICIAL_THRESHOLDS}.get(thresholds, thresholds)
    table = {name: dict(values) for name, values in base.items()}
    for values in table.values():
        if threshold is not None and "threshold" in values:
            values["threshold"] = threshold
        if mask_threshold is not None and "mask_threshold" in values:
            values["mask_threshold"] = mask_threshold
    return table


PIPELINE_REGISTRY.register_pipeline(
    PIPELINE_TASK,
    pipeline_class=XSamSegmentationPipeline,
    pt_model=AutoModelForImageTextToText,
    # `pipeline("x-sam-segmentation")` with no model loads the embedded default (a local folder: no network).
    default={"model": (str(DEFAULT_MODEL_DIR), "main")} if embedded_default_available() else None,
    type="multimodal",
)
