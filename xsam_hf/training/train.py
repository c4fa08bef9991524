"""`xsam train CONFIG [key=value ...]`: run one X-SAM training stage from a YAML recipe.

A recipe (see `xsam_hf/training/configs/`) says which stage to train (`stage: s1|s2|s3`), how to build the model
(a preset, a saved model, Hugging Face checkpoints for the sub-models, and the earlier stages to chain from), which
data to read (official formats, or your own COCO files), what trains (the stage policy, or LoRA / QLoRA), and the
`TrainingArguments`. `key.sub=value` arguments override any entry (values are read as YAML; list items by index:
`data.sources.0.image_dir=/data/coco/train2017`). `base: other.yaml` in a recipe inherits another recipe.

Outputs under `training.output_dir`: Trainer checkpoints (`checkpoint-N/`, resumable with `--resume`), and at the
end `final/` (the model and processor, `from_pretrained`-ready; with LoRA also `final/adapter/`) plus
`final/training_summary.json` (steps, skipped samples, stage-chaining reports).

Launch on several processes with `torchrun --nproc_per_node N -m xsam_hf.training.train CONFIG ...` or
`accelerate launch --multi_gpu --num_processes N -m xsam_hf.training.train CONFIG ...` (on CPU the gloo backend is
selected automatically).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import yaml

from ..modeling.nested_dicts import deep_merge
from .data.balance import BalancedConcatDataset
from .data.sampling import sample_genseg
from .data.skips import CorruptRecordError, SkipCounter
from .data.source import ExampleSource
from .data.training_dataset import TrainingSample, XSamTrainingDataset

logger = logging.getLogger(__name__)

CONFIG_PACKAGE = "xsam_hf.training"
CONFIG_FOLDER = "configs"
SEGMENTATION_TASKS = ("genseg", "ovseg", "refseg", "reaseg", "gcgseg", "intseg", "vgdseg")

# Recipe keys of a data source that are paths (resolved against `data.root` when relative).
_PATH_KEYS = {
    "annotations", "json_path", "panoptic_json", "panoptic_png_dir", "image_dir", "dataset_dir", "split_dir",
    "explanatory_json", "generate_from", "categories",
}


# ----------------------------------------------------------------------------------------------------------------
# Recipes
def builtin_recipes() -> list[str]:
    """Names of the recipes shipped with the package (usable as `xsam train NAME`)."""
    folder = resources.files(CONFIG_PACKAGE).joinpath(CONFIG_FOLDER)
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def _recipe_path(name: str | os.PathLike) -> Path:
    path = Path(name)
    if path.exists():
        return path
    stem = str(name).removesuffix(".yaml")
    packaged = resources.files(CONFIG_PACKAGE).joinpath(CONFIG_FOLDER, f"{stem}.yaml")
    if packaged.is_file():
        return Path(str(packaged))
    raise FileNotFoundError(f"No recipe {name!r}: not a file, nor one of the built-in recipes {builtin_recipes()}.")


def _packaged_file(name: str) -> str:
    """Path of a file shipped in the recipes folder (e.g. `deepspeed_zero2.json`); `name` unchanged if absent."""
    packaged = resources.files(CONFIG_PACKAGE).joinpath(CONFIG_FOLDER, name)
    return str(packaged) if packaged.is_file() else name


def load_recipe(name: str | os.PathLike, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Read a recipe (a path or a built-in name), resolve `base:` inheritance, apply `key=value` overrides."""
    path = _recipe_path(name)
    with open(path, encoding="utf-8") as handle:
        recipe = yaml.safe_load(handle) or {}
    base = recipe.pop("base", None)
    if base is not None:
        base_path = Path(base) if Path(base).is_absolute() else path.parent / base
        recipe = deep_merge(load_recipe(base_path if base_path.exists() else base), recipe)
    for override in overrides:
        apply_override(recipe, override)
    return recipe


