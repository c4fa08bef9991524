"""From X-SAM outputs to masks, per task (architecture notes §1.7 and §5).

The model returns one decoder *instance* per `<SEG>`: `class_queries_logits` `[N, Q, C_max + 1]` (last column =
background), `masks_queries_logits` `[N, Q, h, w]` at 1/8 of the SAM canvas, `instance_sample_index` `[N]`,
`instance_condition_index` `[N]` (-1 when the instance classifies all its sample's conditions) and `condition_mask`
`[N, C_max + 1]` (valid classes, background included). Class probabilities are a softmax over the valid columns;
"scores" drop the background column.

Masks go back to the image as the official code does: mask logits are upsampled bilinearly to the SAM canvas, the
padding is cropped away (the valid region is the resized image, `reshaped_size`), then resized bilinearly to the
original size. Masks are upsampled a few queries at a time and only for the queries a rule needs, so a 200-query
model on a large photo stays within memory.

Results follow the transformers Mask2Former schema (semantic: `(H, W)` label maps; instance / panoptic:
`{"segmentation", "segments_info"}` with -1 for "no segment"), with readable `label`s next to the `label_id`s.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .chat_template import PHRASE_END_TOKEN, PHRASE_START_TOKEN, SEG_TOKEN, strip_generation
from .visual_prompts import bounding_box

# Thresholds a person looking at the result wants (the official demo uses 0.5 for instance and panoptic).
DEFAULT_THRESHOLDS: Mapping[str, Mapping[str, float]] = {
    "semantic": {},
    "instance": {"threshold": 0.5, "mask_threshold": 0.5},
    "panoptic": {"threshold": 0.5, "mask_threshold": 0.5, "overlap_mask_area_threshold": 0.8},
    "referring": {"mask_threshold": 0.5},
    "interactive": {"threshold": 0.5, "mask_threshold": 0.5},
    "vgd": {"threshold": 0.5, "mask_threshold": 0.5},
    "gcg": {"mask_threshold": 0.5},
}
# The official evaluation settings of the released model (architecture notes §5): keep everything for AP / PQ.
OFFICIAL_THRESHOLDS: Mapping[str, Mapping[str, float]] = {
    "semantic": {},
    "instance": {"threshold": 0.0, "mask_threshold": 0.5},
    "panoptic": {"threshold": 0.0, "mask_threshold": 0.5, "overlap_mask_area_threshold": 0.8},
    "referring": {"mask_threshold": 0.5},
    "interactive": {"threshold": 0.5, "mask_threshold": 0.5},
    "vgd": {"threshold": 0.0, "mask_threshold": 0.5},
    "gcg": {"mask_threshold": 0.5},
}
THRESHOLD_SETTINGS = {"default": DEFAULT_THRESHOLDS, "official": OFFICIAL_THRESHOLDS}

# Queries upsampled to full resolution at once.
_QUERY_CHUNK = 16


@dataclass(frozen=True)
class SampleInfo:
    """What post-processing needs to know about one sample of a processor batch."""

    task: str
    original_size: tuple[int, int]
    reshaped_size: tuple[int, int]
    class_names: tuple[str, ...] = ()
    label_ids_to_fuse: frozenset[int] = frozenset()
    prompt_boxes: tuple[tuple[int, int, int, int], ...] = ()
    generate: bool = False


@dataclass(frozen=True)
class InstanceOutput:
    """The outputs of one decoder instance, with the padded class columns removed."""

    class_logits: torch.Tensor  # [Q, C + 1], background last
    mask_logits: torch.Tensor  # [Q, h, w]
    condition_index: int = -1
    probabilities: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "probabilities", self.class_logits.float().softmax(dim=-1))

    @property
    def num_classes(self) -> int:
        return self.class_logits.shape[-1] - 1

    @property
    def scores(self) -> torch.Tensor:
        """Foreground class probabilities `[Q, C]`."""
        return self.probabilities[:, :-1]


def resolve_thresholds(task: str, setting: str | Mapping[str, Mapping[str, float]], **overrides: float | None) -> dict:
    """Thresholds of `task` from a named setting ("default" or "official") or a dict, explicit values winning."""
    table = THRESHOLD_SETTINGS[setting] if isinstance(setting, str) else setting
    if isinstance(setting, str) and setting not in THRESHOLD_SETTINGS:
        raise ValueError(f"Unknown threshold setting {setting!r}; use one of {sorted(THRESHOLD_SETTINGS)}.")
    values = dict(table.get(task, {}))
    values.update({k: v for k, v in overrides.items() if v is not None})
    return values


def split_instances(outputs: Any, batch_size: int) -> list[list[InstanceOutput]]:
    """Group the decoder instances of `outputs` by batch sample (in instance order)."""
    class_logits = outputs.class_queries_logits
    mask_logits = outputs.masks_queries_logits
    if class_logits is None:  # nothing was segmented (e.g. no generated answer had a <SEG>)
        return [[] for _ in range(batch_size)]
    count = class_logits.shape[0]
    sample_index = _optional(outputs, "instance_sample_index", torch.arange(count))
    condition_index = _optional(outputs, "instance_condition_index", torch.full((count,), -1))
    condition_mask = _optional(outputs, "condition_mask", None)
    grouped: list[list[InstanceOutput]] = [[] for _ in range(batch_size)]
    for n in range(count):
        b = int(sample_index[n])
        if not 0 <= b < batch_size:
            raise ValueError(f"Instance {n} belongs to sample {b}, outside a batch of {batch_size}.")
        logits = class_logits[n]
        if condition_mask is not None:
            valid = condition_mask[n].to(torch.bool)
            if not bool(valid[-1]):
                raise ValueError("The background column (last) must be valid in `condition_mask`.")
            # Valid conditions come first, then padding, then the background column.
            logits = logits[:, valid]
        grouped[b].append(InstanceOutput(logits.detach(), mask_logits[n].detach(), int(condition_index[n])))
    return grouped


def _optional(outputs: Any, name: str, default: Any) -> Any:
    value = getattr(outputs, name, None)
    return default if value is None else value


def resize_mask_logits(
    mask_logits: torch.Tensor, canvas_size: int, reshaped_size: Sequence[int], original_size: Sequence[int]
) -> torch.Tensor:
    """`[Q, h, w]` mask logits -> `[Q, H, W]` float32 logits on the original image (upsample, crop, resize)."""
    logits = mask_logits.float()[None]
    if logits.shape[-2:] != (canvas_size, canvas_size):
        logits = F.interpolate(logits, size=(canvas_size, canvas_size), mode="bilinear", align_corners=False)
    logits = logits[..., : int(reshaped_size[0]), : int(reshaped_size[1])]
    size = (int(original_size[0]), int(original_size[1]))
    if logits.shape[-2:] != size:
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
    return logits[0]


def _image_logits(
    instance: InstanceOutput, queries: Sequence[int] | slice, canvas_size: int, info: SampleInfo
) -> torch.Tensor:
    """Mask logits of the given queries on the original image."""
    return resize_mask_logits(instance.mask_logits[queries], canvas_size, info.reshaped_size, info.original_size)


def _chunks(indices: Sequence[int]) -> Iterable[list[int]]:
    indices = list(indices)
    for start in range(0, len(indices), _QUERY_CHUNK):
        yield indices[start : start + _QUERY_CHUNK]


def mask_to_rle(mask: torch.Tensor) -> dict:
    """COCO run-length encoding (pycocotools format, `counts` as text) of a `(H, W)` boolean mask."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.detach().cpu().numpy().astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _label(names: Sequence[str], label_id: int) -> str | None:
    return names[label_id] if 0 <= label_id < len(names) else None


