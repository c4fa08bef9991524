"""ReasonSeg (LISA): ``<name>.jpg`` + LabelMe-style ``<name>.json`` per image -> reaseg examples.

The JSON has ``text`` (list of queries), ``shapes`` (``{label, points}`` polygons) and ``is_sentence``. Polygons are
filled largest first, so a smaller polygon drawn later wins where they overlap; ``flag`` shapes are skipped and
``ignore`` shapes carve pixels out of the target (they go to ``ignore_mask``).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from .json_io import load_json
from .masks import encode_mask
from .schema import SegObject, XSamExample
from .skips import CorruptRecordError, SkipCounter
from .source import ExampleSource

_TARGET, _IGNORE = 1, 255


def polygon_area(points: list[list[float]]) -> float:
    xs = np.asarray([p[0] for p in points], dtype=np.float64)
    ys = np.asarray([p[1] for p in points], dtype=np.float64)
    return 0.5 * abs(float(np.dot(xs, np.roll(ys, -1)) - np.dot(ys, np.roll(xs, -1))))


def rasterise_labelme_shapes(shapes: list[dict[str, Any]], height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """LabelMe shapes -> (target mask, ignore mask), both ``bool`` ``(height, width)``."""
    drawable = [s for s in shapes if str(s.get("label", "")).lower() != "flag" and len(s.get("points", [])) >= 3]
    drawable.sort(key=lambda s: polygon_area(s["points"]), reverse=True)
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for shape in drawable:
        value = _IGNORE if str(shape["label"]).lower() == "ignore" else _TARGET
        draw.polygon([(float(x), float(y)) for x, y in shape["points"]], fill=value, outline=value)
    label = np.asarray(canvas)
    return label == _TARGET, label == _IGNORE


def _queries(annotation: dict[str, Any]) -> list[str]:
    text = annotation.get("text", [])
    queries = [text] if isinstance(text, str) else list(text)
    return [str(q).strip() for q in queries if str(q).strip()]


def load_explanations(explanatory_json: str | Path) -> dict[str, str]:
    """``explanatory/train.json`` (list of ``{image, outputs}``) -> ``{image file name: explanation}``."""
    return {Path(item["image"]).name: str(item["outputs"]).strip()
            for item in load_json(explanatory_json) if item.get("image") and item.get("outputs")}


def _build_reasonseg_example(image_path: Path, *, source: str, explanations: dict[str, str]) -> XSamExample:
    annotation = load_json(image_path.with_suffix(".json"))
    queries = _queries(annotation)
    if not queries:
        raise CorruptRecordError(f"{image_path.name}: no query text")
    if "imageHeight" in annotation and "imageWidth" in annotation:
        height, width = int(annotation["imageHeight"]), int(annotation["imageWidth"])
    else:
        with Image.open(image_path) as image:  # reads the header only
            width, height = image.size
    target, ignore = rasterise_labelme_shapes(annotation.get("shapes", []), height, width)
    return XSamExample(
        record_id=f"{source}/{image_path.stem}", task="reaseg", source=source, image_path=str(image_path),
        image_size=(height, width),
        objects=[SegObject(mask=encode_mask(target), object_id=image_path.stem, texts=queries)],
        is_sentence=bool(annotation.get("is_sentence", False)),
        explanation=explanations.get(image_path.name),
        ignore_mask=encode_mask(ignore) if ignore.any() else None,
        meta={"file_name": image_path.name},
    )


def load_reasonseg(split_dir: str | Path, *, explanatory_json: str | Path | None = None,
                   source: str | None = None, counter: SkipCounter | None = None) -> ExampleSource[Path]:
    """All ``*.jpg`` of ``split_dir`` that have a same-name ``*.json``; one example per image.

    The single object carries every query in ``texts``; all queries share its mask.
    """
    split_dir = Path(split_dir)
    counter = counter if counter is not None else SkipCounter()
    source = source or f"reasonseg_{split_dir.name}"
    explanations = load_explanations(explanatory_json) if explanatory_json else {}
    records = []
    for image_path in sorted(split_dir.glob("*.jpg")):
        if image_path.with_suffix(".json").exists():
            records.append(image_path)
        else:
            counter.record(source, "image_without_annotation", image_path.name)
    builder = partial(_build_reasonseg_example, source=source, explanations=explanations)
    return ExampleSource(source, "reaseg", records, builder, counter)
