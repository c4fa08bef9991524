"""Train a small X-SAM from scratch on the synthetic world, evaluate every task, write a results table.

``python -m xsam_hf.synthetic.train_default --recipe ci|default|PATH --output DIR [--eval-jobs N]``

A recipe (``xsam_hf/synthetic/recipes/{ci,default}.yaml``) names the world to write (``world: {seed, train, val}``),
settings shared by every stage (``common``: a partial ``xsam train`` recipe), the stages in order (``stages``: each
a partial ``xsam train`` recipe plus ``name`` and ``sources``, the world's data sets by short name: ``panoptic``,
``refcoco``, ``reasonseg``, ``gcg``, ``vgd``, ``interactive``, ``chat``, ``caption``; a stage of the same X-SAM form
as the one before it continues from its weights, an S3 stage after S1 / S2 is initialised from both as in the
paper) and the evaluation (``eval: {limit, max_new_tokens, batch_size}``).

Output: ``DIR/world/`` (the world), ``DIR/runs/<stage>/final/`` (each stage's model, processor and
``training_summary.json``), ``DIR/eval/<model>/<task>/results.json``, and ``DIR/results.json`` / ``DIR/RESULTS.md``:
per task the headline metric of the trained model, the untrained (random, same preset) model and the blind model
(the trained weights with every image feature zeroed: SigLIP tokens, SAM tokens and the decoder's feature pyramid).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from ..evaluation.blind import blind
from ..modeling.nested_dicts import deep_merge
from ..training.encoder_warmup import TRAINED_PREFIXES, WARMUP_STAGE
from ..training.recipe_values import recipe_flag

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"
# Boolean `world:` keys of a recipe, passed to write_world as they are and checked against the manifest on resume.
WORLD_CHAT_OPTIONS = ("dense_train_chat", "identify_train_chat")

# task -> (eval task, data arguments relative to the world folder, headline metric, the target in %)
EVAL_TASKS: dict[str, tuple[str, list[str], str, float]] = {
    "panoptic": ("panoptic", ["panoptic/annotations/panoptic_val.json", "panoptic/panoptic_val", "images/val"],
                 "PQ", 60.0),
    "semantic": ("semantic", ["panoptic/annotations/panoptic_val.json", "panoptic/panoptic_val", "images/val",
                              "panoptic/panoptic_semseg_val"], "mIoU", 70.0),
    "referring": ("referring", ["refcoco", "images/val", "split=val"], "cIoU", 75.0),
    "reasoning": ("reasoning", ["reasonseg/val"], "gIoU", 60.0),
    "gcg": ("gcg", ["gcg/annotations/val_test/val_gcg_coco_mask_gt.json",
                    "gcg/annotations/val_test/val_gcg_coco_caption_gt.json", "images/val"], "mIoU", 60.0),
    "interactive": ("interactive", ["interactive/coco_interactive_val_psalm.json", "images/val",
                                    "categories=panoptic/annotations/instances_val.json"], "mIoU", 75.0),
    "vgd": ("vgd", ["vgd/img_vgdseg_coco_val.json", "images/val",
                    "categories=panoptic/annotations/instances_val.json"], "AP50", 60.0),
    "vgd_cross": ("vgd", ["vgd/img_vgdseg_cross_val.json", "images/val",
                          "categories=panoptic/annotations/instances_val.json"], "AP50", 60.0),
    "chat": ("conversation", ["chat/llava_qa_val.json", "images/val"], "accuracy", 80.0),
}


def load_recipe(name: str) -> dict[str, Any]:
    path = Path(name)
    if not path.suffix:
        path = RECIPES_DIR / f"{name}.yaml"
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def world_sources(manifest: dict[str, Any], split: str = "train") -> dict[str, dict[str, Any]]:
    """The world's ``data.sources`` entries by short name (plus ``caption``, the alignment captions)."""
    by_name = {}
    for entry in manifest["recipe_sources"][split]:
        short = entry["source"].removeprefix("synthetic_").removesuffix(f"_{split}")
        by_name[short] = entry
    by_name["caption"] = {"format": "llava", "source": f"synthetic_caption_{split}",
                          "json_path": manifest["evaluation_files"]["caption_chat_json"][split],
                          "image_dir": f"images/{split}"}
    return by_name


