"""Overlays for people to look at: each segment tinted in its own colour, with a legend underneath."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Distinct, colour-blind-friendly-ish colours (Tableau 10 followed by a few more).
PALETTE = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
    (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213), (196, 156, 148),
]


def colour_for(index: int) -> tuple[int, int, int]:
    return PALETTE[index % len(PALETTE)]


def legend_text(segment: dict) -> str:
    label = segment.get("label") or f"class {segment.get('label_id', '?')}"
    score = segment.get("score")
    return f"{label} {score:.2f}" if isinstance(score, float) else str(label)


def draw_overlay(image: Image.Image, segments: Sequence[dict], alpha: float = 0.5,
                 caption: str | None = None) -> Image.Image:
    """The image with every segment's mask tinted, and a legend (colour, label, score) below it.

    Args:
        image: the original image.
        segments: dicts with a `mask` (PIL "L" 0/255 or bool array of the image's size), `label`, `score`.
        caption: text shown above the legend (GCG captions, chat answers).
    """
    base = np.asarray(image.convert("RGB"), dtype=np.float32)
    for index, segment in enumerate(segments):
        mask = np.asarray(segment["mask"]) > 0
        if mask.shape != base.shape[:2]:
            raise ValueError(f"Segment {index} mask is {mask.shape}, the image is {base.shape[:2]}.")
        base[mask] = (1 - alpha) * base[mask] + alpha * np.array(colour_for(index), dtype=np.float32)
    tinted = Image.fromarray(base.clip(0, 255).astype(np.uint8))

    font = ImageFont.load_default()
    line_height = 16
    lines = ([caption] if caption else []) + [legend_text(s) for s in segments]
    if not lines:
        return tinted
    legend = Image.new("RGB", (tinted.width, line_height * len(lines) + 8), "white")
    draw = ImageDraw.Draw(legend)
    y = 4
    if caption:
        draw.text((6, y), caption[: max(10, tinted.width // 6)], fill="black", font=font)
        y += line_height
    for index, segment in enumerate(segments):
        draw.rectangle([6, y + 2, 18, y + 12], fill=colour_for(index))
        draw.text((24, y), legend_text(segment), fill="black", font=font)
        y += line_height
    canvas = Image.new("RGB", (tinted.width, tinted.height + legend.height), "white")
    canvas.paste(tinted, (0, 0))
    canvas.paste(legend, (0, tinted.height))
    return canvas