def apply_override(recipe: dict, override: str) -> None:
    """Set `a.b.0.c=value` in place (the value is parsed as YAML; missing mappings are created)."""
    key, sep, raw = override.partition("=")
    if not sep or not key:
        raise ValueError(f"Overrides look like key.sub=value, got {override!r}.")
    value = yaml.safe_load(raw) if raw != "" else None
    parts = key.split(".")
    node: Any = recipe
    for position, part in enumerate(parts[:-1]):
        following = parts[position + 1]
        if isinstance(node, list):
            node = node[int(part)]
            continue
        if node.get(part) is None:
            node[part] = [] if following.isdigit() else {}
        node = node[part]
    last = parts[-1]
    if isinstance(node, list):
        index = int(last)
        if index == len(node):
            node.append(value)
        else:
            node[index] = value
    else:
        node[last] = value


# ----------------------------------------------------------------------------------------------------------------
# Data
@dataclass
class CountedSample(TrainingSample):
    """A training sample plus the number of records skipped to reach it (reported by the trainer)."""

    skipped: int = 0


class StageTrainingDataset(XSamTrainingDataset):
    """The data layer's training view of one source, adapted to a stage.

    * `raw_examples=True` (S1): the loaded example as is, so `class_index` is the position in the data set's full
      category list (the closed-set label); no prompt sampling.
    * Otherwise the per-sample sampling of the data layer, with two guards: a generic sample whose draw kept no
      category (an image without objects, no negatives drawn) takes the full category list instead, and a
      segmentation sample with no condition at all is counted as unusable and replaced by the next one.
    * Each item records how many records were skipped to produce it (`CountedSample.skipped`).
    """

    def __init__(self, source: ExampleSource, *, raw_examples: bool = False, **kwargs: Any) -> None:
        self.raw_examples = raw_examples
        super().__init__(source, **kwargs)

    def _build_index(self) -> list[tuple[int, int]]:
        if self.raw_examples:
            return [(record, 0) for record in range(len(self.source))]
        return super()._build_index()

    def sample(self, position: int):
        record, _ = self.index[position]
        if self.raw_examples:
            return self.source[record]
        example = super().sample(position)
        if example.task in ("genseg", "ovseg") and not example.class_names:
            example = sample_genseg(self.source[record], self.rng_for(record), variant_probability=0.0)
        if example.task in SEGMENTATION_TASKS and not example.class_names:
            raise CorruptRecordError(f"{example.record_id}: no condition to prompt after sampling")
        return example

    def __getitem__(self, position: int) -> CountedSample:
        before = self.counter.total
        sample = super().__getitem__(position)
        return CountedSample(example=sample.example, image=sample.image, skipped=self.counter.total - before)


def _resolve(root: Path, value: Any) -> Any:
    if isinstance(value, str) and not Path(value).is_absolute() and not value.startswith(("hf://", "http")):
        return str(root / value)
    return value


def load_source(spec: Mapping[str, Any], root: Path, counter: SkipCounter) -> ExampleSource:
    """One data source of a recipe: `format` picks the loader, the other keys are its arguments."""
    from . import data

    spec = dict(spec)
    kind = spec.pop("format")
    arguments = {k: _resolve(root, v) if k in _PATH_KEYS else v for k, v in spec.items()}
    arguments["counter"] = counter
    loaders = {
        "coco_panoptic": lambda a: data.load_coco_panoptic(a.pop("panoptic_json"), a.pop("panoptic_png_dir"),
                                                           a.pop("image_dir"), **a),
        "coco_instances": lambda a: data.load_coco_instances(a.pop("annotations"), a.pop("image_dir"), **a),
        "refcoco": lambda a: data.load_refcoco(a.pop("dataset_dir"), a.pop("image_dir"), **a),
        "reasonseg": lambda a: data.load_reasonseg(a.pop("split_dir"), **a),
        "gcg": lambda a: data.load_gcg(a.pop("json_path"), a.pop("image_dir"), **a),
        "coco_vgd": lambda a: data.load_coco_vgd(a.pop("json_path"), a.pop("image_dir"), **a),
        "coco_interactive": lambda a: data.load_coco_interactive(a.pop("json_path"), a.pop("image_dir"), **a),
        "llava": lambda a: data.load_llava(a.pop("json_path"), a.pop("image_dir"), **a),
    }
    if kind not in loaders:
        raise ValueError(f"Unknown data format {kind!r}; one of {sorted(loaders)}.")
    return loaders[kind](arguments)