def _source_entry(sources: dict[str, dict[str, Any]], item: str | dict[str, Any]) -> dict[str, Any]:
    """A stage's `sources:` item, a short name or ``{name: ..., repeat: ...}``, as a ``data.sources`` entry."""
    if isinstance(item, str):
        return dict(sources[item])
    item = dict(item)
    name = item.pop("name", None)
    unknown = set(item) - {"repeat"}
    if unknown or name not in sources:
        raise ValueError(f"A stage source is a name ({', '.join(sorted(sources))}) or {{name, repeat}}; got "
                         f"{dict(item, name=name)}.")
    return {**sources[name], **item}


def stage_recipes(recipe: dict[str, Any], world: Path, runs: Path, manifest: dict[str, Any]) -> list[dict]:
    """The ``xsam train`` recipe of every stage, chained."""
    sources = world_sources(manifest)
    out, finals = [], {}
    previous: tuple[str, Path] | None = None
    for spec in recipe["stages"]:
        spec = copy.deepcopy(spec)
        name, names = spec.pop("name"), spec.pop("sources")
        stage_recipe = deep_merge(recipe.get("common") or {}, spec)
        stage = stage_recipe["stage"]
        stage_recipe.setdefault("data", {})
        stage_recipe["data"].update({"root": str(world), "sources": [_source_entry(sources, n) for n in names]})
        stage_recipe["training"]["output_dir"] = str(runs / name)
        model = stage_recipe.setdefault("model", {})
        if stage == "s1" and WARMUP_STAGE in finals:  # the warmed-up SAM encoder and connector start S1
            model["init_from"] = [{"path": str(finals[WARMUP_STAGE]), "prefixes": list(TRAINED_PREFIXES)}]
        elif stage == WARMUP_STAGE and finals:
            raise ValueError(f"The {WARMUP_STAGE} stage trains a random encoder: it must come first.")
        elif previous is not None and previous[0] == stage:
            model["pretrained"] = str(previous[1])  # continue the same form
            stage_recipe["processor"] = {k: v for k, v in stage_recipe.get("processor", {}).items()
                                         if k == "pad_to_square"}
        elif stage != "s1":
            model["init_from"] = [{"path": str(path), "from_stage": from_stage}
                                  for from_stage, path in finals.items() if from_stage not in (stage, WARMUP_STAGE)]
        final = runs / name / "final"
        finals[stage] = final
        previous = (stage, final)
        out.append({"name": name, "recipe": stage_recipe, "final": final})
    return out


