"""``xsam eval``: run a model over an evaluation set, in batches, with the official post-processing, and score it.

Usage (``--data`` takes the task's paths in this order, or as ``name=PATH``; ``name=VALUE`` items are options)::

    xsam eval --task panoptic    --data annotations/panoptic_val2017.json panoptic_val2017 val2017 --output out/
    xsam eval --task semantic    --data annotations/panoptic_val2017.json panoptic_val2017 val2017 \\
                                        [panoptic_semseg_val2017] --output out/
    xsam eval --task instance    --data annotations/instances_val2017.json val2017 \\
                                        [prompt_categories=annotations/panoptic_val2017.json] --output out/
    xsam eval --task ovseg       --data ade20k_panoptic_val.json ade20k_panoptic_val images/validation \\
                                        [annotations_detectron2/validation] --output out/
    xsam eval --task referring   --data refcocos/refcoco images/train2014 [split=val] [split_by=unc] --output out/
    xsam eval --task reasoning   --data lisa/val --output out/
    xsam eval --task gcg         --data val_test/val_gcg_coco_mask_gt.json val_test/val_gcg_coco_caption_gt.json \\
                                        images/GranDf_HA_images/val_test --output out/
    xsam eval --task interactive --data coco_interactive_val_psalm.json val2017 \\
                                        [categories=instances_val2017.json] --output out/
    xsam eval --task vgd         --data img_vgdseg_coco_val.json val2017 [categories=instances_val2017.json] \\
                                        [generate_from=instances_val2017.json] --output out/
    xsam eval --task vgd         --data vgd/img_vgdseg_cross_val.json images/val \\
                                        [categories=panoptic/annotations/instances_val.json] --output out/
    xsam eval --task conversation --data llava_eval.json images --output out/

Common options: ``--model DIR_OR_ID`` (default: the embedded default model, else the seeded random tiny preset,
announced as such), ``--batch-size N`` (samples per model call), ``--limit N`` (the first N images),
``--thresholds official|default`` (official: the evaluation thresholds of architecture notes §5),
``--max-new-tokens`` (GCG / conversation, official 512), ``--caption-metrics METEOR,CIDEr|none`` (GCG; both need
Java), ``--benchmark NAME`` (default: the data set's name), ``--model-name`` (the table row label), ``--blind``
(every image feature zeroed, :mod:`.blind`: what the model scores without seeing the images; recorded as
``meta.blind`` and a " (blind)" suffix on the default model name).

Cross-image VGD: ``--task vgd`` on a file whose entries carry ``prompts`` (the synthetic world's
``vgd/img_vgdseg_cross_val.json``, format in :mod:`xsam_hf.synthetic.cross_image`) is detected from the file; each
prompt is drawn on its own image (in the same image folder), which the processor passes to the model as
``region_pixel_values``. The benchmark is named after the file (``img_vgdseg_cross_val``); results as for COCO-VGD.

What is evaluated, per task (the per-task adapters are in :mod:`.tasks`): panoptic -> PQ (+SQ, RQ, things / stuff);
semantic -> mIoU (+fwIoU, mACC, pACC); instance -> COCO mask AP; ovseg -> PQ, mIoU and AP from one forward;
referring -> cIoU, gIoU; reasoning -> gIoU, cIoU for short / long / overall; gcg -> METEOR, CIDEr, AP50, mIoU;
interactive -> mIoU, cIoU per prompt type; vgd -> AP, AP50 per prompt type; conversation -> accuracy (exact match
and multiple choice). Prompts are the fixed inference templates and every other choice is deterministic (see
:mod:`.tasks`), so two runs give the same numbers, unlike the official code's random templates (§5).

Output files in ``--output``
---------------------------
* ``predictions.jsonl``: one line per image, appended as soon as all of its samples are done:
  ``{"index": i, "record_id": ..., "samples": [{"key": ..., <statistics and RLE predictions>}], "dropped": {...}}``
  or, for a bad record, ``{"index": i, "record_id": ..., "skipped": {"reason": ..., "error": ...}}``.
* ``eval_config.json``: what identifies the run (task, data paths, model, thresholds, generation length, dtype).
* ``results.json`` and ``results.md`` (below), rewritten at the end of every run.

Resume: a rerun with the same ``--output`` reads ``predictions.jsonl`` and skips every image already in it (a
truncated last line is dropped and that image recomputed); the metrics are always folded from the whole file in
image order, so an interrupted-and-resumed run scores the same as an uninterrupted one. A rerun whose
``eval_config.json`` differs is refused (use another ``--output`` or ``--overwrite``); ``--batch-size`` and
``--limit`` may change between runs.

Bad records: an image whose annotation cannot be built, whose file cannot be read, whose size disagrees with its
annotation, or whose sample the processor rejects is skipped, written to ``predictions.jsonl`` with its reason, and
counted in ``results.json`` (``meta.skipped``); annotations a loader drops inside an otherwise good image are counted
in ``meta.dropped_annotations``. Model errors are not record errors: they stop the run (it resumes afterwards).

``results.json`` shape (read by ``xsam_hf.hub``; scores are fractions in [0, 1], CIDEr unbounded, NaN where a
metric has no sample)::

    {
      "model": "<model name or path>",
      "results": {
        "<benchmark>": {                       # e.g. "panoptic_val2017", "refcoco_unc_val", "val_gcg"
          "<metric>": 0.512,                   # e.g. "PQ", "mIoU", "AP", "cIoU", "gIoU", "METEOR", "accuracy"
          "<group>": {"<metric>": 0.43, ...},  # per prompt type ("point", ...), per split ("short", "long", "overall")
          "num_...": 123,                      # counts ("n", "n_th", "n_st" too): not scores
          "per_category": {...}, "per_class_iou": [...],   # details: not scores
          "_task": "panoptic",                 # the X-SAM task (xsam_hf.processing.TASKS names)
          "_dataset": "<data set name>", "_split": "val"   # _split only where the loader knows it
        }
      },
      "meta": {"task", "benchmark", "data", "model_source", "random_weights", "blind", "thresholds", "prompt",
               "protocol",
               "batch_size", "limit", "max_new_tokens", "caption_metrics", "num_images" (after --limit),
               "num_images_in_data", "num_evaluated_images", "num_samples",
               "skipped": {"total", "by_reason", "first"}, "dropped_annotations", "loader_skips", "versions",
               "format_version"}
    }

``results.md``: the paper's Table 2 layout (a row per model, a column per benchmark metric, in percent; see
:func:`table2_markdown`), then every metric of the run. One run scores one benchmark; the full table of several
models and benchmarks comes from ``xsam eval table out_*/results.json [--output table.md]``.

Chat benchmarks: only LLaVA-format JSON conversations are scored (normalised exact match, and multiple choice where
the reference answer is a bare option letter). VLMEvalKit-style benchmarks are out of scope: MME (yes/no pairs with
its own score), MMBench (circular evaluation, LLM answer matching), SEED-Bench, MMStar, AI2D, ScienceQA and MMMU as
published (their own data formats; a copy converted to LLaVA JSON with the options in the question and the letter as
answer is scored by our multiple-choice mode, without VLMEvalKit's answer extraction), POPE (yes/no F1), TextVQA /
GQA / VQAv2 (VQA soft accuracy over 10 answers) and GPT-judged sets (LLaVA-Bench, MM-Vet).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..default_model import RANDOM_WEIGHTS_NOTICE, load_model
from ..training.data import CorruptRecordError, ExampleSource
from .blind import blinded
from .interactive import PROMPT_TYPES
from .table import format_results_table, percent_table
from .tasks import (
    DATA_SPECS,
    TASK_ADAPTERS,
    EvalOptions,
    EvalSample,
    Record,
    TaskAdapter,
    make_task,
    parse_data_arguments,
)

FORMAT_VERSION = 1
PREDICTIONS_FILE = "predictions.jsonl"
CONFIG_FILE = "eval_config.json"
RESULTS_FILE = "results.json"
TABLE_FILE = "results.md"
MAX_LISTED_SKIPS = 20

# Table 2 columns: the metrics the paper reports per benchmark, by task ("group/metric" for nested results).
HEADLINE_METRICS: dict[str, tuple[str, ...]] = {
    "panoptic": ("PQ",),
    "semantic": ("mIoU",),
    "instance": ("AP",),
    "open_vocabulary": ("PQ", "AP", "mIoU"),
    "referring": ("cIoU", "gIoU"),
    "reasoning": ("overall/gIoU", "overall/cIoU"),
    "gcg": ("METEOR", "CIDEr", "AP50", "mIoU"),
    "interactive": tuple(f"{p}/{m}" for p in PROMPT_TYPES for m in ("mIoU", "cIoU")),
    "vgd": tuple(f"{p}/{m}" for p in PROMPT_TYPES for m in ("AP", "AP50")),
    "conversation": ("accuracy",),
}


class ResumeMismatchError(ValueError):
    """The output folder holds predictions of a different run configuration."""


@dataclass
class EvalSettings:
    """One ``xsam eval`` run (see the module docstring for each option)."""

    task: str
    data: dict[str, str]
    output_dir: Path
    batch_size: int = 1
    limit: int | None = None
    thresholds: str = "official"
    max_new_tokens: int = 512
    caption_metrics: tuple[str, ...] = ("METEOR", "CIDEr")
    benchmark: str | None = None
    model_name: str | None = None
    overwrite: bool = False
    progress: bool = True
    blind: bool = False

    def __post_init__(self) -> None:
        self.output_dir = Path(self.output_dir)
        if self.task not in TASK_ADAPTERS:
            raise ValueError(f"unknown task {self.task!r}; choose from {sorted(TASK_ADAPTERS)}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.limit is not None and self.limit < 0:
            raise ValueError(f"limit must be >= 0, got {self.limit}")
        if self.thresholds not in ("official", "default"):
            raise ValueError(f"thresholds must be 'official' or 'default', got {self.thresholds!r}")


# ------------------------------------------------------------------------------------------------------------------
# The resumable store


class PredictionStore:
    """``predictions.jsonl`` (one finished image per line) with the run's ``eval_config.json`` beside it.

    Only the byte offset of each finished image is kept in memory; lines are read back one at a time when the
    metrics are folded, so a COCO-size run with every detection's RLE does not have to fit in memory twice.
    """

    def __init__(self, output_dir: Path, config: Mapping[str, Any], overwrite: bool = False) -> None:
        output_dir.mkdir(parents=True, exist_ok=True)
        self.path = output_dir / PREDICTIONS_FILE
        config_path = output_dir / CONFIG_FILE
        config = json.loads(json.dumps(config))  # compare in the form it is stored in
        if overwrite:
            for stale in (self.path, config_path, output_dir / RESULTS_FILE, output_dir / TABLE_FILE):
                stale.unlink(missing_ok=True)
        if config_path.exists() and self.path.exists():
            stored = json.loads(config_path.read_text(encoding="utf-8"))
            if stored != config:
                changed = sorted(k for k in set(stored) | set(config) if stored.get(k) != config.get(k))
                raise ResumeMismatchError(
                    f"{output_dir} holds predictions of another run configuration (differs in {changed}); "
                    "use another --output, or --overwrite to start again"
                )
        _write_atomically(config_path, json.dumps(config, indent=2, sort_keys=True))
        self.offsets: dict[int, int] = {}
        if self.path.exists():
            self._scan_existing()
        self._handle = open(self.path, "ab")

    def _scan_existing(self) -> None:
        offsets: dict[int, int] = {}
        clean = True
        with open(self.path, "rb") as handle:
            position = 0
            for raw in handle:
                index = _line_index(raw)
                if index is None:
                    clean = False  # a line cut by an interruption: that image is computed again
                elif index not in offsets:
                    offsets[index] = position
                position += len(raw)
        if not clean:  # rewrite without the broken line so that appended lines start on a clean line
            with open(self.path, "rb") as handle:
                kept = [(index, _read_line_at(handle, offset)) for index, offset in sorted(offsets.items(),
                                                                                         key=lambda kv: kv[1])]
            partial = self.path.with_name(self.path.name + ".partial")
            offsets, position = {}, 0
            with open(partial, "wb") as handle:
                for index, raw in kept:
                    offsets[index] = position
                    handle.write(raw)
                    position += len(raw)
            os.replace(partial, self.path)
        self.offsets = offsets

    def __contains__(self, index: int) -> bool:
        return index in self.offsets

    def append(self, line: dict[str, Any]) -> None:
        raw = (json.dumps(line, separators=(",", ":")) + "\n").encode("utf-8")
        offset = self._handle.tell()
        self._handle.write(raw)
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self.offsets.setdefault(int(line["index"]), offset)

    def read(self, indices: Sequence[int]) -> Iterator[dict[str, Any]]:
        """The stored lines of ``indices`` (those finished), in the order given."""
        self._handle.flush()
        with open(self.path, "rb") as handle:
            for index in indices:
                if index in self.offsets:
                    yield json.loads(_read_line_at(handle, self.offsets[index]))

    def close(self) -> None:
        self._handle.close()


_INDEX_PREFIX = re.compile(rb'^\{"index":(\d+),')


def _line_index(raw: bytes) -> int | None:
    """The image index of a complete stored line, without parsing the line (they can hold thousands of RLEs)."""
    if not raw.endswith(b"\n"):
        return None  # only the last line can be cut short, and it then lacks its newline
    match = _INDEX_PREFIX.match(raw)
    if match is not None:
        return int(match.group(1))
    try:
        return int(json.loads(raw)["index"])
    except (ValueError, KeyError, TypeError):
        return None


def _read_line_at(handle: Any, offset: int) -> bytes:
    handle.seek(offset)
    return handle.readline()


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


# ------------------------------------------------------------------------------------------------------------------
# The evaluation loop


@dataclass
class _OpenImage:
    """An image whose samples are being computed."""

    index: int
    record_id: str
    image: Any
    samples: list[EvalSample]
    dropped: dict[str, int]
    records: dict[int, Record] = field(default_factory=dict)
    remaining: int = 0
    failure: dict[str, str] | None = None

    def __post_init__(self) -> None:
        self.remaining = len(self.samples)

    def fail(self, reason: str, error: BaseException | str) -> None:
        if self.failure is None:
            message = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
            self.failure = {"reason": reason, "error": message}

    def line(self) -> dict[str, Any]:
        if self.failure is not None:
            return {"index": self.index, "record_id": self.record_id, "skipped": self.failure, "dropped": self.dropped}
        samples = [{"key": self.samples[p].key, **self.records[p]} for p in range(len(self.samples))]
        return {"index": self.index, "record_id": self.record_id, "samples": samples, "dropped": self.dropped}


def _counter_delta(before: Counter, after: Counter) -> dict[str, int]:
    delta: dict[str, int] = {}
    for (source, reason), count in after.items():
        if count > before.get((source, reason), 0):
            delta[reason] = delta.get(reason, 0) + count - before.get((source, reason), 0)
    return delta


def _skip_line(index: int, record_id: str, reason: str, error: BaseException, dropped: dict[str, int]) -> dict:
    return {"index": index, "record_id": record_id, "dropped": dropped,
            "skipped": {"reason": reason, "error": f"{type(error).__name__}: {error}"}}


def _open_image(adapter: TaskAdapter, source: ExampleSource, index: int) -> _OpenImage | dict[str, Any]:
    """Build image ``index`` and its samples, or the skip line saying why it cannot be evaluated."""
    from ..processing import load_image

    before = Counter(source.counter.counts)
    record_id = f"{source.name}[{index}]"
    try:
        example = source[index]
    except CorruptRecordError as error:
        return _skip_line(index, record_id, "unbuildable_record", error, _counter_delta(before, source.counter.counts))
    dropped = _counter_delta(before, source.counter.counts)
    record_id = example.record_id
    if example.image_path is None:
        return _skip_line(index, record_id, "no_image", ValueError("the record names no image"), dropped)
    try:
        image = load_image(example.image_path)
    except Exception as error:  # noqa: BLE001 - any unreadable image file is this record's fault
        return _skip_line(index, record_id, "unreadable_image", error, dropped)
    if example.image_size is not None and (image.height, image.width) != tuple(example.image_size):
        error = ValueError(f"image is {image.height}x{image.width}, annotation says "
                           f"{example.image_size[0]}x{example.image_size[1]}")
        return _skip_line(index, record_id, "image_size_mismatch", error, dropped)
    try:
        samples = adapter.samples(example)
    except Exception as error:  # noqa: BLE001 - a broken annotation of this record
        return _skip_line(index, record_id, "bad_annotation", error, dropped)
    return _OpenImage(index, record_id, image, samples, dropped)


def _model_device_and_dtype(model: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    parameter = next(model.parameters())
    return parameter.device, parameter.dtype


def _to_model(value: Any, device: torch.device, dtype: torch.dtype) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device=device, dtype=dtype) if value.is_floating_point() else value.to(device)
    if isinstance(value, (list, tuple)):
        return type(value)(_to_model(v, device, dtype) for v in value)
    return value


def _to_cpu(outputs: Any) -> Any:
    for key, value in outputs.items():
        if isinstance(value, torch.Tensor):
            outputs[key] = value.float().cpu() if value.is_floating_point() else value.cpu()
    return outputs


def _encode(processor: Any, items: list[tuple[_OpenImage, int]]) -> tuple[Any, list[tuple[_OpenImage, int]]]:
    """Processor inputs of a batch. A sample the processor rejects fails its image; the others still run."""

    def call(chosen: list[tuple[_OpenImage, int]]) -> Any:
        return processor(images=[image.image for image, _ in chosen],
                         requests=[image.samples[position].request for image, position in chosen])

    try:
        return call(items), items
    except Exception:  # noqa: BLE001 - find the culprit sample by sample
        accepted = []
        for image, position in items:
            try:
                call([(image, position)])
            except Exception as error:  # noqa: BLE001
                image.fail("bad_sample", f"sample {image.samples[position].key}: {type(error).__name__}: {error}")
            else:
                accepted.append((image, position))
        return (call(accepted) if accepted else None), accepted


def _run_batch(model: torch.nn.Module, processor: Any, adapter: TaskAdapter, settings: EvalSettings,
               items: list[tuple[_OpenImage, int]]) -> None:
    live = [(image, position) for image, position in items if image.failure is None]
    inputs, live = _encode(processor, live) if live else (None, [])
    if inputs is not None:
        device, dtype = _model_device_and_dtype(model)
        tensors = {key: _to_model(value, device, dtype) for key, value in inputs.items()}
        with torch.no_grad():
            if adapter.generative:
                outputs = model.generate(**tensors, tokenizer=processor, max_new_tokens=settings.max_new_tokens,
                                         segment=adapter.segment_generation)
            else:
                outputs = model(**tensors)
        predictions = adapter.post_process(processor, _to_cpu(outputs), inputs)
        for (image, position), prediction in zip(live, predictions):
            try:
                image.records[position] = adapter.record(image.samples[position], prediction)
            except Exception as error:  # noqa: BLE001 - e.g. a reference that does not fit the image
                image.fail("record_failed", error)
    for image, _ in items:
        image.remaining -= 1


def _evaluate_pending(model: torch.nn.Module, processor: Any, adapter: TaskAdapter, source: ExampleSource,
                      settings: EvalSettings, store: PredictionStore, pending: Sequence[int], progress: Any) -> None:
    queue: list[tuple[_OpenImage, int]] = []
    open_images: list[_OpenImage] = []
    skipped = 0

    def finish(line: dict[str, Any]) -> None:
        nonlocal skipped
        store.append(line)
        progress.update(1)
        if "skipped" in line:
            skipped += 1
            progress.set_postfix(skipped=skipped)

    def flush() -> None:
        for image in [image for image in open_images if image.remaining == 0]:
            open_images.remove(image)
            finish(image.line())

    for index in pending:
        opened = _open_image(adapter, source, index)
        if isinstance(opened, dict):
            finish(opened)
            continue
        open_images.append(opened)
        queue.extend((opened, position) for position in range(len(opened.samples)))
        flush()  # an image without samples is finished at once
        while len(queue) >= settings.batch_size:
            batch, queue = queue[: settings.batch_size], queue[settings.batch_size :]
            _run_batch(model, processor, adapter, settings, batch)
            flush()
    if queue:
        _run_batch(model, processor, adapter, settings, queue)
    flush()


def run_evaluation(model: torch.nn.Module, processor: Any, settings: EvalSettings, *, model_source: str,
                   random_weights: bool = False) -> dict[str, Any]:
    """Evaluate ``model`` as ``settings`` say, resuming from ``settings.output_dir``; write and return results.json.

    Raises:
        ResumeMismatchError: the output folder holds predictions of another configuration.
    """
    from tqdm.auto import tqdm

    options = EvalOptions(thresholds=settings.thresholds, caption_metrics=settings.caption_metrics)
    adapter = make_task(settings.task, settings.data, options)
    source = adapter.load()
    loader_skips = source.counter.report()
    benchmark = settings.benchmark or adapter.benchmark
    total = len(source) if settings.limit is None else min(settings.limit, len(source))
    _, dtype = _model_device_and_dtype(model)
    config = {
        "format_version": FORMAT_VERSION,
        "task": settings.task,
        "data": settings.data,
        "model": model_source,
        "dtype": str(dtype),
        "thresholds": settings.thresholds,
        "max_new_tokens": settings.max_new_tokens if adapter.generative else None,
        **({"blind": True} if settings.blind else {}),  # absent when False: earlier runs still resume
    }
    store = PredictionStore(settings.output_dir, config, overwrite=settings.overwrite)
    try:
        pending = [index for index in range(total) if index not in store]
        progress = tqdm(total=total, initial=total - len(pending), unit="image", desc=f"xsam eval {settings.task}",
                        disable=not settings.progress, dynamic_ncols=True)
        try:
            with blinded(model) if settings.blind else nullcontext():
                _evaluate_pending(model, processor, adapter, source, settings, store, pending, progress)
        finally:
            progress.close()
        metrics, summary = _fold(adapter, store.read(range(total)))
    finally:
        store.close()

    entry = {**_jsonable(metrics), "_task": adapter.card_task, "_dataset": source.name}
    if adapter.split is not None:
        entry["_split"] = adapter.split
    document = {
        # a blind run is its own row in the tables, not merged into the model's
        "model": settings.model_name or (f"{model_source} (blind)" if settings.blind else model_source),
        "results": {benchmark: entry},
        "meta": {
            "format_version": FORMAT_VERSION,
            "task": settings.task,
            "benchmark": benchmark,
            "data": settings.data,
            "model_source": model_source,
            "random_weights": random_weights,
            "blind": settings.blind,
            "thresholds": {"setting": settings.thresholds, "values": adapter.thresholds_used()},
            "prompt": dict(adapter.prompt),
            "protocol": adapter.protocol,
            "batch_size": settings.batch_size,
            "limit": settings.limit,
            "max_new_tokens": settings.max_new_tokens if adapter.generative else None,
            "caption_metrics": list(settings.caption_metrics) if settings.task == "gcg" else None,
            "num_images": total,
            "num_images_in_data": len(source),
            **summary,
            "loader_skips": loader_skips,
            "versions": _versions(),
        },
    }
    _write_atomically(settings.output_dir / RESULTS_FILE, json.dumps(document, indent=2) + "\n")
    _write_atomically(settings.output_dir / TABLE_FILE, results_markdown(document))
    return document


def _fold(adapter: TaskAdapter, lines: Iterable[Mapping[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Metrics from the stored lines (in image order), and the bookkeeping of the run."""
    fold = adapter.new_metrics()
    by_reason: Counter[str] = Counter()
    dropped: Counter[str] = Counter()
    first_skips: list[dict[str, Any]] = []
    evaluated = samples = 0
    for line in lines:
        dropped.update(line.get("dropped") or {})
        if "skipped" in line:
            by_reason[line["skipped"]["reason"]] += 1
            if len(first_skips) < MAX_LISTED_SKIPS:
                first_skips.append({"index": line["index"], "record_id": line["record_id"], **line["skipped"]})
            continue
        evaluated += 1
        for record in line["samples"]:
            fold.add(int(line["index"]), record)
            samples += 1
    summary = {
        "num_evaluated_images": evaluated,
        "num_samples": samples,
        "skipped": {"total": sum(by_reason.values()), "by_reason": dict(sorted(by_reason.items())),
                    "first": first_skips},
        "dropped_annotations": dict(sorted(dropped.items())),
    }
    return fold.compute(), summary


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def _versions() -> dict[str, str]:
    import transformers

    from .. import __version__

    return {"xsam_hf": __version__, "torch": torch.__version__, "transformers": transformers.__version__}


