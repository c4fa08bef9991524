"""`XSamTrainer`: `transformers.Trainer` with X-SAM's two losses, per-module learning rates and one-task batches.

Loss. The model computes both parts itself (`lm_loss`: causal-LM cross-entropy; `seg_loss`: the weighted Mask2Former
terms of every decoder layer). The trainer weights them with `config.lm_loss_weight` / `config.seg_loss_weight` and
scales each part for gradient accumulation (GA) and data parallelism (W processes):

* the LM loss is normalised by `num_items_in_batch`, the label-token count of ALL micro-batches of the step on ALL
  processes (the Trainer passes it into the forward). It therefore needs no GA division, and is multiplied by W
  because DDP averages gradients over processes;
* the segmentation loss is a per-micro-batch mean (`num_masks` is already averaged over processes inside the loss),
  so it is divided by the GA steps of the current step and never multiplied by W: DDP's gradient average is what it
  needs.

The returned loss is already scaled for GA (`loss_is_scaled_for_ga = True`). Without `num_items_in_batch` (no LM
labels, e.g. S1) every part is a per-batch mean divided by GA.

Logging. Next to Trainer's `loss`, every logging step reports `lm_loss`, `seg_loss` and the unweighted terms of the
last decoder layer (`loss_cross_entropy`, `loss_mask`, `loss_dice`; the encoder warm-up's `loss_colour`), averaged over the steps that had them and
reduced over processes with the same weights as the optimised loss (so `lm_loss` is the per-token mean over the
global batch), plus `skipped_samples`: the running count of unreadable or unusable samples, over all processes and
data-loader workers.

Batches. A `BalancedConcatDataset` (one or several sources) is read with the data layer's `SourceGroupedBatchSampler`,
so every global batch comes from one data set (one task); the trainer hands each process its micro-batches through
accelerate, which also skips batches exactly when a run resumes.

Optimizer. Parameter groups per (module learning-rate multiplier, weight decay or not), see `stages.parameter_groups`;
an optional step schedule (`lr_milestones`, S1's x0.1 at epochs 24 and 30 of 36) replaces the Trainer's schedule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.utils import logging

from .collator import SKIPPED_SAMPLES_KEY, TASK_KEY
from .data.source_grouped import SourceGroupedBatchSampler
from .stages import ENCODER_LR_MULTIPLIERS, no_decay_parameter_names, parameter_groups

logger = logging.get_logger(__name__)

LOGGED_TERMS: tuple[str, ...] = ("lm_loss", "seg_loss", "loss_cross_entropy", "loss_mask", "loss_dice", "loss_colour")
"""Loss terms added to the training logs (the Mask2Former ones are the unweighted last-layer terms)."""


@dataclass(kw_only=True)
class XSamTrainingArguments(TrainingArguments):
    """`TrainingArguments` plus X-SAM's optimizer and batching options.

    Args:
        module_lr_multipliers: module name -> factor on `learning_rate` (default: SigLIP and SAM encoders x0.1).
        lr_milestones: fractions of the total steps at which the learning rate is multiplied by
            `lr_milestone_gamma` after the warm-up (S1: `[24/36, 30/36]`); None keeps `lr_scheduler_type`.
        lr_milestone_gamma: the factor applied at each milestone.
        group_by_source: read a multi-source training set with `SourceGroupedBatchSampler` (one data set per step).
        source_mega_batch_mult: consecutive global steps drawn from the same source.
    """

    module_lr_multipliers: dict[str, float] = field(default_factory=lambda: dict(ENCODER_LR_MULTIPLIERS))
    lr_milestones: list[float] | None = None
    lr_milestone_gamma: float = 0.1
    group_by_source: bool = True
    source_mega_batch_mult: int = 1
    remove_unused_columns: bool = False
    label_names: list[str] | None = field(default_factory=lambda: ["labels"])


class _EpochSync(TrainerCallback):
    """Tell the batch sampler and the collator which epoch starts (before the epoch's data iterator is built), also
    when a run resumes in the middle of an epoch."""

    def __init__(self, trainer: XSamTrainer) -> None:
        self.trainer = trainer

    def on_epoch_begin(self, args, state, control, **kwargs):
        epoch = int(math.floor(state.epoch + 1e-6)) if state.epoch else 0
        sampler = self.trainer._train_batch_sampler
        if sampler is not None:
            sampler.set_epoch(epoch)
        collator = self.trainer.data_collator
        if hasattr(collator, "set_epoch"):
            collator.set_epoch(epoch)
        return control


class XSamTrainer(Trainer):
    """Trainer for `XSamForSegmentation` (also wrapped by peft). See the module docstring for the loss scaling.

    Use it with `XSamTrainingArguments` (any `TrainingArguments` works; X-SAM options then take their defaults) and
    `XSamDataCollator`.
    """

    loss_is_scaled_for_ga = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._train_batch_sampler: SourceGroupedBatchSampler | None = None
        self._term_sums: torch.Tensor | None = None  # (len(LOGGED_TERMS), 2): weighted sum, weight
        self._skipped_total = 0.0
        self._skipped_pending = 0
        self.task_micro_batches: dict[str, int] = {}  # this process's micro-batches per task (data-mix check)
        self.add_callback(_EpochSync(self))

    # ------------------------------------------------------------------------------------------------------------
    def _option(self, name: str, default: Any) -> Any:
        """An `XSamTrainingArguments` option, or its default when plain `TrainingArguments` were given."""
        return getattr(self.args, name, default)

    def get_train_dataloader(self) -> DataLoader:
        dataset = self.train_dataset
        if not (self._option("group_by_source", True) and hasattr(dataset, "lengths")):
            return super().get_train_dataloader()
        # Also for a single source: the global batches are then the same for any number of processes, which keeps
        # runs comparable across process counts and makes a resumed run replay the exact batches.
        # rank=None: the sampler yields every process's micro-batch of a step in rank order, and accelerate deals
        # batch k to process k % W, so each process gets the micro-batch the sampler meant for it.
        self._train_batch_sampler = SourceGroupedBatchSampler(
            dataset.lengths,
            self.args.per_device_train_batch_size,
            world_size=self.args.world_size,
            rank=None,
            seed=self.args.data_seed if self.args.data_seed is not None else self.args.seed,
            mega_batch_mult=self._option("source_mega_batch_mult", 1),
        )
        loader = DataLoader(
            dataset,
            batch_sampler=self._train_batch_sampler,
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory,
            persistent_workers=self.args.dataloader_persistent_workers and self.args.dataloader_num_workers > 0,
            prefetch_factor=self.args.dataloader_prefetch_factor if self.args.dataloader_num_workers > 0 else None,
        )
        return self.accelerator.prepare(loader)

    # ------------------------------------------------------------------------------------------------------------
    def create_optimizer(self, model=None) -> torch.optim.Optimizer:
        if self.optimizer is None:
            opt_model = self.model if model is None else model
            groups = parameter_groups(
                opt_model,
                self.args.learning_rate,
                self.args.weight_decay,
                self._option("module_lr_multipliers", ENCODER_LR_MULTIPLIERS),
                no_decay_parameter_names(opt_model),
            )
            if not groups:
                raise ValueError("No trainable parameter: check the stage's freezing policy.")
            for group in groups:
                logger.info("parameter group %s: %d tensors, lr %.3g, weight decay %g", group["name"],
                            len(group["params"]), group["lr"], group["weight_decay"])
                del group["parameter_names"]  # names are for inspection only; keep the optimizer state small
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None):
        milestones = self._option("lr_milestones", None)
        if not milestones:
            return super().create_scheduler(num_training_steps, optimizer)
        if self.lr_scheduler is None:
            optimizer = self.optimizer if optimizer is None else optimizer
            warmup = self.args.get_warmup_steps(num_training_steps)
            boundaries = sorted(int(round(m * num_training_steps)) for m in milestones)
            gamma = self._option("lr_milestone_gamma", 0.1)

            def factor(step: int) -> float:
                # Linear warm-up from 0, then x gamma at every milestone passed (MultiStepLR).
                warm = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
                return warm * gamma ** sum(step >= b for b in boundaries)

            self.lr_scheduler = LambdaLR(optimizer, factor)
            self._created_lr_scheduler = True
        return self.lr_scheduler

    # ------------------------------------------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs: bool = False, num_items_in_batch=None):
        inputs = dict(inputs)
        skipped = inputs.pop(SKIPPED_SAMPLES_KEY, 0)
        task = inputs.pop(TASK_KEY, None)
        training = model.training
        if training and task is not None:
            self.task_micro_batches[task] = self.task_micro_batches.get(task, 0) + 1
        tokens_normalised = training and self.model_accepts_loss_kwargs and num_items_in_batch is not None
        if tokens_normalised:
            inputs["num_items_in_batch"] = num_items_in_batch
        outputs = model(**inputs)
        config = self.accelerator.unwrap_model(model).config
        accumulation = self.current_gradient_accumulation_steps if training else 1
        processes = self.accelerator.num_processes
        if tokens_normalised and self.args.average_tokens_across_devices:
            lm_scale = float(processes)  # normalised over every process's tokens; DDP then averages gradients
        elif tokens_normalised:
            lm_scale = 1.0
        else:
            lm_scale = 1.0 / accumulation  # a per-batch mean
        seg_scale = 1.0 / accumulation

        parts = []
        if outputs.lm_loss is not None:
            parts.append(config.lm_loss_weight * lm_scale * outputs.lm_loss)
        if outputs.seg_loss is not None:
            parts.append(config.seg_loss_weight * seg_scale * outputs.seg_loss)
        if not parts:
            raise ValueError("The batch produced no loss: it has neither LM labels nor segmentation targets.")
        loss = sum(parts)
        if training:
            self._record_terms(outputs, lm_scale, seg_scale, accumulation, skipped)
        return (loss, outputs) if return_outputs else loss

    def _record_terms(self, outputs, lm_scale: float, seg_scale: float, accumulation: int, skipped: int) -> None:
        """Accumulate each term as it enters the optimised loss (weighted sum, weight), for `log`."""
        device = self.args.device
        if self._term_sums is None:
            self._term_sums = torch.zeros(len(LOGGED_TERMS), 2, device=device)
        step_weight = 1.0 / accumulation  # the micro-batches of one optimizer step weigh 1 in total
        values = {"lm_loss": (outputs.lm_loss, lm_scale), "seg_loss": (outputs.seg_loss, seg_scale)}
        for name, value in (outputs.loss_dict or {}).items():
            if name in LOGGED_TERMS:
                values[name] = (value, seg_scale)
        with torch.no_grad():
            for row, name in enumerate(LOGGED_TERMS):
                value, scale = values.get(name, (None, 0.0))
                if value is None:
                    continue
                # A token-normalised LM loss enters as W * (its share of the global mean); summed over processes and
                # divided by the summed weight (W per step) it gives the global per-token mean.
                self._term_sums[row, 0] += value.detach().float().to(device) * scale
                self._term_sums[row, 1] += step_weight
        self._skipped_pending += int(skipped)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            sums = self._term_sums if self._term_sums is not None else torch.zeros(len(LOGGED_TERMS), 2,
                                                                                   device=self.args.device)
            skipped = torch.tensor([float(self._skipped_pending)], device=self.args.device)
            if self.accelerator.num_processes > 1:
                sums = self.accelerator.reduce(sums.clone(), reduction="sum")
                skipped = self.accelerator.reduce(skipped, reduction="sum")
            for row, name in enumerate(LOGGED_TERMS):
                if sums[row, 1] > 0:
                    logs[name] = round((sums[row, 0] / sums[row, 1]).item(), 6)
            self._skipped_total += skipped.item()
            logs["skipped_samples"] = int(self._skipped_total)
            self._term_sums = None
            self._skipped_pending = 0
        super().log(logs, start_time)

    @property
    def skipped_samples(self) -> int:
        """Samples skipped so far (as last logged: summed over processes and data-loader workers)."""
        return int(self._skipped_total)

    # ------------------------------------------------------------------------------------------------------------
    def prediction_step(self, model, inputs, prediction_loss_only: bool, ignore_keys=None):
        """Evaluation reports the loss only: X-SAM's outputs are ragged (classes per prompt), metrics run through
        the processor's post-processing instead (`xsam_hf.evaluation`)."""
        with torch.no_grad():
            loss = self.compute_loss(model, dict(inputs))
        return loss.detach(), None, None


__all__ = ["LOGGED_TERMS", "XSamTrainer", "XSamTrainingArguments"]