def loss_windows(log_history: list[dict[str, Any]], window: int) -> dict[str, tuple[float, float]]:
    """Mean of every logged loss term over the first and the last ``window`` logged steps that have it.

    In a stage that mixes tasks (one task per batch), chat batches log ``loss`` = ``lm_loss`` only, ten times smaller
    than a segmentation batch's ``loss``; ``loss`` is then averaged over the segmentation batches only (the chat
    batches are in ``lm_loss``), so the windows compare like with like."""
    steps = [e for e in log_history if "train_runtime" not in e]
    keys = sorted({k for entry in steps for k in entry if k == "loss" or k.endswith("_loss") or k.startswith("loss_")})
    has_seg = any("seg_loss" in e for e in steps)
    windows = {}
    for key in keys:
        values = [float(e[key]) for e in steps if key in e and math.isfinite(float(e[key])) and float(e[key]) != 0.0
                  and (key != "loss" or not has_seg or "seg_loss" in e)]
        if len(values) >= 2:
            w = max(1, min(window, len(values) // 2))
            windows[key] = (sum(values[:w]) / w, sum(values[-w:]) / w)
    return windows


def headline(document: dict[str, Any], metric: str) -> float:
    """The task's headline metric in percent: top level, else ``overall``, else the mean over prompt types.

    A GCG run whose model grounded no phrase in any image scores 0 (the runner reports NaN: no predicted mask)."""
    results = next(iter(document["results"].values()))
    value = results.get(metric)
    if not isinstance(value, (int, float)) and isinstance(results.get("overall"), dict):
        value = results["overall"].get(metric)
    if not isinstance(value, (int, float)):
        groups = [v[metric] for v in results.values() if isinstance(v, dict) and isinstance(v.get(metric), (int, float))
                  and math.isfinite(v[metric])]
        value = sum(groups) / len(groups) if groups else None
    if (value is None or not math.isfinite(value)) and results.get("num_images_with_masks") == 0 \
            and results.get("num_images", 0) > 0:
        value = 0.0
    return float("nan") if value is None else 100.0 * float(value)


def evaluate(model, processor, world: Path, output: Path, settings: dict[str, Any], label: str,
             tasks: list[str] | None = None) -> dict[str, float]:
    from ..evaluation.runner import EvalSettings, run_evaluation
    from ..evaluation.tasks import parse_data_arguments

    scores = {}
    for task in tasks or list(EVAL_TASKS):
        eval_task, data, metric, _ = EVAL_TASKS[task]
        args = []
        for item in data:
            key, sep, value = item.partition("=")
            args.append(item if key == "split" else f"{key}={world / value}" if sep else str(world / item))
        try:
            run = EvalSettings(task=eval_task, data=parse_data_arguments(eval_task, args),
                               output_dir=output / label / task, batch_size=int(settings.get("batch_size", 1)),
                               limit=settings.get("limit"), max_new_tokens=int(settings.get("max_new_tokens", 64)),
                               caption_metrics=(), overwrite=True, progress=False, model_name=label)
            document = run_evaluation(model, processor, run, model_source=label)
            scores[task] = headline(document, metric)
        except Exception as error:  # a task the runner cannot score is reported, not fatal
            print(f"[train_default] {label} {task}: {type(error).__name__}: {error}")
            scores[task] = float("nan")
    return scores


def chat_answer_prior(world: Path, eval_dir: Path) -> float:
    """Accuracy (%) of the question-only prior (:class:`AnswerPrior` fitted on the world's training chat) on the
    questions a model was scored on (``eval_dir/<model>/chat/predictions.jsonl``); NaN when chat was not scored or
    the world has no training chat (a world written for scoring only)."""
    from ..evaluation.conversation import AnswerPrior, llava_question_answer_pairs

    for label in MODELS:
        path = eval_dir / label / "chat" / "predictions.jsonl"
        if path.is_file():
            samples = [sample for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
                       for sample in json.loads(line)["samples"]]
            break
    else:
        return float("nan")
    training = world / "chat" / "llava_qa_train.json"
    pairs = [pair for record in json.loads(training.read_text(encoding="utf-8"))
             for pair in llava_question_answer_pairs(record)] if training.is_file() else []
    if not pairs:
        return float("nan")
    prior = AnswerPrior(pairs)
    return 100.0 * prior.accuracy([s["question"] for s in samples], [s["reference"] for s in samples])


def _fmt(value: float) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.1f}"


def evaluation_seconds(results: dict[str, Any]) -> str:
    """Each model's scoring time (models may be scored by separate processes side by side)."""
    seconds = results.get("eval_s") or {}
    if isinstance(seconds, (int, float)):  # results.json written before per-model times
        return f"{seconds:.0f} s"
    return ", ".join(f"{label} {value:.0f} s" for label, value in seconds.items()) or "not run"


def results_markdown(results: dict[str, Any]) -> str:
    lines = ["| task | metric | target | trained | untrained | blind | trained - blind | target met |",
             "|---|---|---|---|---|---|---|---|"]
    for task, (_, _, metric, target) in EVAL_TASKS.items():
        t, u, b = (results["scores"][k].get(task, float("nan")) for k in ("trained", "untrained", "blind"))
        met = "n/a" if not math.isfinite(target) or not math.isfinite(t) else ("yes" if t >= target else "NO")
        lines.append(f"| {task} | {metric} | {_fmt(target)} | {_fmt(t)} | {_fmt(u)} | {_fmt(b)} | "
                     f"{_fmt(t - b)} | {met} |")
    prior = results.get("chat_answer_prior")
    if prior is not None and math.isfinite(prior):
        lines += ["", f"Chat's question-only prior (each question answered with its most frequent training answer, "
                  f"no model, no image): {_fmt(prior)} on the same questions."]
    lines += ["", "Loss terms (mean of the first / last logged window, per stage):", ""]
    for stage, windows in results["losses"].items():
        lines.append(f"* {stage}: " + ", ".join(f"{k} {a:.3f} -> {b:.3f}" for k, (a, b) in windows.items()))
    lines += ["", f"Recipe `{results['recipe']}` (steps {results.get('steps')}); world {results['world']}; "
              f"training {results['train_s']:.0f} s, evaluation {evaluation_seconds(results)}; evaluation limit "
              f"{results['eval'].get('limit')} images per task; machine: {results['machine']}."]
    return "\n".join(lines) + "\n"


MODELS = ("trained", "blind", "untrained")


def score_in_children(recipe_name: str, output: Path, models: Sequence[str], jobs: int, *,
                      tasks: list[str] | None, eval_limit: int | None, checkpoint: str | Path | None,
                      processor_path: str | Path | None) -> None:
    """Score each model in its own ``--eval-only --scores-only`` child process, ``jobs`` at a time, one CPU thread
    each (two multi-threaded torch processes on two cores stall each other)."""
    import os
    import subprocess
    import sys

    # not __name__: run as `python -m`, this module is __main__, which a child cannot import
    command = [sys.executable, "-m", f"{__package__}.train_default", "--recipe", str(recipe_name),
               "--output", str(output), "--eval-only", "--scores-only"]
    for flag, value in (("--tasks", ",".join(tasks) if tasks else None), ("--eval-limit", eval_limit),
                        ("--checkpoint", checkpoint), ("--processor", processor_path)):
        if value is not None:
            command += [flag, str(value)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    pending, running, failed = list(models), [], []
    while pending or running:
        while pending and len(running) < jobs:
            label = pending.pop(0)
            running.append((label, subprocess.Popen(command + ["--models", label], env=env)))
        finished = [entry for entry in running if entry[1].poll() is not None]
        if not finished:  # refill whichever slot frees first, not the first-launched one
            time.sleep(0.5)
            continue
        for label, child in finished:
            running.remove((label, child))
            if child.returncode != 0:
                failed.append(f"{label} (exit {child.returncode})")
    if failed:
        raise RuntimeError(f"Scoring failed for {', '.join(failed)}; see the output above")


def run(recipe_name: str, output: str | Path, *, evaluate_models: bool = True,
        tasks: list[str] | None = None, steps_scale: float = 1.0,
        eval_limit: int | None = None, train: bool = True, models: Sequence[str] = MODELS,
        checkpoint: str | Path | None = None, processor_path: str | Path | None = None,
        from_stage: str | None = None, until_stage: str | None = None, resume: bool = False, eval_jobs: int = 1,
        merge: bool = True) -> dict[str, Any]:
    """Write the world, train the recipe's stages, evaluate (trained / blind / untrained); returns the results.

    ``steps_scale`` multiplies every stage's ``max_steps`` (at least 1 step each), to fit a wall-clock budget;
    ``eval_limit`` replaces the recipe's ``eval.limit`` (validation images per task). ``train=False`` evaluates an
    earlier run in ``output`` (its ``results.json``); ``models`` picks which of trained / blind / untrained to score
    now: each model's scores are kept in ``eval/<model>/scores.json``, so separate processes can score the three
    side by side and the tables merge them. ``checkpoint`` scores another checkpoint than the last stage's (a
    Trainer ``checkpoint-N`` folder; ``processor_path`` then names a folder with the processor). ``from_stage``
    resumes a run in ``output``: the world and the stages before it are kept (their losses read back from their
    ``training_summary.json``), training starts at that stage: over again, or with ``resume`` from that stage's
    last Trainer checkpoint (a run whose process was stopped). ``until_stage`` stops after that stage, unscored (a
    later ``from_stage`` run goes on, with other resources: `make test` trains the last stage on two threads once
    the suite is done). ``eval_jobs`` > 1 scores the models in that many
    child processes side by side (one CPU thread each); ``merge=False`` writes only ``eval/<model>/`` (what a child
    does), not the merged ``results.json`` / ``RESULTS.md``."""
    import os
    import platform

    from ..modeling.configuration_xsam import XSamConfig
    from ..modeling.modeling_xsam import XSamForSegmentation
    from ..processing import XSamProcessor
    from ..training.train import run_training
    from .writer import write_world

    recipe = load_recipe(recipe_name)
    if resume and from_stage is None:
        raise ValueError("--resume goes on with the --from-stage stage: name it.")
    if until_stage is not None and evaluate_models:
        raise ValueError("A run stopped at --until-stage is not scored: add --no-eval, score it after the last stage.")
    if eval_limit is not None:
        recipe.setdefault("eval", {})["limit"] = eval_limit
    output = Path(output)
    world = output / "world"
    w = recipe["world"]
    chat_options = {key: recipe_flag(w, key, "world") for key in WORLD_CHAT_OPTIONS}
    if train:
        if from_stage is None:
            manifest = write_world(world, int(w["seed"]), int(w["train"]), int(w["val"]),
                                   workers=os.cpu_count() or 1, **chat_options)
        else:
            manifest = json.loads((world / "world.json").read_text(encoding="utf-8"))
            if [manifest["seed"], manifest["splits"]["train"], manifest["splits"]["val"],
                    *(manifest.get(key, False) for key in WORLD_CHAT_OPTIONS)] != \
                    [int(w["seed"]), int(w["train"]), int(w["val"]), *chat_options.values()]:
                raise ValueError(f"{world} is not the world of recipe {recipe_name!r}; cannot resume there")
        start = time.time()
        losses = {}
        stages = stage_recipes(recipe, world, output / "runs", manifest)
        names = [e["name"] for e in stages]
        for wanted in (from_stage, until_stage):
            if wanted is not None and wanted not in names:
                raise ValueError(f"No stage {wanted!r} in recipe {recipe_name!r} (stages: {', '.join(names)})")
        first = names.index(from_stage) if from_stage is not None else 0
        last = names.index(until_stage) if until_stage is not None else len(names) - 1
        if last < first:
            raise ValueError(f"--until-stage {until_stage} comes before --from-stage {from_stage}.")
        stages = stages[:last + 1]
        for entry in stages:
            training = entry["recipe"]["training"]
            if "max_steps" in training:
                training["max_steps"] = max(1, round(int(training["max_steps"]) * steps_scale))
        for position, entry in enumerate(stages):
            if position < first:
                summary = json.loads((entry["final"] / "training_summary.json").read_text(encoding="utf-8"))
            else:
                print(f"[train_default] stage {entry['name']} ({entry['recipe']['stage']})", flush=True)
                summary = run_training(entry["recipe"], resume_from_checkpoint="auto" if resume and position == first
                                       else None)
            losses[entry["name"]] = loss_windows(summary["log_history"], int(recipe.get("loss_window", 3)))
        previous = output / "results.json"
        earlier_s = json.loads(previous.read_text(encoding="utf-8")).get("train_s", 0.0) \
            if from_stage is not None and previous.is_file() else 0.0
        results: dict[str, Any] = {
            "recipe": recipe_name, "world": w, "steps_scale": steps_scale,
            "steps": {e["name"]: e["recipe"]["training"].get("max_steps") for e in stages},
            "losses": losses, "train_s": earlier_s + time.time() - start, "eval": recipe.get("eval") or {},
            "final": str(stages[-1]["final"]), "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores",
            "scores": {m: {} for m in MODELS}}
        # written now, so the training is on record even if scoring fails, and --eval-only children can read it
        (output / "results.json").write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
    else:
        results = json.loads((output / "results.json").read_text(encoding="utf-8"))
        results["eval"] = recipe.get("eval") or {}
    final = Path(checkpoint or results["final"])
    if checkpoint is not None:
        results["checkpoint"] = str(checkpoint)
    if evaluate_models and eval_jobs > 1 and len(models) > 1:
        score_in_children(recipe_name, output, models, eval_jobs, tasks=tasks, eval_limit=eval_limit,
                          checkpoint=checkpoint, processor_path=processor_path)
    elif evaluate_models:
        processor = XSamProcessor.from_pretrained(processor_path or final)
        settings = recipe.get("eval") or {}
        with torch.no_grad():
            for label in models:
                start = time.time()
                if label == "untrained":
                    torch.manual_seed(0)
                    model = XSamForSegmentation(XSamConfig.from_pretrained(final)).eval()
                else:
                    model = XSamForSegmentation.from_pretrained(final).eval()
                    model = blind(model) if label == "blind" else model
                scores = evaluate(model, processor, world, output / "eval", settings, label, tasks)
                (output / "eval" / label).mkdir(parents=True, exist_ok=True)
                (output / "eval" / label / "scores.json").write_text(json.dumps(scores), encoding="utf-8")
                (output / "eval" / label / "eval_s.json").write_text(json.dumps(time.time() - start))
    if not merge:
        return results
    results["eval_s"] = {}
    for label in MODELS:  # scores written by this process or by another one scoring the other models
        path = output / "eval" / label / "scores.json"
        if path.is_file():
            results["scores"][label] = json.loads(path.read_text(encoding="utf-8"))
        seconds = output / "eval" / label / "eval_s.json"
        if seconds.is_file():
            results["eval_s"][label] = json.loads(seconds.read_text(encoding="utf-8"))
    results["chat_answer_prior"] = chat_answer_prior(world, output / "eval")
    (output / "results.json").write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
    (output / "RESULTS.md").write_text(results_markdown(results), encoding="utf-8")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="ci", help="ci, default or a YAML path")
    parser.add_argument("--output", required=True)
    parser.add_argument("--no-eval", action="store_true")
    parser.add_argument("--eval-limit", type=int, default=None, help="validation images per task")
    parser.add_argument("--steps-scale", type=float, default=1.0, help="multiply every stage's max_steps")
    parser.add_argument("--tasks", default=None, help="comma-separated subset of " + ",".join(EVAL_TASKS))
    parser.add_argument("--eval-only", action="store_true", help="score the run already in --output")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of " + ",".join(MODELS))
    parser.add_argument("--checkpoint", default=None, help="score this checkpoint instead of the last stage's")
    parser.add_argument("--processor", default=None, help="processor folder (default: the checkpoint's)")
    parser.add_argument("--from-stage", default=None, help="resume the run in --output at this stage")
    parser.add_argument("--until-stage", default=None, help="stop after this stage (with --no-eval)")
    parser.add_argument("--resume", action="store_true",
                        help="resume the --from-stage stage from its last checkpoint (default: it starts over)")
    parser.add_argument("--eval-jobs", type=int, default=1, help="score the models in this many processes at once")
    parser.add_argument("--scores-only", action="store_true",
                        help="write only eval/<model>/, not the merged results (a child of --eval-jobs)")
    args = parser.parse_args(argv)
    results = run(args.recipe, args.output, evaluate_models=not args.no_eval,
                  tasks=args.tasks.split(",") if args.tasks else None, steps_scale=args.steps_scale,
                  eval_limit=args.eval_limit, train=not args.eval_only, models=args.models.split(","),
                  checkpoint=args.checkpoint, processor_path=args.processor, from_stage=args.from_stage,
                  until_stage=args.until_stage, resume=args.resume, eval_jobs=args.eval_jobs,
                  merge=not args.scores_only)
    if not args.scores_only:
        print(results_markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
