"""Publishing X-SAM on the Hugging Face Hub: model cards, and pushes of models, LoRA adapters and Trainer checkpoints.

Where the converted release lives: `RELEASED_MODEL_ID` ("xsam-hf/X-SAM-Phi3-mini") is the Hub id under which the
output of `xsam convert` on the official S3 checkpoint (`hao9610/X-SAM`,
`s3_mixed_finetune/.../pytorch_model.bin`) is meant to be published, so that users type

    import xsam_hf  # registers X-SAM with the transformers Auto classes
    model = AutoModel.from_pretrained("xsam-hf/X-SAM-Phi3-mini")
    processor = AutoProcessor.from_pretrained("xsam-hf/X-SAM-Phi3-mini")

Every push is ONE commit through transformers' shared Hub client (`transformers.utils.hub.hf_api()`, the client
`model.push_to_hub` uses): the object's own `save_pretrained` output (for a peft model exactly what
`PeftModel.push_to_hub` uploads), the processor's files and a generated model card. A later plain
`model.push_to_hub(repo_id)` keeps that card: transformers loads the README already in the repository and only adds
tags.

Publishing the release: `xsam convert <official S3 pytorch_model.bin> -o X-SAM-Phi3-mini --tokenizer
microsoft/Phi-3-mini-4k-instruct`, then `push_checkpoint("X-SAM-Phi3-mini", RELEASED_MODEL_ID, kind="converted",
eval_results="eval.json")`.

Evaluation results on the card come from the JSON that `xsam eval` writes (`EVAL_RESULTS_FORMAT` below).
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from numbers import Real
from pathlib import Path
from typing import Any, Literal

from huggingface_hub import CommitOperationAdd, EvalResult, ModelCard, ModelCardData
from transformers.utils import hub as transformers_hub

RELEASED_MODEL_ID = "xsam-hf/X-SAM-Phi3-mini"
"""Hub id of the converted official X-SAM (Phi-3-mini, stage S3) release."""

OFFICIAL_WEIGHTS_ID = "hao9610/X-SAM"
OFFICIAL_CODE_URL = "https://github.com/wanghao9610/X-SAM"
BASE_MODELS = ("google/siglip2-so400m-patch14-384", "facebook/sam-vit-large", "microsoft/Phi-3-mini-4k-instruct")
"""The pretrained components of the released model (SigLIP2 vision tower, SAM ViT-L image encoder, Phi-3-mini)."""

DEFAULT_TAGS = (
    "x-sam",
    "image-segmentation",
    "referring-segmentation",
    "panoptic-segmentation",
    "interactive-segmentation",
    "multimodal",
    "sam",
    "mask2former",
)
LICENSE = "apache-2.0"

EVAL_RESULTS_FORMAT = """\
The evaluation JSON (what `xsam eval` writes as results.json, and what `read_eval_results` reads):

{
  "model": "<model name or path>",        # optional, not used by the card
  "results": {                            # one entry per benchmark
    "<benchmark>": {                      # e.g. "refcoco_unc_val", "panoptic_val2017", "val_gcg"
      "<metric>": <number>,               # a score as the evaluator computes it (fractions, e.g. "cIoU": 0.803);
                                          #   NaN or null: no value (left out of the card's metadata)
      "<group>": {"<metric>": <number>},  # nested scores (per prompt type, per split) become "<group>/<metric>"
      "num_samples": 1500,                # counts are not scores: "n", "n_th", "n_st" and keys starting "num_"
      "per_category": {...},              # details are not scores: "per_category", "per_class_iou",
      "per_class_iou": [...],             #   "per_class_acc" and any list
      "_task": "referring",               # optional: the X-SAM task (one of xsam_hf.processing.TASKS); default:
                                          #   the benchmark name if it is a task name, else unspecified
      "_dataset": "refcoco",              # optional: Hub dataset id or name (default: the benchmark name)
      "_split": "val"                     # optional: dataset split
    }
  },
  "meta": {...}                           # optional: run bookkeeping, not used by the card
}

