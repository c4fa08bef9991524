"""Per-task adapters of ``xsam eval``: data set -> fixed prompts -> post-processed prediction -> per-sample record ->
metric accumulators.

An adapter does four things for its task, and the runner (:mod:`.runner`) does the rest (batching, the model call,
resume, output files):

1. ``load()`` reads the data set with the training loaders (:mod:`xsam_hf.training.data`), from the paths given
   to ``--data`` (see :data:`DATA_SPECS`).
2. ``samples(example)`` turns one image (one loaded example) into evaluation samples, each a processor request with
   a FIXED inference prompt (the first template of every list in :mod:`xsam_hf.processing.prompts`) and its
   reference. Nothing is random: the same data give the same prompts on every run.
3. ``post_process(...)`` applies the task's official rule (architecture notes §5) to a batch of model outputs, and
   ``record(sample, prediction)`` reduces one prediction to a JSON-ready record: the statistics the metric needs
   (intersection/union counts, per-category PQ counts, a sparse confusion matrix) and the prediction itself as COCO
   RLE. Records are what the runner appends to ``predictions.jsonl``, so a resumed run never recomputes them.
4. ``new_metrics()`` returns a fold that turns the records back into the benchmark's numbers with the accumulators
   of :mod:`xsam_hf.evaluation`; folding the records of an interrupted-and-resumed run gives the same numbers as an
   uninterrupted one.

Deterministic choices where the official evaluation draws at random (§5: "eval is stochastic"):
* prompts: the fixed inference templates;
* VGD: every reference category present in the image is prompted (no negatives), in ascending category order, with
  the visual prompt of its FIRST instance (annotation order) that has a prompt of the type being evaluated. A
  category none of whose instances has that prompt type cannot be prompted; its references leave that prompt type's
  evaluation and are counted (``num_unprompted_references``).
* Cross-image VGD (a file whose entries have ``prompts``, :mod:`xsam_hf.synthetic.cross_image`): the file fixes
  one prompt per category, drawn on another image; per prompt type, every category whose prompt has that type.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from ..processing import (
    ConversationRequest,
    GCGRequest,
    GenericSegmentationRequest,
    InteractiveRequest,
    ReasoningRequest,
    ReferringRequest,
    VGDRequest,
    VisualPrompt,
)
from ..processing import prompts as prompt_templates
from ..processing.post_processing import resolve_thresholds
from ..training.data import (
    ExampleSource,
    XSamExample,
    expand_interactive_eval,
    expand_per_expression,
    load_coco_instances,
    load_coco_interactive,
    load_coco_panoptic,
    load_coco_vgd,
    load_gcg_eval,
    load_llava,
    load_reasonseg,
    load_refcoco,
)
from ..training.data.coco_instances import CategoryTable
from ..training.data.coco_panoptic import read_panoptic_png
from ..training.data.json_io import iter_json_array, load_json
from ..training.data.masks import decode_rle
from ..training.data.schema import PROMPT_TYPES
from ..training.data.semantic import IGNORE_ID, contiguous_category_ids, load_semantic_png, panoptic_to_semantic
from .conversation import ConversationAccuracy
from .gcg import GCGAccumulator, clean_gcg_caption
from .interactive import InteractiveIoUAccumulator
from .iou import IoUAccumulator, intersection_and_union
from .mask_ap import MaskAPAccumulator
from .panoptic_quality import PanopticQualityAccumulator
from .reasoning import ReasoningIoUAccumulator
from .rle import encode_mask_rle
from .semantic import SemanticSegmentationAccumulator
from .vgd import VGDMaskAPAccumulator

Record = dict[str, Any]
"""One sample's JSON-ready record (statistics + compact prediction)."""

# ------------------------------------------------------------------------------------------------------------------
# --data arguments


@dataclass(frozen=True)
class DataSpec:
    """What ``--data`` takes for one task.

    ``required`` and ``optional`` are paths given positionally in this order (or as ``name=PATH``); ``options`` are
    keyword-only ``name=VALUE`` settings (``path_options`` among them are paths). ``note`` is shown in the help only.
    """

    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    options: Mapping[str, str] = field(default_factory=dict)
    path_options: tuple[str, ...] = ()
    note: str = ""

    def usage(self) -> str:
        parts = [name.upper() for name in self.required]
        parts += [f"[{name.upper()}]" for name in self.optional]
        parts += [f"[{name}={value}]" for name, value in self.options.items()]
        return " ".join(parts)


def parse_data_arguments(task: str, items: Sequence[str]) -> dict[str, str]:
    """``--data`` items -> ``{name: value}``; paths are made absolute (they identify the run for resuming).

    Raises:
        ValueError: naming the task's expected arguments, for a missing, unknown or repeated one.
    """
    spec = DATA_SPECS[task]
    positional_names = list(spec.required + spec.optional)
    parsed: dict[str, str] = {}
    positional = [item for item in items if "=" not in item]
    if len(positional) > len(positional_names):
        raise ValueError(f"--data for {task}: too many paths {positional}; expected {spec.usage()}")
    for name, value in zip(positional_names, positional):
        parsed[name] = value
    for item in items:
        if "=" not in item:
            continue
        name, _, value = item.partition("=")
        if name not in positional_names and name not in spec.options:
            known = positional_names + list(spec.options)
            raise ValueError(f"--data for {task}: unknown argument {name!r}; known: {known} ({spec.usage()})")
        if name in parsed:
            raise ValueError(f"--data for {task}: {name} is given twice")
        parsed[name] = value
    missing = [name for name in spec.required if name not in parsed]
    if missing:
        raise ValueError(f"--data for {task}: missing {missing}; expected {spec.usage()}")
    for name in list(parsed):
        if name in positional_names or name in spec.path_options:
            parsed[name] = str(Path(parsed[name]).expanduser().resolve())
    return parsed


