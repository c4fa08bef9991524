"""The schema as ``datasets.Features``, and caching any example stream into an Arrow-backed ``datasets.Dataset``.

Arrow keeps the examples memory-mapped on disk, so a one-time conversion of a slow source (panoptic PNG decoding,
prompt generation) is reused across runs without holding it in RAM. ``meta`` is stored as a JSON string because its
keys differ between sources.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import datasets
from datasets import Features, List, Value

from .schema import XSamExample
from .source import ExampleSource

RLE_FEATURE = {"size": List(Value("int32")), "counts": Value("string")}
VISUAL_PROMPT_FEATURE = {"type": Value("string"), "mask": RLE_FEATURE, "points": List(List(Value("float64"))),
                         "box": List(Value("float64"))}
OBJECT_FEATURE = {"mask": RLE_FEATURE, "class_index": Value("int32"), "isthing": Value("bool"),
                  "iscrowd": Value("bool"), "object_id": Value("string"), "bbox": List(Value("float64")),
                  "texts": List(Value("string")), "visual_prompts": List(VISUAL_PROMPT_FEATURE)}
EXAMPLE_FEATURES = Features({
    "record_id": Value("string"), "task": Value("string"), "source": Value("string"),
    "image_path": Value("string"), "image_size": List(Value("int32")),
    "class_names": List(Value("string")), "class_ids": List(Value("int64")),
    "objects": List(OBJECT_FEATURE),
    "conversation": List({"role": Value("string"), "text": Value("string")}),
    "caption": Value("string"),
    "phrases": List({"text": Value("string"), "start": Value("int32"), "end": Value("int32")}),
    "is_sentence": Value("bool"), "explanation": Value("string"), "ignore_mask": RLE_FEATURE,
    "meta": Value("string"),
})


def example_to_row(example: XSamExample) -> dict[str, Any]:
    row = example.to_dict()
    row["meta"] = json.dumps(row["meta"])
    return row


def row_to_example(row: dict[str, Any]) -> XSamExample:
    return XSamExample.from_dict(row)


def _rows(examples: Iterable[XSamExample]) -> Iterator[dict[str, Any]]:
    for example in examples:
        yield example_to_row(example)


def to_hf_dataset(examples: Iterable[XSamExample], *, cache_dir: str | Path | None = None) -> datasets.Dataset:
    """Write the examples (e.g. an :class:`~.source.ExampleSource`, which skips and counts broken records) to Arrow."""
    return datasets.Dataset.from_generator(_rows, gen_kwargs={"examples": examples}, features=EXAMPLE_FEATURES,
                                           cache_dir=str(cache_dir) if cache_dir is not None else None)


def source_from_hf_dataset(dataset: datasets.Dataset, *, name: str | None = None,
                           task: str | None = None) -> ExampleSource[int]:
    """An Arrow-cached data set (one source) back as an :class:`~.source.ExampleSource` for training."""
    first = dataset[0] if len(dataset) else {"source": name or "empty", "task": task or "chat"}
    return ExampleSource(name or first["source"], task or first["task"], range(len(dataset)),
                         partial(_example_at, dataset))


def _example_at(dataset: datasets.Dataset, index: int) -> XSamExample:
    return row_to_example(dataset[int(index)])