The bare `results` object (benchmark -> entry, top-level keys starting with "_" ignored) is accepted as well, and so
is a list of documents (one per `xsam eval` run), merged in order; a benchmark may appear only once. Scores are
copied unchanged into the card's `model-index` metadata and shown as percentages (x 100, like the paper's tables) in
the card's results table.
"""

# Entries of a benchmark's result object that are bookkeeping, not scores (the evaluation tables' rule).
_BOOKKEEPING = ("n", "n_th", "n_st", "per_category", "per_class_iou", "per_class_acc")
_TASK_TYPES = {
    "panoptic": ("image-segmentation", "Panoptic segmentation"),
    "semantic": ("image-segmentation", "Semantic segmentation"),
    "instance": ("image-segmentation", "Instance segmentation"),
    "open_vocabulary": ("image-segmentation", "Open-vocabulary segmentation"),
    "referring": ("image-segmentation", "Referring segmentation"),
    "reasoning": ("image-segmentation", "Reasoning segmentation"),
    "interactive": ("image-segmentation", "Interactive segmentation"),
    "vgd": ("image-segmentation", "Visual grounded (VGD) segmentation"),
    "gcg": ("image-text-to-text", "Grounded conversation generation (GCG)"),
    "conversation": ("image-text-to-text", "Image conversation"),
}

# Files of a Trainer checkpoint that are training state, not the model (pickles among them): not uploaded unless
# asked for.
TRAINING_STATE_PATTERNS = (
    r"optimizer\.(pt|bin)",
    r"scheduler\.pt",
    r"scaler\.pt",
    r"rng_state(_\d+)?\.pth",
    r"training_args\.bin",
    r"global_step\d+(/.*)?",
)
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors", "pytorch_model.bin")
_PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json")

CardKind = Literal["model", "converted", "adapter", "checkpoint"]


# ----------------------------------------------------------------------------------------------------------------
# Evaluation results
EvalSource = str | os.PathLike | Mapping[str, Any]


def read_eval_results(source: EvalSource | Sequence[EvalSource]) -> dict[str, dict[str, Any]]:
    """Read and check `xsam eval`'s results (see `EVAL_RESULTS_FORMAT`): a results.json path, a parsed document, or
    a list of them.

    Returns:
        `{benchmark: {"task": str | None, "dataset": str, "split": str | None, "scores": {metric: float}}}` in file
        order, nested groups flattened to `"group/metric"`, bookkeeping entries left out.

    Raises:
        ValueError: when a benchmark is not an object, a score is not a number, `_task` is not an X-SAM task, or a
            benchmark appears in two documents.
    """
    documents = [source] if isinstance(source, (str, os.PathLike, Mapping)) else list(source)
    results: dict[str, dict[str, Any]] = {}
    for document in documents:
        raw = document if isinstance(document, Mapping) else json.loads(Path(document).read_text())
        if not isinstance(raw, Mapping):
            raise ValueError("Evaluation results must be a JSON object.")
        if isinstance(raw.get("results"), Mapping):  # the results.json envelope of `xsam eval`
            raw = raw["results"]
        for benchmark, entry in raw.items():
            if str(benchmark).startswith("_"):
                continue
            if str(benchmark) in results:
                raise ValueError(f"Benchmark {benchmark!r} appears in more than one results document.")
            results[str(benchmark)] = _read_benchmark(str(benchmark), entry)
    return results


def _read_benchmark(benchmark: str, entry: Any) -> dict[str, Any]:
    if not isinstance(entry, Mapping):
        raise ValueError(f"Benchmark {benchmark!r}: expected an object of metrics, got {type(entry).__name__}.")
    task = entry.get("_task", benchmark if benchmark in _TASK_TYPES else None)
    if task is not None and task not in _TASK_TYPES:
        raise ValueError(f"Benchmark {benchmark!r}: unknown _task {task!r}; one of {sorted(_TASK_TYPES)}.")
    scores = _flatten_scores(entry, benchmark)
    if not scores:
        raise ValueError(f"Benchmark {benchmark!r} has no scores.")
    return {"task": task, "dataset": str(entry.get("_dataset", benchmark)), "split": entry.get("_split"),
            "scores": scores}


def _flatten_scores(entry: Mapping[str, Any], where: str, prefix: str = "") -> dict[str, float]:
    scores: dict[str, float] = {}
    for name, value in entry.items():
        name = str(name)
        if name.startswith("_") or name in _BOOKKEEPING or name.startswith("num_") or isinstance(value, list):
            continue
        if isinstance(value, Mapping):
            scores.update(_flatten_scores(value, where, f"{prefix}{name}/"))
        elif value is None:
            scores[f"{prefix}{name}"] = math.nan
        elif isinstance(value, Real) and not isinstance(value, bool):
            scores[f"{prefix}{name}"] = float(value)
        else:
            raise ValueError(f"Benchmark {where!r}: score {prefix}{name} = {value!r} is not a number.")
    return scores


def eval_results_for_card(results: Mapping[str, Mapping[str, Any]]) -> list[EvalResult]:
    """`huggingface_hub.EvalResult`s (the card's `model-index`) from `read_eval_results`' output."""
    card_results = []
    for benchmark, entry in results.items():
        task_type, task_name = _TASK_TYPES.get(entry["task"], ("image-segmentation", None))
        for metric, value in entry["scores"].items():
            if math.isnan(value):
                continue
            card_results.append(
                EvalResult(
                    task_type=task_type,
                    task_name=task_name,
                    dataset_type=entry["dataset"],
                    dataset_name=benchmark,
                    dataset_split=entry["split"],
                    metric_type=metric,
                    metric_name=metric,
                    metric_value=value,
                )
            )
    return card_results


def results_table(results: Mapping[str, Mapping[str, Any]], digits: int = 1) -> str:
    """The Markdown table of `xsam eval` (percentages, one row per benchmark)."""
    from .evaluation.table import format_results_table

    return format_results_table({name: entry["scores"] for name, entry in results.items()}, digits=digits)


# ----------------------------------------------------------------------------------------------------------------
# Model cards
_CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ title }}

{{ description }}

## Usage

```python
{{ usage }}
```
{% if notes %}
{{ notes }}
{% endif %}
{% if results %}
## Evaluation

{{ results_intro }}

{{ results }}
{% endif %}
{% if training %}
## Training

{{ training }}
{% endif %}
## Model details

- **Architecture:** X-SAM: a SigLIP vision tower and a SAM ViT image encoder feed a causal LLM; every `<SEG>` token
  the LLM emits conditions a Mask2Former decoder, and the classes are the LLM's embeddings of the `<p>...</p>`
  phrases (generic, open-vocabulary, referring, reasoning, interactive, visual-grounded segmentation and GCG).
- **Stage:** {{ stage_text }}
- **Pretrained components:** {{ components }}
- **Implementation:** `xsam-hf`, a Transformers-native implementation of the official code ({{ official_code }}).
  Original weights: [{{ official_weights }}](https://huggingface.co/{{ official_weights }}).
- **License:** Apache-2.0, the license of the official X-SAM code; the pretrained components keep their own
  (SigLIP 2 and SAM: Apache-2.0, Phi-3-mini: MIT).
"""

_STAGE_TEXT = {
    "s1": "S1 (segmentor fine-tuning: SAM encoder, connector, Mask2Former decoder and a 133-class closed-set head; no "
    "LLM). An intermediate training stage, not a prompting model.",
    "s2": "S2 (alignment pre-training: only the two image projectors are trained). An intermediate training stage.",
    "s3": "S3 (mixed fine-tuning on all tasks): the full model.",
}

_MODEL_USAGE = """\
import torch
import xsam_hf  # registers X-SAM with the transformers Auto classes
from PIL import Image
from transformers import AutoModel, AutoProcessor

model = AutoModel.from_pretrained("{repo_id}")
processor = AutoProcessor.from_pretrained("{processor_id}")

image = Image.open("photo.jpg").convert("RGB")
inputs = processor(images=image, task="panoptic", categories=["person", "dog", "grass"], stuff_categories=["grass"])
with torch.no_grad():
    outputs = model(**inputs)
panoptic = processor.post_process_panoptic_segmentation(outputs, inputs)[0]
print([(segment["label"], round(segment["score"], 2)) for segment in panoptic["segments_info"]])

inputs = processor(images=image, task="referring", expressions="the dog on the left")
with torch.no_grad():
    outputs = model(**inputs)
mask = processor.post_process_referring_segmentation(outputs, inputs)[0]["masks"][0]  # (H, W) bool"""

_ADAPTER_USAGE = """\
import torch
import xsam_hf  # registers X-SAM with the transformers Auto classes
from peft import PeftModel
from PIL import Image
from transformers import AutoModel, AutoProcessor

base = AutoModel.from_pretrained("{base_model}")
model = PeftModel.from_pretrained(base, "{repo_id}").eval()
processor = AutoProcessor.from_pretrained("{processor_id}")

image = Image.open("photo.jpg").convert("RGB")
inputs = processor(images=image, task="referring", expressions="the dog on the left")
with torch.no_grad():
    outputs = model(**inputs)
mask = processor.post_process_referring_segmentation(outputs, inputs)[0]["masks"][0]  # (H, W) bool"""

_STAGE_USAGE = """\
from huggingface_hub import snapshot_download
import xsam_hf  # registers X-SAM with the transformers Auto classes
from xsam_hf import XSamForSegmentation

# An intermediate training stage: the next stage starts from the pretrained components and takes this stage's
# parts (S2 <- S1's SAM encoder; S3 <- S1's SAM encoder, connector and decoder, and S2's projectors).
model = XSamForSegmentation.from_components(
    "google/siglip2-so400m-patch14-384", "facebook/sam-vit-large", "microsoft/Phi-3-mini-4k-instruct"
)
report = model.load_stage_weights(snapshot_download("{repo_id}"), from_stage="{stage}")
print(report.summary())"""

_QUANTIZED_NOTE = """\
Quantized inference (the LLM's decoder layers in 4-bit NF4, everything else, including the image features, exact):

```python
from xsam_hf.quantization import load_quantized
model = load_quantized("{repo_id}", bits=4)
```"""


def build_model_card(
    repo_id: str,
    *,
    kind: CardKind = "model",
    stage: str = "s3",
    eval_results: EvalSource | Sequence[EvalSource] | None = None,
    base_model: str | Sequence[str] | None = None,
    tags: Sequence[str] = (),
    model_name: str | None = None,
    source: str | None = None,
    trainer_state: Mapping[str, Any] | None = None,
    with_processor: bool = True,
    processor_id: str | None = None,
    datasets: Sequence[str] | None = None,
) -> ModelCard:
    """A model card for an X-SAM repository.

    Args:
        repo_id: the repository the card describes (named in the usage snippet).
        kind: "converted" (the official weights through `xsam convert`), "model" (a pushed `XSamForSegmentation`),
            "adapter" (a LoRA adapter; `library_name` is then "peft"), "checkpoint" (a Trainer checkpoint of a
            full model; an adapter checkpoint is "adapter").
        stage: the model's `config.stage`.
        eval_results: `xsam eval`'s JSON (path or parsed), see `EVAL_RESULTS_FORMAT`.
        base_model: the card's `base_model` metadata: for an adapter the model it applies to (default
            `RELEASED_MODEL_ID`); otherwise the pretrained components (default `BASE_MODELS`).
        tags: added to `DEFAULT_TAGS`.
        source: for "converted", the official file name.
        trainer_state: a Trainer checkpoint's `trainer_state.json` (step, epoch, last losses).
        with_processor: whether the repository holds the processor files (else the snippet loads the processor
            from `processor_id`, default the base model for adapters or `RELEASED_MODEL_ID`).
    """
    if kind == "adapter":
        bases = [base_model] if isinstance(base_model, str) else list(base_model or [RELEASED_MODEL_ID])
    else:
        bases = [base_model] if isinstance(base_model, str) else list(base_model or BASE_MODELS)
    all_tags = list(dict.fromkeys([*DEFAULT_TAGS, *(["lora", "peft"] if kind == "adapter" else []), *tags]))
    name = model_name or repo_id.split("/")[-1]
    results = read_eval_results(eval_results) if eval_results is not None else None
    card_data = ModelCardData(
        license=LICENSE,
        library_name="peft" if kind == "adapter" else "transformers",
        pipeline_tag="image-segmentation",
        tags=all_tags,
        base_model=bases if len(bases) > 1 else bases[0],
        datasets=list(datasets) if datasets else None,
        model_name=name,
        eval_results=(eval_results_for_card(results) or None) if results else None,
    )
    if processor_id is None:
        processor_id = repo_id if with_processor else (bases[0] if kind == "adapter" else RELEASED_MODEL_ID)
    notes = ""
    if kind == "adapter":
        usage = _ADAPTER_USAGE.format(base_model=bases[0], repo_id=repo_id, processor_id=processor_id)
        description = (
            f"A LoRA adapter for X-SAM on top of [{bases[0]}](https://huggingface.co/{bases[0]}): adapters on the "
            "LLM's attention and MLP projections, plus whatever the adapter's `modules_to_save` and trainable token "
            "rows hold. Load the base model, then the adapter."
        )
    elif stage in ("s1", "s2"):
        usage = _STAGE_USAGE.format(stage=stage, repo_id=repo_id)
        description = f"X-SAM weights of training stage {stage.upper()}, in the xsam-hf layout."
    else:
        usage = _MODEL_USAGE.format(repo_id=repo_id, processor_id=processor_id)
        notes = _QUANTIZED_NOTE.format(repo_id=repo_id)
        description = (
            "X-SAM segments anything a prompt asks for with one multimodal LLM: generic (panoptic, semantic, "
            "instance), open-vocabulary, referring, reasoning, interactive (point, scribble, box, mask) and "
            "visual-grounded segmentation, and grounded conversation generation."
        )
    if kind == "converted":
        description += (
            f"\n\nThese are the official weights ([{OFFICIAL_WEIGHTS_ID}](https://huggingface.co/{OFFICIAL_WEIGHTS_ID})"
            f"{', `' + source + '`' if source else ''}) converted by `xsam convert`: keys renamed to the "
            "Transformers layout, tensors unchanged (safetensors, sharded)."
        )
    elif kind == "checkpoint":
        description += "\n\nA training checkpoint (a Trainer `checkpoint-N` folder)."
    return ModelCard.from_template(
        card_data,
        template_str=_CARD_TEMPLATE,
        title=name,
        description=description,
        usage=usage,
        notes=notes,
        results=results_table(results) if results else "",
        results_intro="Scores from `xsam eval`, in percent.",
        training=_training_summary(trainer_state) if trainer_state else "",
        stage_text=_STAGE_TEXT.get(stage, stage),
        components=", ".join(f"[{b}](https://huggingface.co/{b})" for b in BASE_MODELS),
        official_code=OFFICIAL_CODE_URL,
        official_weights=OFFICIAL_WEIGHTS_ID,
    )


def _training_summary(state: Mapping[str, Any]) -> str:
    lines = []
    if "global_step" in state:
        lines.append(f"- Global step: {state['global_step']}")
    if state.get("epoch") is not None:
        lines.append(f"- Epoch: {float(state['epoch']):.2f}")
    history = state.get("log_history") or []
    last_train = next((entry for entry in reversed(history) if "loss" in entry), None)
    if last_train is not None:
        lines.append(f"- Last logged training loss: {float(last_train['loss']):.4f} (step {last_train.get('step')})")
    last_eval = next((entry for entry in reversed(history) if "eval_loss" in entry), None)
    if last_eval is not None:
        lines.append(f"- Last evaluation loss: {float(last_eval['eval_loss']):.4f} (step {last_eval.get('step')})")
    if state.get("best_metric") is not None:
        lines.append(f"- Best metric: {state['best_metric']} (checkpoint {state.get('best_model_checkpoint')})")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
# Pushing
def _folder_operations(folder: Path, exclude: Sequence[str] = ()) -> list[CommitOperationAdd]:
    """One upload per file under `folder` (recursively), except the relative paths full-matching `exclude`."""
    patterns = [re.compile(p) for p in exclude]
    operations = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        if path.is_file() and not any(p.fullmatch(relative) for p in patterns) and relative != "README.md":
            operations.append(CommitOperationAdd(path_in_repo=relative, path_or_fileobj=str(path)))
    return operations


def _commit(
    repo_id: str,
    build: Callable[[str, Path], list[CommitOperationAdd]],
    *,
    commit_message: str,
    commit_description: str | None,
    private: bool | None,
    token: bool | str | None,
    revision: str | None,
    create_pr: bool,
):
    """Create the repository if needed, then make ONE commit of the operations `build(repo_id, staging_folder)`
    returns (a half-uploaded repository is never left behind by a failing save)."""
    api = transformers_hub.hf_api()
    repo_id = api.create_repo(repo_id, private=private, token=token, exist_ok=True).repo_id
    if revision is not None and not revision.startswith("refs/pr"):
        # A commit to a branch needs the branch (as `push_to_hub` does it).
        api.create_branch(repo_id=repo_id, branch=revision, token=token, exist_ok=True)
    with tempfile.TemporaryDirectory() as staging:
        operations = build(repo_id, Path(staging))
        return api.create_commit(
            repo_id=repo_id,
            operations=operations,
            commit_message=commit_message,
            commit_description=commit_description,
            token=token,
            revision=revision,
            create_pr=create_pr,
        )


def _card_operation(card: ModelCard) -> CommitOperationAdd:
    return CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=str(card).encode("utf-8"))