# --- semantic -------------------------------------------------------------------------------------------------------
def semantic_segmentation(instance: InstanceOutput, canvas_size: int, info: SampleInfo) -> torch.Tensor:
    """Label map `(H, W)`: argmax over classes of sum_q score[q, c] * sigmoid(mask_q)."""
    scores = instance.scores
    if scores.shape[1] == 0:
        raise ValueError("Semantic segmentation needs at least one class.")
    height, width = info.original_size
    accumulated = torch.zeros((scores.shape[1], height, width), dtype=torch.float32, device=scores.device)
    for chunk in _chunks(range(scores.shape[0])):
        probs = _image_logits(instance, chunk, canvas_size, info)
        accumulated += torch.einsum("qc,qhw->chw", scores[chunk], probs.sigmoid())
    return accumulated.argmax(dim=0)


# --- instance / VGD -------------------------------------------------------------------------------------------------
def instance_segmentation(
    instance: InstanceOutput,
    canvas_size: int,
    info: SampleInfo,
    threshold: float,
    mask_threshold: float = 0.5,
    return_coco_annotation: bool = False,
    return_binary_maps: bool = False,
) -> dict:
    """Top-Q (query, class) pairs; mask = prob > mask_threshold; score = class prob x mean mask prob inside the mask;
    kept when score >= threshold. Segments are sorted by score; on overlaps the best one is drawn on top."""
    scores = instance.scores
    num_queries, num_classes = scores.shape
    height, width = info.original_size
    device = scores.device
    kept: list[tuple[float, int, torch.Tensor]] = []
    if num_classes > 0:
        top_scores, top_indices = scores.flatten().topk(min(num_queries, scores.numel()))
        # A segment's score is at most its class probability: skip pairs that cannot reach the threshold.
        candidate = top_scores >= threshold
        top_scores, top_indices = top_scores[candidate], top_indices[candidate]
        queries = (top_indices // num_classes).tolist()
        labels = (top_indices % num_classes).tolist()
        for chunk in _chunks(sorted(set(queries))):
            probs = _image_logits(instance, chunk, canvas_size, info)
            probs = probs.sigmoid()
            for row, query in enumerate(chunk):
                binary = probs[row] > mask_threshold
                area = binary.sum()
                if area == 0:
                    continue
                mask_score = float((probs[row] * binary).sum() / (area + 1e-6))
                for pair, (q, label) in enumerate(zip(queries, labels)):
                    if q == query:
                        score = float(top_scores[pair]) * mask_score
                        if score >= threshold:
                            kept.append((score, label, binary))
    kept.sort(key=lambda item: -item[0])
    segmentation = torch.full((height, width), -1, dtype=torch.long, device=device)
    for segment_id in reversed(range(len(kept))):
        segmentation[kept[segment_id][2]] = segment_id
    segments_info = []
    for segment_id, (score, label, binary) in enumerate(kept):
        segment = {
            "id": segment_id,
            "label_id": label,
            "label": _label(info.class_names, label),
            "was_fused": False,
            "score": round(score, 6),
        }
        if return_coco_annotation:
            segment["rle"] = mask_to_rle(binary)
        segments_info.append(segment)
    result: dict[str, Any] = {"segmentation": segmentation, "segments_info": segments_info}
    if return_binary_maps:
        result["segmentation"] = (
            torch.stack([b for _, _, b in kept]) if kept else torch.zeros((0, height, width), dtype=torch.bool)
        )
    return result


# --- panoptic -------------------------------------------------------------------------------------------------------
def panoptic_segmentation(
    instance: InstanceOutput,
    canvas_size: int,
    info: SampleInfo,
    threshold: float,
    mask_threshold: float = 0.5,
    overlap_mask_area_threshold: float = 0.8,
    label_ids_to_fuse: Iterable[int] | None = None,
    return_coco_annotation: bool = False,
) -> dict:
    """Each query takes its most likely class (background included); non-background queries above `threshold`
    compete per pixel by score-weighted mask probability; a segment survives when the pixels it wins cover more than
    `overlap_mask_area_threshold` of its own mask; classes in `label_ids_to_fuse` (stuff) merge into one segment.
    Segment ids start at 1; -1 marks pixels without a segment."""
    fuse = set(info.label_ids_to_fuse if label_ids_to_fuse is None else label_ids_to_fuse)
    height, width = info.original_size
    device = instance.probabilities.device
    segmentation = torch.full((height, width), -1, dtype=torch.long, device=device)
    best_scores, best_labels = instance.probabilities.max(dim=-1)
    keep = (best_labels != instance.num_classes) & (best_scores > threshold)
    queries = torch.nonzero(keep).flatten().tolist()
    if not queries:
        return {"segmentation": segmentation, "segments_info": []}
    probs = torch.cat(
        [
            _image_logits(instance, chunk, canvas_size, info).sigmoid()
            for chunk in _chunks(queries)
        ]
    )
    scores, labels = best_scores[queries], best_labels[queries]
    winner = (probs * scores[:, None, None]).argmax(dim=0)
    segments_info: list[dict] = []
    stuff_segment: dict[int, dict] = {}
    next_id = 1
    for k in range(len(queries)):
        label = int(labels[k])
        won = winner == k
        won_area = int(won.sum())
        own_area = int((probs[k] >= mask_threshold).sum())
        if won_area == 0 or own_area == 0 or not won_area / own_area > overlap_mask_area_threshold:
            continue
        if label in fuse and label in stuff_segment:
            segment = stuff_segment[label]
            segmentation[won] = segment["id"]
            continue
        segmentation[won] = next_id
        segment = {
            "id": next_id,
            "label_id": label,
            "label": _label(info.class_names, label),
            "was_fused": label in fuse,
            "score": round(float(scores[k]), 6),
        }
        segments_info.append(segment)
        if label in fuse:
            stuff_segment[label] = segment
        next_id += 1
    if return_coco_annotation:
        for segment in segments_info:
            segment["rle"] = mask_to_rle(segmentation == segment["id"])
    return {"segmentation": segmentation, "segments_info": segments_info}


# --- referring / reasoning ------------------------------------------------------------------------------------------
def referring_segmentation(
    instances: Sequence[InstanceOutput],
    canvas_size: int,
    info: SampleInfo,
    mask_threshold: float = 0.5,
    return_coco_annotation: bool = False,
) -> dict:
    """For each instance (one per expression), the query most likely to be its expression; mask = prob >
    mask_threshold. Returns `{"masks": (K, H, W) bool, "scores": (K,), "label_ids", "labels"}` in expression order."""
    height, width = info.original_size
    masks, scores, label_ids = [], [], []
    for position, instance in enumerate(instances):
        target = instance.condition_index if instance.condition_index >= 0 else position
        if target >= instance.num_classes:
            raise ValueError(f"Instance targets condition {target} but only {instance.num_classes} are valid.")
        column = instance.scores[:, target]
        query = int(column.argmax())
        logits = _image_logits(instance, slice(query, query + 1), canvas_size, info)
        masks.append(logits[0].sigmoid() > mask_threshold)
        scores.append(float(column[query]))
        label_ids.append(target)
    result = _mask_list_result(masks, scores, label_ids, info, height, width)
    if return_coco_annotation:
        result["rle"] = [mask_to_rle(m) for m in result["masks"]]
    return result


def _mask_list_result(masks, scores, label_ids, info: SampleInfo, height: int, width: int) -> dict:
    device = masks[0].device if masks else None
    return {
        "masks": torch.stack(masks) if masks else torch.zeros((0, height, width), dtype=torch.bool),
        "scores": torch.tensor(scores, dtype=torch.float32, device=device),
        "label_ids": label_ids,
        "labels": [_label(info.class_names, i) for i in label_ids],
    }


# --- interactive ----------------------------------------------------------------------------------------------------
def box_iou(a: Sequence[float] | None, b: Sequence[float] | None) -> float:
    """IoU of two XYXY boxes (0 when either is missing or empty)."""
    if a is None or b is None:
        return 0.0
    inter_w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = inter_w * inter_h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def interactive_segmentation(
    instance: InstanceOutput,
    canvas_size: int,
    info: SampleInfo,
    threshold: float = 0.5,
    mask_threshold: float = 0.5,
    return_coco_annotation: bool = False,
) -> dict:
    """One mask for the visual prompt: queries scored like instance segmentation (one class), those with score >=
    `threshold` kept (else the best one), and among them the one whose mask box best overlaps (IoU) the prompt's
    box. Returns the referring schema with one mask, plus `box_iou`."""
    if instance.num_classes < 1:
        raise ValueError("Interactive segmentation needs the prompt's condition.")
    if not info.prompt_boxes:
        raise ValueError("Interactive post-processing needs the visual prompt's box (processor inputs).")
    prompt_box = info.prompt_boxes[0]
    class_scores = instance.scores[:, 0]
    final_scores, boxes = [], []
    for chunk in _chunks(range(class_scores.shape[0])):
        probs = _image_logits(instance, chunk, canvas_size, info)
        probs = probs.sigmoid()
        binary = probs > mask_threshold
        area = binary.flatten(1).sum(1)
        mask_scores = (probs * binary).flatten(1).sum(1) / (area + 1e-6)
        final_scores.extend((class_scores[chunk] * mask_scores).tolist())
        boxes.extend(bounding_box(m) for m in binary)
    candidates = [q for q, s in enumerate(final_scores) if s >= threshold]
    if not candidates:
        candidates = [int(np.argmax(final_scores))]
    ious = {q: box_iou(boxes[q], prompt_box) for q in candidates}
    chosen = max(candidates, key=lambda q: (ious[q], final_scores[q]))
    logits = _image_logits(instance, slice(chosen, chosen + 1), canvas_size, info)
    height, width = info.original_size
    result = _mask_list_result([logits[0].sigmoid() > mask_threshold], [final_scores[chosen]], [0], info, height, width)
    result["box_iou"] = ious[chosen]
    if return_coco_annotation:
        result["rle"] = [mask_to_rle(m) for m in result["masks"]]
    return result


# --- grounded caption (GCG) -----------------------------------------------------------------------------------------
_PHRASE = re.compile(f"{re.escape(PHRASE_START_TOKEN)}(.*?){re.escape(PHRASE_END_TOKEN)}", re.DOTALL)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _sentences(text: str) -> list[str]:
    """Split after . ! ? followed by whitespace, but never inside a `<p>...</p>` phrase ("<p>Mr. Smith</p>")."""
    inside = [(m.start(), m.end()) for m in _PHRASE.finditer(text)]
    pieces, start = [], 0
    for boundary in _SENTENCE_END.finditer(text):
        if any(s < boundary.start() < e for s, e in inside):
            continue
        pieces.append(text[start : boundary.start()])
        start = boundary.end()
    pieces.append(text[start:])
    return [p for p in pieces if p]


def parse_grounded_text(
    text: str, special_tokens: Iterable[str] = ()
) -> tuple[str, list[tuple[str, tuple[int, int], int]]]:
    """Clean a generated grounded caption, keeping where each phrase ends up.

    The answer is cut at the stop word; sentences containing `<SEG>` are dropped; `<p>`/`</p>` are removed and
    whitespace collapsed. Returns `(caption, [(phrase, (start, end), condition_index), ...])`, where
    `caption[start:end] == phrase` and `condition_index` counts the `<p>...</p>` spans of the whole answer (the
    model's condition order), so dropped sentences do not shift it.
    """
    text = strip_generation(text)
    for token in special_tokens:
        if token and token not in (PHRASE_START_TOKEN, PHRASE_END_TOKEN, SEG_TOKEN):
            text = text.replace(token, "")
    characters: list[tuple[str, int]] = []  # (char, condition index or -1)
    condition = 0
    for sentence in _sentences(text.strip()):
        keep = SEG_TOKEN not in sentence
        position = 0
        if characters and keep:
            characters.append((" ", -1))
        for match in _PHRASE.finditer(sentence):
            if keep:
                characters.extend((c, -1) for c in sentence[position : match.start()])
                characters.extend((c, condition) for c in match.group(1))
            position = match.end()
            condition += 1
        if keep:
            characters.extend((c, -1) for c in sentence[position:])
    # Collapse whitespace (a phrase keeps its inner spaces, single) and strip the ends.
    collapsed: list[tuple[str, int]] = []
    for char, owner in characters:
        if char.isspace():
            if collapsed and collapsed[-1][0] == " ":
                continue
            collapsed.append((" ", owner))
        else:
            collapsed.append((char, owner))
    while collapsed and collapsed[0][0] == " ":
        collapsed.pop(0)
    while collapsed and collapsed[-1][0] == " ":
        collapsed.pop()
    caption = "".join(c for c, _ in collapsed)
    entities: list[tuple[str, tuple[int, int], int]] = []
    position = 0
    while position < len(collapsed):
        owner = collapsed[position][1]
        if owner < 0:
            position += 1
            continue
        start = position
        while position < len(collapsed) and collapsed[position][1] == owner:
            position += 1
        end = position
        while end > start and caption[end - 1] == " ":
            end -= 1
        while start < end and caption[start] == " ":
            start += 1
        if end > start:
            entities.append((caption[start:end], (start, end), owner))
    return caption, entities


def grounded_caption(
    text: str,
    instance: InstanceOutput | None,
    canvas_size: int,
    info: SampleInfo | None,
    mask_threshold: float = 0.5,
    special_tokens: Iterable[str] = (),
) -> dict:
    """Kosmos-2 style result: `{"caption", "entities": [(phrase, (start, end), mask or None)], "scores",
    "segmentation"}`. Phrase k's mask is the query most likely to be class k, thresholded; `segmentation` stacks them
    with id k + 1 (0 = none, later phrases drawn over earlier ones, as the official evaluation does).

    `segmentation` paints every `<p>...</p>` phrase of the answer, also those in a sentence that holds `<SEG>` and is
    therefore left out of the caption (and of `entities`, which need a span in it): the official evaluation takes a
    mask for each of the model's phrase conditions and cleans the caption separately."""
    caption, parsed = parse_grounded_text(text, special_tokens)
    if instance is None or info is None:
        entities = [(phrase_text, span, None) for phrase_text, span, _ in parsed]
        return {"caption": caption, "entities": entities, "scores": [], "segmentation": None}
    height, width = info.original_size
    segmentation = torch.zeros((height, width), dtype=torch.long)
    masks: dict[int, tuple[torch.Tensor, float]] = {}
    for condition in range(instance.num_classes):
        column = instance.scores[:, condition]
        query = int(column.argmax())
        logits = _image_logits(instance, slice(query, query + 1), canvas_size, info)
        mask = logits[0].sigmoid() > mask_threshold
        segmentation = segmentation.to(mask.device)
        segmentation[mask] = condition + 1
        masks[condition] = (mask, float(column[query]))
    entities, scores = [], []
    for phrase_text, span, condition in parsed:
        mask, score = masks.get(condition, (None, None))
        entities.append((phrase_text, span, mask))
        scores.append(score)
    return {"caption": caption, "entities": entities, "scores": scores, "segmentation": segmentation}