# ------------------------------------------------------------------------------------------------------------------
# Tables


def _lookup(entry: Mapping[str, Any], path: str) -> float | None:
    value: Any = entry
    for part in path.split("/"):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def table2_markdown(runs: Sequence[Mapping[str, Any]], digits: int = 1) -> str:
    """The paper's Table 2 layout: one row per model (per ``results.json`` document), one column per benchmark
    metric (the metrics the paper reports for the benchmark's task), in percent; "-" where missing or NaN.
    Documents of the same model are merged into one row."""
    columns: list[tuple[str, str]] = []
    rows: dict[str, dict[tuple[str, str], float | None]] = {}
    for run in runs:
        row = rows.setdefault(str(run["model"]), {})
        for benchmark, entry in run["results"].items():
            for metric in HEADLINE_METRICS.get(entry.get("_task", ""), ()):
                if (benchmark, metric) not in columns:
                    columns.append((benchmark, metric))
                row[(benchmark, metric)] = _lookup(entry, metric)
    names = [f"{benchmark} {metric}" for benchmark, metric in columns]
    return percent_table("Model", names, rows, columns, digits)


def results_markdown(document: Mapping[str, Any]) -> str:
    meta = document["meta"]
    lines = [f"# xsam eval: {meta['task']} on {meta['benchmark']}", ""]
    model_line = f"Model: `{meta['model_source']}`"
    if meta.get("random_weights"):
        model_line += " (RANDOM weights: the scores are meaningless)"
    if meta.get("blind"):
        model_line += " (BLIND: every image feature zeroed)"
    lines += [model_line, f"Thresholds: {meta['thresholds']['setting']}. Images: {meta['num_evaluated_images']} "
              f"evaluated, {meta['skipped']['total']} skipped, of {meta['num_images']}.", ""]
    lines += ["## Table 2 layout (percent)", "", table2_markdown([document]), ""]
    lines += ["## All metrics (percent)", "", format_results_table(document["results"]), ""]
    if meta["skipped"]["total"]:
        reasons = ", ".join(f"{reason}: {count}" for reason, count in meta["skipped"]["by_reason"].items())
        lines += [f"Skipped images: {meta['skipped']['total']} ({reasons}); see results.json meta.skipped.", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    data_help = "\n".join(f"  {task:<13} {spec.usage()}" + (f"\n  {'':<13} ({spec.note})" if spec.note else "")
                          for task, spec in DATA_SPECS.items())
    parser = argparse.ArgumentParser(
        prog="xsam eval",
        description="Evaluate an X-SAM model on a benchmark (resumable; see the module docs of "
                    "xsam_hf.evaluation.runner). `xsam eval table RESULTS_JSON...` combines runs into one table.",
        epilog="--data per task (paths in this order, or NAME=PATH; [..] optional):\n" + data_help,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--task", required=True, choices=sorted(TASK_ADAPTERS))
    parser.add_argument("--data", required=True, nargs="+", metavar="PATH_OR_NAME=VALUE",
                        help="the data set's files, in the order the task lists (see below)")
    parser.add_argument("--output", required=True, type=Path, help="folder for predictions and results")
    parser.add_argument("--model", default=None, help="model folder or Hub id (default: the embedded default model)")
    parser.add_argument("--model-name", default=None, help="row label in the tables (default: --model)")
    parser.add_argument("--batch-size", type=int, default=1, help="samples per model call (default 1)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N images")
    parser.add_argument("--thresholds", choices=("official", "default"), default="official")
    parser.add_argument("--max-new-tokens", type=int, default=512, help="generation budget (gcg, conversation)")
    parser.add_argument("--caption-metrics", default="METEOR,CIDEr",
                        help="gcg caption metrics: METEOR,CIDEr (default; need Java) or none")
    parser.add_argument("--benchmark", default=None, help="benchmark name in results.json (default: the data set's)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"), default="auto")
    parser.add_argument("--overwrite", action="store_true", help="discard earlier predictions in --output")
    parser.add_argument("--blind", action="store_true",
                        help="zero every image feature (SigLIP, SAM, decoder pyramid): the score without the images")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _caption_metrics(text: str) -> tuple[str, ...]:
    if text.strip().lower() in ("", "none"):
        return ()
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in ("METEOR", "CIDEr")]
    if unknown:
        raise ValueError(f"unknown caption metrics {unknown}; use METEOR, CIDEr or none")
    return names