def build_train_dataset(recipe: Mapping[str, Any], counter: SkipCounter | None = None) -> BalancedConcatDataset:
    """The recipe's sources, each a `StageTrainingDataset`, concatenated with balance resampling (times each
    source's optional `repeat`)."""
    data_spec = recipe.get("data") or {}
    sources = data_spec.get("sources") or []
    if not sources:
        raise ValueError("The recipe has no data.sources.")
    counter = counter if counter is not None else SkipCounter()
    root = Path(data_spec.get("root") or ".")
    seed = int(data_spec.get("seed", recipe.get("seed", 0)))
    raw = recipe.get("stage") == "s1"
    parts, weights = [], []
    for spec in sources:
        spec = dict(spec)
        weights.append(float(spec.pop("repeat", 1.0)))  # a source's extra share, on top of the balance factor
        source = load_source(spec, root, counter)
        parts.append(StageTrainingDataset(source, raw_examples=raw, seed=seed, load_images=True, counter=counter))
    return BalancedConcatDataset(parts, threshold=float(data_spec.get("balance_threshold", 0.1)),
                                 names=[p.name for p in parts], weights=weights)


# ----------------------------------------------------------------------------------------------------------------
# Model
def _component_state(name: str, source: str, vocab_size: int | None) -> dict[str, torch.Tensor]:
    """The weights of one pretrained part, in the sub-model's own names (the modeling package's loaders know how
    SigLIP, SAM and causal-LM checkpoints wrap them)."""
    from ..modeling.from_components import load_language_model, load_segmentation_model, load_vision_model

    if name == "language_model":
        loaded = load_language_model(source, dtype=torch.float32)
        if vocab_size is not None and loaded.get_input_embeddings().weight.shape[0] != vocab_size:
            # The released recipe resizes Phi-3 to len(tokenizer) after adding <SEG>, <p>, </p> (32064 -> 32014).
            loaded.resize_token_embeddings(vocab_size, mean_resizing=False)
    elif name == "vision_tower":
        loaded = load_vision_model(source, dtype=torch.float32)
    elif name == "segmentation_encoder":
        loaded = load_segmentation_model(source, dtype=torch.float32)
    else:
        raise ValueError(f"Only vision_tower, segmentation_encoder and language_model have pretrained checkpoints, "
                         f"not {name!r}.")
    return loaded.state_dict()


def load_components(model: torch.nn.Module, components: Mapping[str, str]) -> dict[str, int]:
    """Initialise sub-models (`language_model`, `vision_tower`, `segmentation_encoder`) from HF checkpoints."""
    loaded = {}
    for name, source in (components or {}).items():
        if not hasattr(model, name):
            raise ValueError(f"This X-SAM form has no {name!r} to initialise (stage {model.config.stage}).")
        target = getattr(model, name)
        vocab = model.config.text_config.vocab_size if name == "language_model" else None
        state = _component_state(name, str(source), vocab)
        target.load_state_dict(state, strict=True)  # a size mismatch with the recipe's preset is an error
        loaded[name] = len(state)
        logger.info("initialised %s from %s (%d tensors)", name, source, len(state))
    return loaded


