"""X-SAM training: the trainer, stage policies, collator, LoRA / QLoRA helpers and the `xsam train` entry point.

Names are imported lazily: `xsam_hf.training.data` (the loaders) stays usable without pulling in `Trainer`, peft or
bitsandbytes.
"""

from importlib import import_module

_EXPORTS = {
    "XSamTrainer": ".trainer",
    "XSamTrainingArguments": ".trainer",
    "LOGGED_TERMS": ".trainer",
    "XSamDataCollator": ".collator",
    "CanvasGeometry": ".augment",
    "RandomScaleCenterCrop": ".augment",
    "STAGE_POLICIES": ".stages",
    "StagePolicy": ".stages",
    "apply_stage_freezing": ".stages",
    "parameter_groups": ".stages",
    "no_decay_parameter_names": ".stages",
    "XSamLoraSettings": ".peft_utils",
    "apply_lora": ".peft_utils",
    "load_lora": ".peft_utils",
    "merge_lora": ".peft_utils",
    "load_for_qlora": ".peft_utils",
    "quantization_config_for": ".peft_utils",
    "build_train_dataset": ".train",
    "load_recipe": ".train",
    "run_training": ".train",
    "main": ".train",
}


def __getattr__(name: str) -> object:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