def table_main(argv: Sequence[str]) -> int:
    """``xsam eval table RESULTS_JSON... [--output FILE]``: one Table 2 over several runs (models x benchmarks)."""
    parser = argparse.ArgumentParser(prog="xsam eval table",
                                     description="Combine results.json files of xsam eval into the paper's Table 2 "
                                                 "layout: a row per model, a column per benchmark metric.")
    parser.add_argument("results", nargs="+", type=Path, help="results.json files (or folders holding one)")
    parser.add_argument("--output", type=Path, default=None, help="write the Markdown table here too")
    args = parser.parse_args(list(argv))
    documents = []
    for path in args.results:
        path = path / RESULTS_FILE if path.is_dir() else path
        try:
            documents.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError) as error:
            parser.error(f"cannot read {path}: {error}")
    table = table2_markdown(documents)
    print(table)
    if args.output is not None:
        args.output.write_text(table + "\n", encoding="utf-8")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "table":
        return table_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        data = parse_data_arguments(args.task, args.data)
        caption_metrics = _caption_metrics(args.caption_metrics)
        settings = EvalSettings(
            task=args.task, data=data, output_dir=args.output, batch_size=args.batch_size, limit=args.limit,
            thresholds=args.thresholds, max_new_tokens=args.max_new_tokens, caption_metrics=caption_metrics,
            benchmark=args.benchmark, model_name=args.model_name, overwrite=args.overwrite,
            progress=not args.no_progress, blind=args.blind,
        )
    except ValueError as error:
        parser.error(str(error))
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = None if args.dtype == "auto" else getattr(torch, args.dtype)
    loaded = load_model(args.model, device=device, dtype=dtype)
    if loaded.random_weights:
        print(RANDOM_WEIGHTS_NOTICE, file=sys.stderr)
    try:
        document = run_evaluation(loaded.model, loaded.processor, settings, model_source=loaded.source,
                                  random_weights=loaded.random_weights)
    except ResumeMismatchError as error:
        print(f"xsam eval: {error}", file=sys.stderr)
        return 2
    print(table2_markdown([document]))
    meta = document["meta"]
    print(f"\n{meta['num_evaluated_images']} images evaluated, {meta['skipped']['total']} skipped; "
          f"results in {settings.output_dir / RESULTS_FILE} and {settings.output_dir / TABLE_FILE}")
    if meta["num_evaluated_images"] == 0 and meta["num_images"] > 0:
        print("xsam eval: no image could be evaluated (see meta.skipped in results.json)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