def build_model(recipe: Mapping[str, Any], num_closed_set_classes: int | None = None):
    """Build (or load) the model of the recipe's stage, then apply component weights and stage chaining."""
    from ..modeling.configuration_xsam import XSamConfig
    from ..modeling.modeling_xsam import XSamForSegmentation

    stage = recipe.get("stage", "s3")
    spec = recipe.get("model") or {}
    overrides = dict(spec.get("config_overrides") or {})
    attn = spec.get("attn_implementation")
    if spec.get("pretrained"):
        model = XSamForSegmentation.from_pretrained(spec["pretrained"], attn_implementation=attn, **overrides)
        if model.config.stage != stage:
            raise ValueError(f"{spec['pretrained']} is a {model.config.stage} model, the recipe trains {stage}.")
    else:
        if stage == "s1" and num_closed_set_classes is not None:
            overrides.setdefault("num_closed_set_classes", num_closed_set_classes)
        config = XSamConfig.from_preset(spec.get("preset", "x-sam-phi3-mini"), stage=stage, **overrides)
        model = XSamForSegmentation._from_config(config, attn_implementation=attn)
    for key, value in (spec.get("decoder_overrides") or {}).items():
        # Loss settings of the Mask2Former decoder config (e.g. train_num_points), read at every forward.
        if not hasattr(model.config.decoder_config, key):
            raise ValueError(f"The decoder config has no field {key!r}.")
        setattr(model.config.decoder_config, key, value)
    report: dict[str, Any] = {"components": load_components(model, spec.get("components") or {}), "init_from": []}
    for entry in spec.get("init_from") or []:
        stage_report = model.load_stage_weights(
            entry["path"], from_stage=entry.get("from_stage"), prefixes=entry.get("prefixes")
        )
        report["init_from"].append({"path": str(entry["path"]), "from_stage": entry.get("from_stage"),
                                    "loaded": len(stage_report.loaded),
                                    "left_at_init": len(stage_report.left_at_init),
                                    "unused": len(stage_report.unused)})
    return model, report


def build_processor(recipe: Mapping[str, Any]):
    from ..processing import XSamProcessor

    spec = recipe.get("processor") or {}
    model_spec = recipe.get("model") or {}
    kwargs = {}
    if "pad_to_square" in spec:
        kwargs["pad_to_square"] = bool(spec["pad_to_square"])
    pretrained = spec.get("pretrained")
    model_dir = model_spec.get("pretrained")
    if not pretrained and model_dir and Path(model_dir, "processor_config.json").is_file():
        pretrained = model_dir  # a saved X-SAM folder usually holds its processor too
    if pretrained:
        processor = XSamProcessor.from_pretrained(pretrained)
        if kwargs:
            processor.pad_to_square = kwargs["pad_to_square"]
        return processor
    preset = spec.get("preset") or model_spec.get("preset", "x-sam-phi3-mini")
    return XSamProcessor.from_preset(preset, tokenizer=spec.get("tokenizer"), **kwargs)


# ----------------------------------------------------------------------------------------------------------------
# Training arguments
def _distributed() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def build_training_arguments(recipe: Mapping[str, Any]):
    from .trainer import XSamTrainingArguments

    values = dict(recipe.get("training") or {})
    if "output_dir" not in values:
        raise ValueError("The recipe needs training.output_dir.")
    values.setdefault("seed", recipe.get("seed", 0))
    if values.get("bf16") == "auto":
        values["bf16"] = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if values.get("activation_checkpointing"):
        values.setdefault("activation_checkpointing_kwargs", {"use_reentrant": False})
    for key in ("deepspeed", "fsdp_config"):
        # The shipped deepspeed_zero2.json / fsdp.json can be named without their package path.
        if isinstance(values.get(key), str) and not Path(values[key]).exists():
            values[key] = _packaged_file(values[key])
    if _distributed() and not torch.cuda.is_available():
        # DDP on CPU: gloo is the only backend (torchrun / accelerate launch --multi_gpu set the environment).
        values.setdefault("use_cpu", True)
        values.setdefault("ddp_backend", "gloo")
    known = {f.name for f in fields(XSamTrainingArguments)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"Unknown training arguments {unknown}.")
    return XSamTrainingArguments(**values)