def push_model_to_hub(
    model: Any,
    repo_id: str,
    processor: Any = None,
    *,
    eval_results: EvalSource | Sequence[EvalSource] | None = None,
    kind: CardKind = "model",
    base_model: str | Sequence[str] | None = None,
    tags: Sequence[str] = (),
    private: bool | None = None,
    token: bool | str | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str = "Upload X-SAM model",
    commit_description: str | None = None,
    max_shard_size: int | str = "5GB",
):
    """Push an `XSamForSegmentation` (and its `XSamProcessor`) with a generated model card, in one commit.

    The files are what `model.save_pretrained` and `processor.save_pretrained` write (config, safetensors shards,
    processor and tokenizer files) plus README.md. Returns the `CommitInfo`.
    """
    if hasattr(model, "peft_config"):
        raise TypeError("This is a peft model: push its adapter with push_adapter_to_hub (or merge_and_unload first).")

    def build(final_id: str, folder: Path) -> list[CommitOperationAdd]:
        model.save_pretrained(folder, max_shard_size=max_shard_size)
        if processor is not None:
            processor.save_pretrained(folder)
        card = build_model_card(
            final_id,
            kind=kind,
            stage=getattr(model.config, "stage", "s3"),
            eval_results=eval_results,
            base_model=base_model,
            tags=tags,
            with_processor=processor is not None,
        )
        return _folder_operations(folder) + [_card_operation(card)]

    return _commit(
        repo_id, build, commit_message=commit_message, commit_description=commit_description, private=private,
        token=token, revision=revision, create_pr=create_pr,
    )