_PANOPTIC_PATHS = ("panoptic_json", "panoptic_png_dir", "image_dir")
DATA_SPECS: dict[str, DataSpec] = {
    "panoptic": DataSpec(_PANOPTIC_PATHS),
    "semantic": DataSpec(_PANOPTIC_PATHS, optional=("semantic_png_dir",)),
    "ovseg": DataSpec(_PANOPTIC_PATHS, optional=("semantic_png_dir",)),
    "instance": DataSpec(("instances_json", "image_dir"), options={"prompt_categories": "PANOPTIC_JSON"},
                         path_options=("prompt_categories",)),
    "referring": DataSpec(("refs_dir", "image_dir"), options={"split": "val", "split_by": "unc|umd"}),
    "reasoning": DataSpec(("split_dir",)),
    "gcg": DataSpec(("mask_json", "caption_json", "image_dir")),
    "interactive": DataSpec(("annotations_json", "image_dir"), options={"categories": "INSTANCES_JSON"},
                            path_options=("categories",)),
    "vgd": DataSpec(("annotations_json", "image_dir"),
                    options={"categories": "INSTANCES_JSON", "generate_from": "INSTANCES_JSON"},
                    path_options=("categories", "generate_from"),
                    note="ANNOTATIONS_JSON is COCO-VGD, or cross-image VGD (entries with \"prompts\", e.g. "
                         "vgd/img_vgdseg_cross_val.json): detected from the file; prompt images are in IMAGE_DIR"),
    "conversation": DataSpec(("llava_json", "image_dir")),
}

# ------------------------------------------------------------------------------------------------------------------
# Adapter interface


@dataclass
class EvalSample:
    """One model input: ``key`` is unique within its image, ``reference`` is what ``record`` compares against."""

    key: str
    request: Any
    reference: dict[str, Any]