# ----------------------------------------------------------------------------------------------------------------
def run_training(
    recipe: Mapping[str, Any],
    resume_from_checkpoint: str | bool | None = None,
    callbacks: Sequence[Any] = (),
) -> dict[str, Any]:
    """Train one stage as the recipe says; returns the training summary (also written to `final/`).

    `skipped_samples` in the summary and the logs counts skipped records over all processes and data-loader
    workers; `skipped_by_source` breaks down this process's own count (workers keep theirs).
    `callbacks` are extra `TrainerCallback`s; `resume_from_checkpoint` is a checkpoint path, True or "auto" (the
    last checkpoint of `training.output_dir`, if any).
    """
    from transformers import set_seed

    from .augment import RandomScaleCenterCrop
    from .collator import XSamDataCollator
    from .encoder_warmup import (WARMUP_STAGE, EncoderWarmupModel, check_warmup_recipe, freeze_for_warmup,
                                 warmup_settings)
    from .peft_utils import XSamLoraSettings, apply_lora, load_for_qlora, lora_module_names
    from .stages import STAGE_POLICIES, apply_stage_freezing
    from .trainer import XSamTrainer

    recipe = copy.deepcopy(dict(recipe))
    stage = recipe.setdefault("stage", "s3")
    warmup = stage == WARMUP_STAGE
    if warmup:
        check_warmup_recipe(recipe)
    elif stage not in STAGE_POLICIES:
        raise ValueError(f"stage must be one of {sorted(STAGE_POLICIES) + [WARMUP_STAGE]}, got {stage!r}.")
    warmup_options = warmup_settings(recipe, warmup)
    form = "s1" if warmup else stage  # the warm-up reads S1's data and trains an S1-form model
    recipe["stage"] = form
    args = build_training_arguments(recipe)
    output_dir = Path(args.output_dir)
    set_seed(args.seed)

    counter = SkipCounter()
    dataset = build_train_dataset(recipe, counter)
    processor = build_processor(recipe)
    classes = None
    if form == "s1":
        classes = len(dataset[0].example.class_names)  # the closed set: the data set's category list
    model, init_report = build_model(recipe, num_closed_set_classes=classes)
    if hasattr(model, "language_model") and len(processor.tokenizer) > model.config.text_config.vocab_size:
        raise ValueError(f"The tokenizer has {len(processor.tokenizer)} tokens but the LLM only "
                         f"{model.config.text_config.vocab_size} rows.")

    lora_spec = recipe.get("lora")
    quant_spec = recipe.get("quantization")
    if quant_spec and not lora_spec:
        raise ValueError("A quantized LLM trains through LoRA adapters: add a `lora:` section (QLoRA).")
    base_dir = None
    if quant_spec:
        # bitsandbytes quantizes while loading: save the initialised full-precision model, reload its LLM in 4-bit.
        base_dir = output_dir / "base_model"
        if args.process_index == 0:
            model.save_pretrained(base_dir)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()
        dtype_name = quant_spec.get("compute_dtype", "bfloat16")
        model = load_for_qlora(base_dir, compute_dtype=getattr(torch, dtype_name),
                               activation_checkpointing=bool(args.activation_checkpointing),
                               attn_implementation=(recipe.get("model") or {}).get("attn_implementation"))
    freeze_summary: dict[str, Any]
    if warmup:
        model = EncoderWarmupModel(model, classes, **warmup_options)
        report = freeze_for_warmup(model)
        freeze_summary = {"policy": WARMUP_STAGE, "trainable": len(report.trainable), "frozen": len(report.frozen)}
    elif lora_spec:
        settings = XSamLoraSettings(**{k: v for k, v in lora_spec.items() if k != "merge"})
        model = apply_lora(model, settings)
        freeze_summary = {"policy": "lora", "lora_modules": len(lora_module_names(model)),
                          "trainable": sum(p.requires_grad for p in model.parameters())}
    else:
        freeze = recipe.get("freeze") or {}
        trainable = freeze.get("trainable", STAGE_POLICIES[stage].trainable)
        report = apply_stage_freezing(model, trainable, freeze.get("frozen") or ())
        freeze_summary = {"policy": stage, "trainable": len(report.trainable), "frozen": len(report.frozen)}
    if "module_lr_multipliers" not in (recipe.get("training") or {}):
        args.module_lr_multipliers = {} if warmup else dict(STAGE_POLICIES[stage].lr_multipliers)

    augment_spec = recipe.get("augmentation")
    collator = XSamDataCollator(
        processor,
        stage=form,
        augmentation=RandomScaleCenterCrop(**augment_spec) if augment_spec else None,
        seed=int((recipe.get("data") or {}).get("seed", recipe.get("seed", 0))),
        counter=counter,
    )
    trainer = XSamTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=collator,
        processing_class=processor,
        callbacks=list(callbacks),
    )
    if resume_from_checkpoint == "auto":
        from transformers.trainer_utils import get_last_checkpoint

        resume_from_checkpoint = get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None
    result = trainer.train(resume_from_checkpoint=resume_from_checkpoint)

    final_dir = output_dir / "final"
    summary = {
        "stage": stage,
        "global_step": trainer.state.global_step,
        "training_loss": result.training_loss,
        "skipped_samples": trainer.skipped_samples,
        "skipped_by_source": counter.report(),
        "task_micro_batches": dict(trainer.task_micro_batches),
        "initialisation": init_report,
        "freezing": freeze_summary,
        "log_history": trainer.state.log_history,
    }
    if warmup:  # the S1-form model without the warm-up's head: S1 loads its encoder and connector
        if args.process_index == 0:
            model.segmentor.save_pretrained(final_dir)
            processor.save_pretrained(final_dir)
    elif lora_spec:
        trainer.save_model(str(final_dir / "adapter"))
        if lora_spec.get("merge", True) and args.process_index == 0:
            merged = _merge_for_saving(trainer.model, base_dir, final_dir / "adapter")
            merged.save_pretrained(final_dir)
            processor.save_pretrained(final_dir)
    else:
        trainer.save_model(str(final_dir))
    if args.process_index == 0:
        final_dir.mkdir(parents=True, exist_ok=True)
        (final_dir / "training_summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    logger.info("%s", counter.summary_line())
    return summary


def _merge_for_saving(peft_model, base_dir: Path | None, adapter_dir: Path):
    """The merged full-precision model: merge in place for LoRA; for QLoRA reload the full-precision base and merge
    the saved adapter into it (4-bit weights cannot take the merge without losing precision)."""
    from ..modeling.modeling_xsam import XSamForSegmentation
    from .peft_utils import load_lora, merge_lora

    if base_dir is None:
        return merge_lora(peft_model)
    base = XSamForSegmentation.from_pretrained(base_dir)
    return merge_lora(load_lora(base, adapter_dir))


# ----------------------------------------------------------------------------------------------------------------
def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="xsam train",
        description="Train an X-SAM stage from a YAML recipe. Built-in recipes: " + ", ".join(builtin_recipes()),
    )
    parser.add_argument("config", help="a recipe file, or the name of a built-in recipe")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides (YAML values)")
    parser.add_argument("--resume", nargs="?", const="auto", default=None,
                        help="resume from the last checkpoint in training.output_dir, or from the given checkpoint")
    parser.add_argument("--print-config", action="store_true", help="print the resolved recipe and exit")
    return parser.parse_intermixed_args(argv)  # options may come before, between or after the overrides


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `xsam train CONFIG [key=value ...] [--resume [CHECKPOINT]]`."""
    options = parse_arguments(list(sys.argv[1:] if argv is None else argv))
    recipe = load_recipe(options.config, options.overrides)
    if options.print_config:
        print(yaml.safe_dump(recipe, sort_keys=False))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_training(recipe, resume_from_checkpoint=options.resume)
    return 0


def _distributed_exit(code: int) -> None:
    """End a multi-process run without the interpreter teardown that intermittently aborts gloo processes."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_code = main()
    if _distributed():
        _distributed_exit(exit_code)
    sys.exit(exit_code)