def _hub_id_or_none(value: str | None) -> str | None:
    """`value` if it reads as a Hub repository id (`owner/name`) rather than a local path."""
    if not value or os.path.exists(value) or not re.fullmatch(r"[\w.-]+/[\w.-]+", value):
        return None
    return value


def push_adapter_to_hub(
    peft_model: Any,
    repo_id: str,
    processor: Any = None,
    *,
    base_model_id: str | None = None,
    eval_results: EvalSource | Sequence[EvalSource] | None = None,
    tags: Sequence[str] = (),
    private: bool | None = None,
    token: bool | str | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str = "Upload X-SAM LoRA adapter",
    commit_description: str | None = None,
):
    """Push a peft LoRA adapter of X-SAM with a generated model card, in one commit.

    The files are `peft_model.save_pretrained`'s (`adapter_config.json`, `adapter_model.safetensors`: what
    `PeftModel.push_to_hub` uploads), the processor's if given, and README.md. `base_model_name_or_path` in the
    uploaded `adapter_config.json` is set to `base_model_id` (default: the adapter's own base if that is a Hub id,
    else `RELEASED_MODEL_ID`), so `AutoPeftModel.from_pretrained(repo_id)` finds the base on the Hub.
    """
    if not hasattr(peft_model, "peft_config"):
        raise TypeError("Not a peft model: push full models with push_model_to_hub.")
    adapter_names = list(peft_model.peft_config)
    own_base = getattr(peft_model.peft_config[adapter_names[0]], "base_model_name_or_path", None)
    base = base_model_id or _hub_id_or_none(own_base) or RELEASED_MODEL_ID

    def build(final_id: str, folder: Path) -> list[CommitOperationAdd]:
        peft_model.save_pretrained(folder)
        _set_adapter_base(folder, base)
        if processor is not None:
            processor.save_pretrained(folder)
        card = build_model_card(
            final_id, kind="adapter", eval_results=eval_results, base_model=base, tags=tags,
            with_processor=processor is not None,
        )
        return _folder_operations(folder) + [_card_operation(card)]

    return _commit(
        repo_id, build, commit_message=commit_message, commit_description=commit_description, private=private,
        token=token, revision=revision, create_pr=create_pr,
    )