class MetricFold(ABC):
    """Turns records (in data-set order) back into the benchmark's metrics."""

    @abstractmethod
    def add(self, example_index: int, record: Record) -> None: ...

    @abstractmethod
    def compute(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class EvalOptions:
    """Run settings an adapter needs: threshold setting, caption metrics (GCG)."""

    thresholds: str | Mapping[str, Mapping[str, float]] = "official"
    caption_metrics: tuple[str, ...] = ("METEOR", "CIDEr")


class TaskAdapter(ABC):
    """Base of the per-task adapters; see the module docstring."""

    name: ClassVar[str]
    card_task: ClassVar[str]  # the task as `xsam_hf.processing.TASKS` (and the model card) name it
    threshold_tasks: ClassVar[tuple[str, ...]] = ()  # OFFICIAL_THRESHOLDS keys the post-processing uses
    generative: ClassVar[bool] = False
    segment_generation: ClassVar[bool] = True
    prompt: ClassVar[dict[str, str]] = {}
    protocol: ClassVar[str] = ""

    def __init__(self, data: Mapping[str, str], options: EvalOptions = EvalOptions()) -> None:
        self.data = dict(data)
        self.options = options
        self.source: ExampleSource | None = None

    @abstractmethod
    def _load(self) -> ExampleSource: ...

    def load(self) -> ExampleSource:
        self.source = self._load()
        return self.source

    @property
    def benchmark(self) -> str:
        if self.source is None:
            raise RuntimeError("load() the data set first")
        return self.source.name

    @property
    def split(self) -> str | None:
        return None

    def thresholds_used(self) -> dict[str, dict[str, float]]:
        return {task: resolve_thresholds(task, self.options.thresholds) for task in self.threshold_tasks}

    @abstractmethod
    def samples(self, example: XSamExample) -> list[EvalSample]: ...

    @abstractmethod
    def post_process(self, processor: Any, outputs: Any, inputs: Any) -> list[Any]: ...

    @abstractmethod
    def record(self, sample: EvalSample, prediction: Any) -> Record: ...

    @abstractmethod
    def new_metrics(self) -> MetricFold: ...


# ------------------------------------------------------------------------------------------------------------------
# Small conversions


def to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def mask_counts(prediction: Any, reference: Any) -> tuple[int, int]:
    """Foreground intersection and union of a bool prediction and a reference (ignore pixels = 255)."""
    return intersection_and_union(to_numpy(prediction).astype(bool), reference, ignore_index=IGNORE_ID)


def _rle_records(masks: Sequence[Any]) -> list[dict[str, Any]]:
    return [encode_mask_rle(to_numpy(mask).astype(bool)) for mask in masks]


def _first_mask(result: Mapping[str, Any] | None, size: tuple[int, int]) -> np.ndarray:
    """The single mask of a referring / interactive result (all-false when the model gave none)."""
    if result is None or len(result["masks"]) == 0:
        return np.zeros(size, dtype=bool)
    return to_numpy(result["masks"][0]).astype(bool)


# ------------------------------------------------------------------------------------------------------------------
# Generic segmentation: panoptic (PQ), semantic (mIoU), open vocabulary (PQ + mIoU + AP)


def panoptic_image_statistics(
    categories: Sequence[Mapping[str, Any]],
    prediction_ids: np.ndarray,
    prediction_segments: Sequence[Mapping[str, Any]],
    reference_ids: np.ndarray,
    reference_segments: Sequence[Mapping[str, Any]],
) -> dict[str, list[float]]:
    """Per-category PQ counts of one image: ``{category id: [iou_sum, TP, FP, FN]}`` for categories it touches.

    Summing these over images is what :class:`PanopticQualityAccumulator` does internally, so they can be stored
    per image and folded later.
    """
    accumulator = PanopticQualityAccumulator(categories)
    accumulator.add(prediction_ids, prediction_segments, reference_ids, reference_segments)
    return {
        str(category_id): [stats.iou_sum, stats.true_positives, stats.false_positives, stats.false_negatives]
        for category_id, stats in accumulator.stats.items()
        if stats.true_positives + stats.false_positives + stats.false_negatives
    }


def sparse_confusion(accumulator: SemanticSegmentationAccumulator) -> list[list[int]]:
    """Non-zero ``[reference, prediction, pixels]`` entries of a confusion matrix (a few dozen per image)."""
    rows, columns = np.nonzero(accumulator.confusion_matrix)
    return [[int(r), int(c), int(accumulator.confusion_matrix[r, c])] for r, c in zip(rows, columns)]


class _MaskAPFold:
    """Mask AP over records holding ``detections`` and ``references`` (category ids, scores, RLE)."""

    def __init__(self, category_ids: Sequence[int]) -> None:
        self.accumulator = MaskAPAccumulator(category_ids)

    def add(self, image_id: int, record: Record) -> None:
        detections, references = record["detections"], record["references"]
        self.accumulator.add(
            image_id,
            [r["rle"] for r in references],
            [r["category_id"] for r in references],
            [d["rle"] for d in detections],
            [d["score"] for d in detections],
            [d["category_id"] for d in detections],
            reference_iscrowd=[int(r["iscrowd"]) for r in references],
            image_size=tuple(record["image_size"]),
        )


class GenericFold(MetricFold):
    def __init__(self, kinds: Sequence[str], pq_categories: Sequence[Mapping[str, Any]], num_classes: int,
                 category_ids: Sequence[int]) -> None:
        self.kinds = tuple(kinds)
        self.panoptic = PanopticQualityAccumulator(pq_categories) if "pq" in kinds else None
        self.semantic = SemanticSegmentationAccumulator(num_classes, IGNORE_ID) if "miou" in kinds else None
        self.mask_ap = _MaskAPFold(category_ids) if "ap" in kinds else None

    def add(self, example_index: int, record: Record) -> None:
        if self.panoptic is not None:
            for category_id, (iou_sum, tp, fp, fn) in record["pq"].items():
                stats = self.panoptic.stats[int(category_id)]
                stats.iou_sum += iou_sum
                stats.true_positives += int(tp)
                stats.false_positives += int(fp)
                stats.false_negatives += int(fn)
            self.panoptic.num_images += 1
        if self.semantic is not None:
            for reference, prediction, pixels in record["confusion"]:
                self.semantic.confusion_matrix[reference, prediction] += pixels
        if self.mask_ap is not None:
            self.mask_ap.add(example_index + 1, record)

    def compute(self) -> dict[str, Any]:
        results: dict[str, Any] = {}
        if self.panoptic is not None:
            results.update(self.panoptic.compute())
        if self.semantic is not None:
            results.update(self.semantic.compute())
        if self.mask_ap is not None:
            results.update(self.mask_ap.accumulator.compute())
        return results


class GenericSegmentationTask(TaskAdapter):
    """COCO-style panoptic data (COCO panoptic, ADE20K panoptic); all categories are prompted, sorted by id."""

    name = "panoptic"
    card_task = "panoptic"
    kinds: ClassVar[tuple[str, ...]] = ("pq",)
    loader_task: ClassVar[str] = "genseg"
    threshold_tasks = ("panoptic",)
    prompt = {"question": prompt_templates.GENERIC_QUESTIONS[0], "answer": prompt_templates.SEGMENTATION_ANSWERS[0]}
    protocol = ("every category of the data set is prompted (sorted by category id, names cleaned); stuff classes "
                "are merged per class by panoptic post-processing")

    def _load(self) -> ExampleSource:
        categories = load_json(self.data["panoptic_json"])["categories"]
        self.table = CategoryTable.from_coco(categories)
        self.pq_categories = [{"id": c, "isthing": t, "name": n}
                              for c, t, n in zip(self.table.ids, self.table.isthing, self.table.names)]
        self.contiguous_ids = contiguous_category_ids(categories)
        self.stuff_indices = [i for i, isthing in enumerate(self.table.isthing) if not isthing]
        return load_coco_panoptic(self.data["panoptic_json"], self.data["panoptic_png_dir"], self.data["image_dir"],
                                  task=self.loader_task, include_crowd=True)

    def samples(self, example: XSamExample) -> list[EvalSample]:
        if example.class_ids != self.table.ids:
            raise ValueError(f"{example.record_id}: category list differs from the data set's")
        request = GenericSegmentationRequest(
            list(example.class_names), task=self.card_task, stuff_categories=list(self.stuff_indices)
        )
        reference = {
            "panoptic_png": example.meta["panoptic_png"],
            "segments_info": example.meta["segments_info"],
            "size": example.image_size,
            "things": [o for o in example.objects if o.isthing],
        }
        return [EvalSample("image", request, reference)]

    def post_process(self, processor: Any, outputs: Any, inputs: Any) -> list[dict[str, Any]]:
        thresholds = self.options.thresholds
        count = len(inputs.sample_info)
        panoptic = semantic = instance = [None] * count
        if "pq" in self.kinds:
            panoptic = processor.post_process_panoptic_segmentation(outputs, inputs, thresholds=thresholds)
        if "miou" in self.kinds:
            semantic = processor.post_process_semantic_segmentation(outputs, inputs)
        if "ap" in self.kinds:
            instance = processor.post_process_instance_segmentation(
                outputs, inputs, thresholds=thresholds, return_coco_annotation=True
            )
        return [{"panoptic": p, "semantic": s, "instance": i} for p, s, i in zip(panoptic, semantic, instance)]

    def semantic_reference(self, reference: Mapping[str, Any], panoptic_ids: np.ndarray | None) -> np.ndarray:
        """Contiguous-id map (255 = void) from ``semantic_png_dir`` when given, else derived from the panoptic PNG."""
        png_name = Path(reference["panoptic_png"]).name
        if self.data.get("semantic_png_dir"):
            return load_semantic_png(Path(self.data["semantic_png_dir"]) / png_name).astype(np.int64)
        ids = panoptic_ids if panoptic_ids is not None else read_panoptic_png(reference["panoptic_png"])
        return panoptic_to_semantic(ids, reference["segments_info"], self.contiguous_ids).astype(np.int64)

    def record(self, sample: EvalSample, prediction: Mapping[str, Any]) -> Record:
        reference = sample.reference
        size = tuple(reference["size"])
        record: Record = {}
        panoptic_ids = None
        if "pq" in self.kinds:
            panoptic_ids = read_panoptic_png(reference["panoptic_png"])
            result = prediction["panoptic"]
            segmentation = to_numpy(result["segmentation"]).astype(np.int64)
            segments = [{"id": int(s["id"]), "category_id": self.table.ids[int(s["label_id"])],
                         "score": float(s["score"])} for s in result["segments_info"]]
            record["pq"] = panoptic_image_statistics(self.pq_categories, segmentation, segments, panoptic_ids,
                                                     reference["segments_info"])
            record["segments"] = [{**s, "rle": encode_mask_rle(segmentation == s["id"])} for s in segments]
        if "miou" in self.kinds:
            label_map = prediction["semantic"]
            if label_map is None:
                raise ValueError("the model returned no segmentation for this image")
            label_map = to_numpy(label_map).astype(np.int64)
            accumulator = SemanticSegmentationAccumulator(len(self.table.ids), IGNORE_ID)
            accumulator.add(label_map, self.semantic_reference(reference, panoptic_ids))
            record["confusion"] = sparse_confusion(accumulator)
            record["semantic"] = [{"class_index": int(c), "rle": encode_mask_rle(label_map == c)}
                                  for c in np.unique(label_map)]
        if "ap" in self.kinds:
            record["detections"] = [
                {"category_id": self.table.ids[int(s["label_id"])], "score": float(s["score"]), "rle": s["rle"]}
                for s in prediction["instance"]["segments_info"]
            ]
            record["references"] = [
                {"category_id": self.table.ids[o.class_index], "iscrowd": int(o.iscrowd), "rle": o.mask}
                for o in reference["things"]
            ]
            record["image_size"] = list(size)
        return record

    def new_metrics(self) -> MetricFold:
        return GenericFold(self.kinds, self.pq_categories, len(self.table.ids), self.table.ids)


class SemanticSegmentationTask(GenericSegmentationTask):
    name = "semantic"
    card_task = "semantic"
    kinds = ("miou",)
    threshold_tasks = ("semantic",)
    protocol = ("every category is prompted (sorted by category id); reference ids are contiguous in that order, "
                "255 = void; read from SEMANTIC_PNG_DIR (same file names as the panoptic PNGs) when given, else "
                "derived from the panoptic PNGs")


class OpenVocabularyTask(GenericSegmentationTask):
    """ADE20K-style open-vocabulary evaluation: PQ, mIoU and mask AP from one forward per image."""

    name = "ovseg"
    card_task = "open_vocabulary"
    kinds = ("pq", "miou", "ap")
    loader_task = "ovseg"
    threshold_tasks = ("panoptic", "instance")
    protocol = ("every category is prompted; PQ from the panoptic PNGs, mIoU as for semantic, mask AP against the "
                "thing segments of the panoptic annotation (crowd segments ignored)")


class InstanceSegmentationTask(TaskAdapter):
    """COCO instances JSON; prompts its categories, or (``prompt_categories=PANOPTIC_JSON``) the panoptic list."""

    name = "instance"
    card_task = "instance"
    threshold_tasks = ("instance",)
    prompt = GenericSegmentationTask.prompt
    protocol = ("categories are prompted sorted by id; detections of prompted categories absent from the instances "
                "JSON (stuff) are dropped; crowd references are ignored as in COCOeval")

    def _load(self) -> ExampleSource:
        self.table = CategoryTable.from_coco(load_json(self.data["instances_json"])["categories"])
        prompt_json = self.data.get("prompt_categories")
        self.prompt_table = (CategoryTable.from_coco(load_json(prompt_json)["categories"]) if prompt_json
                             else self.table)
        return load_coco_instances(self.data["instances_json"], self.data["image_dir"], include_crowd=True)

    def samples(self, example: XSamExample) -> list[EvalSample]:
        request = GenericSegmentationRequest(list(self.prompt_table.names), task="instance")
        reference = {"objects": example.objects, "size": example.image_size}
        return [EvalSample("image", request, reference)]

    def post_process(self, processor: Any, outputs: Any, inputs: Any) -> list[Any]:
        return processor.post_process_instance_segmentation(
            outputs, inputs, thresholds=self.options.thresholds, return_coco_annotation=True
        )

    def record(self, sample: EvalSample, prediction: Mapping[str, Any]) -> Record:
        known = set(self.table.ids)
        detections = []
        for segment in prediction["segments_info"]:
            category_id = self.prompt_table.ids[int(segment["label_id"])]
            if category_id in known:
                detections.append({"category_id": category_id, "score": float(segment["score"]),
                                   "rle": segment["rle"]})
        references = [{"category_id": self.table.ids[o.class_index], "iscrowd": int(o.iscrowd), "rle": o.mask}
                      for o in sample.reference["objects"]]
        return {"detections": detections, "references": references, "image_size": list(sample.reference["size"])}

    def new_metrics(self) -> MetricFold:
        return _InstanceFold(self.table.ids)


class _InstanceFold(MetricFold):
    def __init__(self, category_ids: Sequence[int]) -> None:
        self.mask_ap = _MaskAPFold(category_ids)

    def add(self, example_index: int, record: Record) -> None:
        self.mask_ap.add(example_index + 1, record)

    def compute(self) -> dict[str, Any]:
        return self.mask_ap.accumulator.compute()


# ------------------------------------------------------------------------------------------------------------------
# Referring and reasoning (cIoU / gIoU)


class _IoUFold(MetricFold):
    def __init__(self) -> None:
        self.accumulator = IoUAccumulator()

    def add(self, example_index: int, record: Record) -> None:
        self.accumulator.add_counts(record["intersection"], record["union"])

    def compute(self) -> dict[str, Any]:
        return self.accumulator.compute()


class ReferringTask(TaskAdapter):
    """RefCOCO / RefCOCO+ / RefCOCOg: one sample per referring sentence (single turn)."""

    name = "referring"
    card_task = "referring"
    threshold_tasks = ("referring",)
    prompt = {"question": prompt_templates.REFERRING_QUESTIONS[0], "answer": prompt_templates.REFERRING_ANSWERS[0]}
    protocol = "one single-turn sample per sentence; the query most likely to be the expression, sigmoid > 0.5"

    def _load(self) -> ExampleSource:
        return load_refcoco(self.data["refs_dir"], self.data["image_dir"], split=self.data.get("split", "val"),
                            split_by=self.data.get("split_by"))

    @property
    def split(self) -> str | None:
        return self.data.get("split", "val")

    def samples(self, example: XSamExample) -> list[EvalSample]:
        samples = []
        for sample in expand_per_expression(example):
            (obj,) = sample.objects
            key = sample.record_id.rpartition("#")[2]
            samples.append(EvalSample(key, ReferringRequest(sample.class_names[0]),
                                      {"mask": obj.mask, "text": sample.class_names[0]}))
        return samples

    def post_process(self, processor: Any, outputs: Any, inputs: Any) -> list[Any]:
        return processor.post_process_referring_segmentation(outputs, inputs, thresholds=self.options.thresholds)

    def reference_array(self, sample: EvalSample) -> np.ndarray:
        return decode_rle(sample.reference["mask"])

    def record(self, sample: EvalSample, prediction: Mapping[str, Any]) -> Record:
        reference = self.reference_array(sample)
        mask = _first_mask(prediction, reference.shape)
        intersection, union = mask_counts(mask, reference)
        return {"text": sample.reference["text"], "intersection": intersection, "union": union,
                "rle": encode_mask_rle(mask)}

    def new_metrics(self) -> MetricFold:
        return _IoUFold()


class _ReasoningFold(MetricFold):
    def __init__(self) -> None:
        self.accumulator = ReasoningIoUAccumulator()

    def add(self, example_index: int, record: Record) -> None:
        self.accumulator.add_counts(record["intersection"], record["union"], bool(record["is_sentence"]))

    def compute(self) -> dict[str, Any]:
        return self.accumulator.compute()


class ReasoningTask(ReferringTask):
    """ReasonSeg: one sample per query; "ignore" polygons count in neither intersection nor union."""

    name = "reasoning"
    card_task = "reasoning"
    prompt = {"question": prompt_templates.REASONING_SENTENCE_QUESTIONS[0] + " (sentences); "
              + prompt_templates.REFERRING_QUESTIONS[0] + " (phrases)",
              "answer": prompt_templates.REASONING_ANSWERS[0]}
    protocol = "one sample per query, split short (phrase) / long (sentence) by is_sentence; no explanation asked"

    def _load(self) -> ExampleSource:
        return load_reasonseg(self.data["split_dir"])

    @property
    def split(self) -> str | None:
        return Path(self.data["split_dir"]).name

    def samples(self, example: XSamExample) -> list[EvalSample]:
        is_sentence = bool(example.is_sentence)
        samples = []
        for sample in expand_per_expression(example):
            (obj,) = sample.objects
            key = sample.record_id.rpartition("#")[2]
            request = ReasoningRequest(sample.class_names[0], is_sentence=is_sentence)
            samples.append(EvalSample(key, request, {"mask": obj.mask, "ignore_mask": example.ignore_mask,
                                                     "text": sample.class_names[0], "is_sentence": is_sentence}))
        return samples

    def reference_array(self, sample: EvalSample) -> np.ndarray:
        reference = decode_rle(sample.reference["mask"]).astype(np.uint8)
        if sample.reference["ignore_mask"] is not None:
            reference[decode_rle(sample.reference["ignore_mask"])] = IGNORE_ID
        return reference

    def record(self, sample: EvalSample, prediction: Mapping[str, Any]) -> Record:
        return {**super().record(sample, prediction), "is_sentence": sample.reference["is_sentence"]}

    def new_metrics(self) -> MetricFold:
        return _ReasoningFold()


# ------------------------------------------------------------------------------------------------------------------
# Interactive (per prompt type) and VGD


def visual_prompt_from_rle(rle: Mapping[str, Any], image: Any = None) -> VisualPrompt:
    """The stored (already dilated) prompt mask as a mask prompt: exactly the region the official code feeds.
    ``image``: the image it is drawn on when not the sample's own (cross-image VGD)."""
    return VisualPrompt.mask(decode_rle(dict(rle)), image=image)


def is_cross_image_vgd(path: str | Path) -> bool:
    """Whether a VGD file holds cross-image entries (with ``prompts``); reads only its first entry."""
    path = Path(path)
    if not path.is_file():
        return False  # COCO-VGD still to be generated (generate_from)
    try:
        first = next(iter_json_array(path), None)
    except ValueError:
        return False  # not a list: the COCO-VGD loader reports it
    return isinstance(first, Mapping) and "prompts" in first


class _InteractiveFold(MetricFold):
    def __init__(self) -> None:
        self.accumulator = InteractiveIoUAccumulator()

    def add(self, example_index: int, record: Record) -> None:
        self.accumulator.add_counts(record["intersection"], record["union"], record["prompt_type"])

    def compute(self) -> dict[str, Any]:
        return self.accumulator.compute()


class InteractiveTask(TaskAdapter):
    """COCO-Interactive: one sample per annotation per prompt type present."""

    name = "interactive"
    card_task = "interactive"
    threshold_tasks = ("interactive",)
    prompt = {"question": prompt_templates.VISUAL_PROMPT_QUESTIONS[0],
              "answer": prompt_templates.SEGMENTATION_ANSWERS[0]}
    protocol = ("one sample per annotation per prompt type; the stored prompt masks (points dilated by 10 px, "
                "scribbles by 5 px) are the regions; the kept query whose mask box best overlaps the prompt's box")

    def _load(self) -> ExampleSource:
        return load_coco_interactive(self.data["annotations_json"], self.data["image_dir"],
                                     categories=self.data.get("categories"))

    def samples(self, example: XSamExample) -> list[EvalSample]:
        samples = []
        for sample in expand_interactive_eval(example):
            (obj,) = sample.objects
            (visual_prompt,) = obj.visual_prompts
            request = InteractiveRequest(visual_prompt_from_rle(visual_prompt.mask),
                                         name=sample.class_names[0] or "region")
            samples.append(EvalSample(f"{obj.object_id}:{visual_prompt.type}", request,
                                      {"mask": obj.mask, "prompt_type": visual_prompt.type,
                                       "object_id": obj.object_id}))
        return samples

    def post_process(self, processor: Any, outputs: Any, inputs: Any) -> list[Any]:
        return processor.post_process_interactive_segmentation(outputs, inputs, thresholds=self.options.thresholds)

    def record(self, sample: EvalSample, prediction: Mapping[str, Any] | None) -> Record:
        reference = decode_rle(sample.reference["mask"])
        mask = _first_mask(prediction, reference.shape)
        intersection, union = mask_counts(mask, reference)
        return {"prompt_type": sample.reference["prompt_type"], "object_id": sample.reference["object_id"],
                "intersection": intersection, "union": union, "rle": encode_mask_rle(mask)}

    def new_metrics(self) -> MetricFold:
        return _InteractiveFold()


class _VGDFold(MetricFold):
    """Buffers the records and builds the per-type COCOeval at the end, over the categories the records name.

    Categories that no record names have no reference, so COCOeval leaves them out of the mean either way.
    """

    def __init__(self) -> None:
        self.records: list[tuple[int, Record]] = []

    def add(self, example_index: int, record: Record) -> None:
        self.records.append((example_index, record))

    def compute(self) -> dict[str, Any]:
        category_ids = sorted({int(c) for _, r in self.records for c in r["prompted_category_ids"]}
                              | {int(ref["category_id"]) for _, r in self.records for ref in r["references"]})
        accumulator = VGDMaskAPAccumulator(category_ids or [0])
        unprompted = dict.fromkeys(PROMPT_TYPES, 0)
        for example_index, record in self.records:
            detections, references = record["detections"], record["references"]
            accumulator.add(
                example_index + 1,
                record["prompt_type"],
                record["prompted_category_ids"],
                [r["rle"] for r in references],
                [r["category_id"] for r in references],
                [d["rle"] for d in detections],
                [d["score"] for d in detections],
                [d["label_id"] for d in detections],
                reference_iscrowd=[int(r["iscrowd"]) for r in references],
                image_size=tuple(record["image_size"]),
            )
            unprompted[record["prompt_type"]] += int(record["num_unprompted_references"])
        results = accumulator.compute()
        for prompt_type, count in unprompted.items():
            results[prompt_type]["num_unprompted_references"] = count
            results[prompt_type]["num_images"] = sum(1 for _, r in self.records if r["prompt_type"] == prompt_type)
        return results


class VGDTask(TaskAdapter):
    """COCO-VGD: per image and prompt type, one sample prompting every category present (see module docstring)."""

    name = "vgd"
    card_task = "vgd"
    threshold_tasks = ("vgd",)
    prompt = InteractiveTask.prompt
    protocol = ("per image and prompt type: every reference category present is prompted (no negatives), in "
                "ascending category order, with the prompt of its first instance that has this prompt type; "
                "labels map back to category ids through the prompted list")

    cross_image_protocol = ("cross-image: per image and prompt type, every category whose stored prompt (one per "
                            "category, drawn on another image, fed as that image's region) has this prompt type; "
                            "labels map back to category ids through the prompted list")

    def _load(self) -> ExampleSource:
        if is_cross_image_vgd(self.data["annotations_json"]):
            from ..synthetic.cross_image import load_cross_image_vgd

            self.protocol = self.cross_image_protocol
            names = self.data.get("categories") or self.data.get("generate_from")
            kwargs = {"categories": load_json(names)["categories"]} if names else {}
            return load_cross_image_vgd(self.data["annotations_json"], self.data["image_dir"], **kwargs)
        return load_coco_vgd(self.data["annotations_json"], self.data["image_dir"],
                             categories=self.data.get("categories"), generate_from=self.data.get("generate_from"))

    def samples(self, example: XSamExample) -> list[EvalSample]:
        if "prompts" in example.meta:
            return self._cross_image_samples(example)
        samples = []
        for prompt_type in PROMPT_TYPES:
            chosen: dict[int, Any] = {}  # class index -> (object, prompt), first instance in annotation order
            for obj in example.objects:
                if obj.iscrowd or obj.class_index < 0 or obj.class_index in chosen:
                    continue
                visual_prompt = obj.prompt(prompt_type)
                if visual_prompt is not None:
                    chosen[obj.class_index] = (obj, visual_prompt)
            if not chosen:
                continue
            class_indices = sorted(chosen)
            prompted_ids = [example.class_ids[i] for i in class_indices]
            references = [o for o in example.objects if o.class_index in chosen]
            unprompted = sum(1 for o in example.objects if o.class_index >= 0 and o.class_index not in chosen)
            request = VGDRequest([visual_prompt_from_rle(chosen[i][1].mask) for i in class_indices],
                                 names=[example.class_names[i] for i in class_indices])
            samples.append(EvalSample(prompt_type, request, {
                "prompt_type": prompt_type,
                "prompted_category_ids": prompted_ids,
                "prompted_object_ids": [chosen[i][0].object_id for i in class_indices],
                "references": [{"category_id": example.class_ids[o.class_index], "iscrowd": int(o.iscrowd),
                                "rle": o.mask} for o in references],
                "num_unprompted_references": unprompted,
                "size": example.image_size,
            }))
        return samples

    def _cross_image_samples(self, example: XSamExample) -> list[EvalSample]:
        """Prompt k (class index k) is drawn on its own image, passed to the processor as the region source."""
        from ..processing import load_image

        prompts = example.meta["prompts"]
        images: dict[str, Any] = {}  # one object per path: the processor encodes each prompt image once per batch
        for prompt in prompts:
            if prompt["image_path"] not in images:
                images[prompt["image_path"]] = load_image(prompt["image_path"])
        samples = []
        for prompt_type in PROMPT_TYPES:
            chosen = [k for k, p in enumerate(prompts) if p["visual_prompts"].get(prompt_type) is not None
                      and decode_rle(p["visual_prompts"][prompt_type]).any()]
            if not chosen:
                continue
            references = [o for o in example.objects if o.class_index in chosen]
            request = VGDRequest([visual_prompt_from_rle(prompts[k]["visual_prompts"][prompt_type],
                                                         images[prompts[k]["image_path"]]) for k in chosen],
                                 names=[example.class_names[k] for k in chosen])
            samples.append(EvalSample(prompt_type, request, {
                "prompt_type": prompt_type,
                "prompted_category_ids": [example.class_ids[k] for k in chosen],
                "prompted_object_ids": [str(prompts[k]["annotation_id"]) for k in chosen],
                "prompt_image_ids": [prompts[k]["image_id"] for k in chosen],
                "references": [{"category_id": example.class_ids[o.class_index], "iscrowd": int(o.iscrowd),
                                "rle": o.mask} for o in references],
                "num_unprompted_references": len(example.objects) - len(references),
                "size": example.image_size,
            }))
        return samples

    def post_process(self, processor: Any, outputs: Any, inputs: Any) -> list[Any]:
        return processor.post_process_vgd_segmentation(
            outputs, inputs, thresholds=self.options.thresholds, return_coco_annotation=True
        )

    def record(self, sample: EvalSample, prediction: Mapping[str, Any]) -> Record:
        reference = sample.reference
        return {
            "prompt_type": reference["prompt_type"],
            "prompted_category_ids": reference["prompted_category_ids"],
            "prompted_object_ids": reference["prompted_object_ids"],
            "detections": [{"label_id": int(s["label_id"]), "score": float(s["score"]), "rle": s["rle"]}
                           for s in prediction["segments_info"]],
            "references": reference["references"],
            "num_unprompted_references": reference["num_unprompted_references"],
            "image_size": list(reference["size"]),
            **({"prompt_image_ids": reference["prompt_image_ids"]} if "prompt_image_ids" in reference else {}),
        }

    def new_metrics(self) -> MetricFold:
        return _VGDFold()


# ------------------------------------------------------------------------------------------------------------------
# Generated text: GCG and conversation


class _GCGFold(MetricFold):
    def __init__(self, caption_metrics: Sequence[str]) -> None:
        self.caption_metrics = tuple(caption_metrics)
        self.accumulator = GCGAccumulator()

    def add(self, example_index: int, record: Record) -> None:
        self.accumulator.add(example_index, record["caption"], record["reference_caption"],
                             record["prediction_rles"], record["reference_rles"])

    def compute(self) -> dict[str, Any]:
        return self.accumulator.compute(self.caption_metrics)


class GCGTask(TaskAdapter):
    """GranD-f GCG evaluation files: the model writes a grounded caption; masks come from its phrases."""

    name = "gcg"
    card_task = "gcg"
    generative = True
    threshold_tasks = ("gcg",)
    prompt = {"question": prompt_templates.GCG_QUESTIONS[0], "answer": "(generated, greedy)"}
    protocol = ("greedy generation; caption = generated text without the sentences holding <SEG>, tags removed; "
                "phrase k's mask = its best query, sigmoid > 0.5, later phrases overwrite earlier ones; every "
                "phrase of the answer, also those in the dropped <SEG> sentence")

    def _load(self) -> ExampleSource:
        return load_gcg_eval(self.data["mask_json"], self.data["caption_json"], self.data["image_dir"])

    def samples(self, example: XSamExample) -> list[EvalSample]:
        return [EvalSample("image", GCGRequest(), {"caption": example.caption,
                                                   "masks": [o.mask for o in example.objects]})]

    def post_process(self, processor: Any, outputs: Any, inputs: Any) -> list[Any]:
        texts = list(outputs.generated_texts)
        results = processor.post_process(outputs, inputs, generated=texts, thresholds=self.options.thresholds)
        return [{"generated_text": text, "result": result} for text, result in zip(texts, results)]

    def record(self, sample: EvalSample, prediction: Mapping[str, Any]) -> Record:
        result = prediction["result"]
        masks: list[np.ndarray] = []
        segmentation = result.get("segmentation")
        if segmentation is not None:
            # the official rule: phrase k paints id k + 1, later phrases overwrite, so masks come from the id map
            ids = to_numpy(segmentation)
            masks = [ids == value for value in np.unique(ids) if value > 0]
        return {
            "generated_text": prediction["generated_text"],
            "caption": clean_gcg_caption(prediction["generated_text"]),
            "phrases": [phrase for phrase, _, _ in result["entities"]],
            "prediction_rles": _rle_records(masks),
            "reference_caption": sample.reference["caption"],
            "reference_rles": list(sample.reference["masks"]),
        }

    def new_metrics(self) -> MetricFold:
        return _GCGFold(self.options.caption_metrics)


class _ConversationFold(MetricFold):
    def __init__(self) -> None:
        self.accumulator = ConversationAccuracy()

    def add(self, example_index: int, record: Record) -> None:
        self.accumulator.add(record["prediction"], record["reference"])

    def compute(self) -> dict[str, Any]:
        return self.accumulator.compute()


class ConversationTask(TaskAdapter):
    """LLaVA-format conversations: every assistant turn is one question, asked with the earlier reference turns as
    history; exact match after normalisation, or the option letter when the reference is a bare letter."""

    name = "conversation"
    card_task = "conversation"
    generative = True
    segment_generation = False
    prompt = {"question": "(the data set's own questions)", "answer": "(generated, greedy)"}
    protocol = ("one sample per assistant turn, earlier turns teacher-forced with the reference answers; "
                "multiple choice when the reference is a bare option letter, else normalised exact match")

    def _load(self) -> ExampleSource:
        return load_llava(self.data["llava_json"], self.data["image_dir"])

    def samples(self, example: XSamExample) -> list[EvalSample]:
        samples = []
        messages: list[dict[str, str]] = []
        for position, turn in enumerate(example.conversation):
            if turn.role == "assistant" and messages and messages[-1]["role"] == "user":
                samples.append(EvalSample(f"turn{position}", ConversationRequest(list(messages)),
                                          {"question": messages[-1]["content"], "answer": turn.text}))
            messages.append({"role": turn.role, "content": turn.text})
        return samples

    def post_process(self, processor: Any, outputs: Any, inputs: Any) -> list[Any]:
        return [text.strip() for text in outputs.generated_texts]

    def record(self, sample: EvalSample, prediction: str) -> Record:
        scorer = ConversationAccuracy()
        correct = scorer.add(prediction, sample.reference["answer"])
        return {"question": sample.reference["question"], "prediction": prediction,
                "reference": sample.reference["answer"], "correct": bool(correct),
                "mode": "choice" if scorer.choice_total else "exact"}

    def new_metrics(self) -> MetricFold:
        return _ConversationFold()


TASK_ADAPTERS: dict[str, type[TaskAdapter]] = {
    adapter.name: adapter
    for adapter in (GenericSegmentationTask, SemanticSegmentationTask, InstanceSegmentationTask, OpenVocabularyTask,
                    ReferringTask, ReasoningTask, GCGTask, InteractiveTask, VGDTask, ConversationTask)
}


def make_task(task: str, data: Mapping[str, str], options: EvalOptions = EvalOptions()) -> TaskAdapter:
    if task not in TASK_ADAPTERS:
        raise ValueError(f"unknown task {task!r}; choose from {sorted(TASK_ADAPTERS)}")
    return TASK_ADAPTERS[task](data, options)
