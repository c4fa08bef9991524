"""What the demo page shows and lets people download for one result: the JSON record (with the prompts that made
it, in original-image pixels), the HTML legend, and the GCG caption with each phrase in its mask's colour.

No Gradio here, so these are tested without a browser.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..pipelines import segment_record
from ..processing.post_processing import mask_to_rle
from ..visualization import colour_for, legend_text
from .canvas import VisualPromptArguments


def segment_records(segments: Sequence[dict]) -> list[dict]:
    """The segments in the shape `xsam segment` writes (label, label_id, score, span, area, bbox_xyxy, RLE)."""
    return [segment_record(segment) for segment in segments]


def mask_prompt_record(mask: np.ndarray) -> dict:
    """A painted mask prompt, summarised like a segment (the full mask as RLE)."""
    rows, cols = np.nonzero(mask)
    bbox = [int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1] if len(rows) else None
    return {"area": int(mask.sum()), "bbox_xyxy": bbox, "rle": mask_to_rle(torch.from_numpy(mask.astype(bool)))}


def request_record(task: str, classes: Sequence[str] | None, stuff_classes: Sequence[str] | None,
                   prompt: str | Sequence[str] | None, visual: VisualPromptArguments | None,
                   names: Sequence[str] | None, on_prompt_image: bool,
                   conversation: Sequence[dict] | None = None) -> dict:
    """The request as sent to the pipeline; visual prompts in pixels of the image they were drawn on, chat turns
    up to and including the question just asked."""
    record: dict[str, Any] = {"task": task}
    if classes:
        record["classes"] = list(classes)
    if stuff_classes:
        record["stuff_classes"] = list(stuff_classes)
    if prompt:
        record["prompt"] = prompt if isinstance(prompt, str) else list(prompt)
    if visual is not None:
        record["points"] = [list(point) for point in visual.points]
        record["boxes"] = [list(box) for box in visual.boxes]
        record["scribbles"] = [[list(point) for point in line] for line in visual.scribbles]
        record["masks"] = [mask_prompt_record(mask) for mask in visual.masks]
        record["prompts_on"] = "prompt_image" if on_prompt_image else "image"
    if names:
        record["names"] = list(names)
    if conversation is not None:
        record["conversation"] = [dict(turn) for turn in conversation]
    return record


def result_record(request: dict, model_source: str, random_weights: bool, image_size: tuple[int, int],
                  prompt_image_size: tuple[int, int] | None, generated_text: str | None,
                  segments: Sequence[dict]) -> dict:
    """The downloadable JSON: sizes are [height, width] like `xsam segment`'s record."""
    width, height = image_size
    record: dict[str, Any] = {
        "task": request["task"],
        "model": model_source,
        "random_weights": random_weights,
        "image_size": [height, width],
        "request": request,
        "generated_text": generated_text,
        "segments": segment_records(segments),
    }
    if prompt_image_size is not None:
        record["prompt_image_size"] = [prompt_image_size[1], prompt_image_size[0]]
    return record


def _swatch(index: int) -> str:
    red, green, blue = colour_for(index)
    return f"rgb({red}, {green}, {blue})"


def legend_html(segments: Sequence[dict], empty_message: str = "No segment above the threshold.") -> str:
    """The overlay's legend as HTML (colour, label, score), in the overlay's colour order."""
    if not segments:
        return f'<div class="xsam-legend xsam-empty">{html.escape(empty_message)}</div>'
    items = "".join(
        f'<li data-segment="{index}"><span class="xsam-swatch" style="background:{_swatch(index)}"></span>'
        f"{html.escape(legend_text(segment))}</li>"
        for index, segment in enumerate(segments)
    )
    return f'<ul class="xsam-legend">{items}</ul>'


def caption_html(text: str, segments: Sequence[dict]) -> str:
    """The generated text with each grounded phrase highlighted in the colour of its mask in the overlay.

    Segment i is drawn in `colour_for(i)` by the overlay, so its `span` gets the same colour here. Spans that
    overlap an earlier one are left plain rather than nested.
    """
    spans = sorted(
        (tuple(segment["span"]), index) for index, segment in enumerate(segments) if segment.get("span") is not None
    )
    pieces, cursor = [], 0
    for (start, end), index in spans:
        if start < cursor or end <= start or end > len(text):
            continue
        pieces.append(html.escape(text[cursor:start]))
        red, green, blue = colour_for(index)
        pieces.append(
            f'<mark data-segment="{index}" style="background:rgba({red}, {green}, {blue}, 0.45)">'
            f"{html.escape(text[start:end])}</mark>"
        )
        cursor = end
    pieces.append(html.escape(text[cursor:]))
    return f'<p class="xsam-caption">{"".join(pieces)}</p>'