def _set_adapter_base(folder: Path, base: str) -> None:
    for config_path in folder.rglob("adapter_config.json"):
        config = json.loads(config_path.read_text())
        config["base_model_name_or_path"] = base
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def push_checkpoint(
    checkpoint_dir: str | os.PathLike,
    repo_id: str,
    *,
    processor: Any = None,
    eval_results: EvalSource | Sequence[EvalSource] | None = None,
    base_model_id: str | None = None,
    include_training_state: bool = False,
    kind: CardKind | None = None,
    tags: Sequence[str] = (),
    private: bool | None = None,
    token: bool | str | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str | None = None,
    commit_description: str | None = None,
):
    """Push a Trainer checkpoint folder (`output_dir/checkpoint-N`), or any saved X-SAM folder, with a model card.

    Uploaded: the model files (a full model's `config.json` + safetensors, or an adapter's `adapter_config.json` +
    `adapter_model.safetensors`), the processor/tokenizer files (from the folder, or saved from `processor` if the
    folder has none), `trainer_state.json`, and README.md (step, epoch and last losses from `trainer_state.json`;
    scores from `eval_results`). The training state (`optimizer.pt`, `scheduler.pt`, `scaler.pt`, `rng_state*.pth`,
    `training_args.bin`, DeepSpeed `global_step*/`) stays local unless `include_training_state=True`: it is large,
    only useful to resume, and partly pickled. Weight files are uploaded from where they are, without a copy.

    `kind` sets the card's kind (default "adapter" for an adapter folder, else "checkpoint"); publishing the output of
    `xsam convert` is `push_checkpoint(folder, RELEASED_MODEL_ID, kind="converted", eval_results=...)`.
    """
    folder = Path(checkpoint_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"No checkpoint folder at {folder}.")
    names = {p.name for p in folder.iterdir()}
    if not names & set(_WEIGHT_FILES):
        raise FileNotFoundError(f"{folder} holds no model weights (one of {', '.join(_WEIGHT_FILES)}).")
    is_adapter = "adapter_config.json" in names
    state_path = folder / "trainer_state.json"
    trainer_state = json.loads(state_path.read_text()) if state_path.is_file() else None
    stage = "s3"
    if not is_adapter and (folder / "config.json").is_file():
        stage = json.loads((folder / "config.json").read_text()).get("stage", "s3")
    base = None
    if is_adapter:
        adapter_config = json.loads((folder / "adapter_config.json").read_text())
        base = base_model_id or _hub_id_or_none(adapter_config.get("base_model_name_or_path")) or RELEASED_MODEL_ID
    has_processor = bool(names & set(_PROCESSOR_FILES))
    exclude = () if include_training_state else TRAINING_STATE_PATTERNS
    step = trainer_state.get("global_step") if trainer_state else None

    def build(final_id: str, staging: Path) -> list[CommitOperationAdd]:
        operations = _folder_operations(folder, exclude=exclude)
        if is_adapter and base is not None:
            # The adapter's base as a Hub id (a Trainer records the local path it loaded the base from).
            adapter_config["base_model_name_or_path"] = base
            operations = [op for op in operations if op.path_in_repo != "adapter_config.json"]
            operations.append(
                CommitOperationAdd(
                    path_in_repo="adapter_config.json",
                    path_or_fileobj=(json.dumps(adapter_config, indent=2, sort_keys=True) + "\n").encode("utf-8"),
                )
            )
        if processor is not None and not has_processor:
            processor.save_pretrained(staging)
            operations += _folder_operations(staging)
        card = build_model_card(
            final_id,
            kind=kind or ("adapter" if is_adapter else "checkpoint"),
            stage=stage,
            eval_results=eval_results,
            base_model=base,
            tags=tags,
            trainer_state=trainer_state,
            with_processor=has_processor or processor is not None,
        )
        return operations + [_card_operation(card)]

    message = commit_message or (f"Upload X-SAM checkpoint (step {step})" if step is not None else "Upload X-SAM")
    return _commit(
        repo_id, build, commit_message=message, commit_description=commit_description, private=private,
        token=token, revision=revision, create_pr=create_pr,
    )


__all__ = [
    "BASE_MODELS",
    "DEFAULT_TAGS",
    "EVAL_RESULTS_FORMAT",
    "OFFICIAL_WEIGHTS_ID",
    "RELEASED_MODEL_ID",
    "TRAINING_STATE_PATTERNS",
    "build_model_card",
    "eval_results_for_card",
    "push_adapter_to_hub",
    "push_checkpoint",
    "push_model_to_hub",
    "read_eval_results",
    "results_table",
]
