"""The CI recipe (xsam_hf/synthetic/recipes/ci.yaml) end to end: world -> encoder warm-up -> S1 -> S2 -> S3 ->
`xsam eval` of every task.

`make test` runs the recipe's first stages in the background beside the test suite (one CPU thread each), its last
stage on every core once both are done, and then these ``ci_recipe`` tests on its output (``--ci-recipe-output
DIR``); run alone, they run the recipe themselves.
They assert that every logged loss term of every stage falls (mean of the first vs the last logged window) and that
the trained model beats the blind one (every image feature zeroed) by at least 10 points on each task's headline
metric, except where the short recipe is known not to (strict xfail: the day it does, the test says so).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from xsam_hf.synthetic.train_default import EVAL_TASKS, evaluation_seconds, load_recipe, run

MARGIN = 10.0  # points the trained model must beat the blind one by, per task
# Tasks the short recipe is measured not to learn (20 validation images per task), as strict xfails. Empty since
# GCG passes with S3's segmentation loss weighted 0.2 (ci.yaml; at 1.0 the model answered every GCG question
# with the referring answer "Sure, <SEG>.", 0 = 0).
SHORT_RECIPE_MISSES: dict[str, str] = {}


@pytest.fixture(scope="module")
def ci_run(request, tmp_path_factory):
    given = request.config.getoption("--ci-recipe-output")
    if given:
        output = Path(given)
        results = json.loads((output / "results.json").read_text())
        assert results["recipe"] == "ci", f"{output} holds a {results['recipe']!r} run, not the CI recipe"
        return output, results
    output = tmp_path_factory.mktemp("ci_recipe")
    return output, run("ci", output, models=("trained", "blind"), eval_jobs=2)


@pytest.mark.ci_recipe
def test_ci_recipe_runs_every_stage_and_writes_the_table(ci_run):
    output, results = ci_run
    recipe = load_recipe("ci")
    assert list(results["losses"]) == [stage["name"] for stage in recipe["stages"]]
    for stage in recipe["stages"]:
        summary = json.loads((output / "runs" / stage["name"] / "final" / "training_summary.json").read_text())
        assert summary["global_step"] == stage["training"]["max_steps"]
        assert summary["skipped_samples"] == 0
    table = (output / "RESULTS.md").read_text()
    for task in EVAL_TASKS:
        assert f"| {task} |" in table
    print(f"\nCI recipe: training {results['train_s']:.0f} s, evaluation {evaluation_seconds(results)}\n{table}")


@pytest.mark.ci_recipe
def test_every_loss_term_falls_in_every_stage(ci_run):
    _, results = ci_run
    expected = {"encoder_warmup": {"loss", "loss_cross_entropy"},  # the segment-classification head's loss
                "s1": {"loss", "loss_cross_entropy", "loss_mask", "loss_dice"}, "s2": {"loss"},
                "s3_text": {"loss", "lm_loss", "seg_loss"},  # chat, captions and GCG
                "s3": {"loss", "lm_loss", "seg_loss", "loss_cross_entropy", "loss_mask", "loss_dice"}}
    for stage, terms in expected.items():
        windows = results["losses"][stage]
        assert terms <= set(windows), (stage, sorted(windows))
        for term, (first, last) in windows.items():
            assert last < first, f"{stage} {term}: first window {first:.4f}, last window {last:.4f}"


@pytest.mark.ci_recipe
@pytest.mark.parametrize("task", [
    pytest.param(task, marks=pytest.mark.xfail(strict=True, reason=SHORT_RECIPE_MISSES[task]))
    if task in SHORT_RECIPE_MISSES else task for task in EVAL_TASKS])
def test_trained_beats_blind_by_ten_points(ci_run, task):
    _, results = ci_run
    trained, blind = results["scores"]["trained"][task], results["scores"]["blind"][task]
    assert math.isfinite(trained) and math.isfinite(blind), (task, trained, blind)
    assert trained - blind >= MARGIN, f"{task}: trained {trained:.1f}, blind {blind:.1f}"


# Fast checks of the driver (no training).
@pytest.mark.parametrize("name", ["ci", "default"])
def test_recipes_chain_warmup_s1_s2_s3_on_the_world(name, tmp_path):
    from xsam_hf.modeling.presets import get_preset
    from xsam_hf.synthetic import recipe_sources
    from xsam_hf.synthetic.train_default import stage_recipes
    from xsam_hf.training.encoder_warmup import warmup_settings

    manifest = {"recipe_sources": {"train": recipe_sources("train")},
                "evaluation_files": {"caption_chat_json": {"train": "chat/llava_caption_train.json"}}}
    recipe = load_recipe(name)
    stages = stage_recipes(recipe, tmp_path / "world", tmp_path / "runs", manifest)
    forms = [entry["recipe"]["stage"] for entry in stages]
    assert forms[:3] == ["encoder_warmup", "s1", "s2"] and forms[-1] == "s3"
    # the shipped default's warm-up keeps colour and shape on every pyramid level; the CI recipe's is shape-only
    expected = {"colour_weight": 1.0, "classify_every_level": True} if name == "default" else {}
    assert warmup_settings(stages[0]["recipe"], warmup=True) == expected
    assert stages[1]["recipe"]["model"]["init_from"] == [  # S1 takes only the warm-up's encoder and connector
        {"path": str(tmp_path / "runs" / "encoder_warmup" / "final"),
         "prefixes": ["segmentation_encoder.", "connector."]}]
    first_s3 = forms.index("s3")
    init = stages[first_s3]["recipe"]["model"]["init_from"]
    assert {entry["from_stage"] for entry in init} == {"s1", "s2"}  # the warm-up's encoder arrives through S1
    for entry in stages[first_s3 + 1:]:  # later S3 stages continue from the one before
        assert entry["recipe"]["model"]["pretrained"].endswith("final")
    for entry in stages:
        assert entry["recipe"]["data"]["root"] == str(tmp_path / "world")
        assert entry["recipe"]["data"]["sources"]
        model = entry["recipe"]["model"]
        points = (model.get("decoder_overrides") or {}).get("train_num_points") \
            or get_preset(model["preset"])["config"]["decoder_config"]["train_num_points"]
        assert points <= 2048  # the official 12,544 costs seconds a CPU step
        assert entry["recipe"]["training"]["max_steps"] >= 1
    last_sources = {s["format"] for s in stages[-1]["recipe"]["data"]["sources"]}
    assert last_sources == {"coco_panoptic", "refcoco", "reasonseg", "gcg", "coco_vgd", "coco_interactive", "llava"}


def test_a_stage_source_can_carry_a_repeat(tmp_path):
    from xsam_hf.synthetic import recipe_sources
    from xsam_hf.synthetic.train_default import stage_recipes

    manifest = {"recipe_sources": {"train": recipe_sources("train")},
                "evaluation_files": {"caption_chat_json": {"train": "chat/llava_caption_train.json"}}}
    recipe = {"common": {"training": {}}, "stages": [
        {"name": "s3", "stage": "s3", "sources": ["panoptic", {"name": "gcg", "repeat": 3}], "training": {}}]}
    (stage,) = stage_recipes(recipe, tmp_path / "world", tmp_path / "runs", manifest)
    panoptic, gcg = stage["recipe"]["data"]["sources"]
    assert "repeat" not in panoptic and gcg["repeat"] == 3 and gcg["format"] == "gcg"
    for bad in ({"name": "gcg", "weight": 3}, {"name": "nowhere", "repeat": 2}, {"repeat": 2}):
        recipe["stages"][0]["sources"] = [bad]
        with pytest.raises(ValueError, match="A stage source is a name"):
            stage_recipes(recipe, tmp_path / "world", tmp_path / "runs", manifest)


def test_headline_metrics_and_loss_windows():
    from xsam_hf.synthetic.train_default import headline, loss_windows

    assert headline({"results": {"b": {"PQ": 0.5}}}, "PQ") == 50.0
    assert headline({"results": {"b": {"overall": {"gIoU": 0.25}}}}, "gIoU") == 25.0
    assert headline({"results": {"b": {"point": {"mIoU": 0.2}, "box": {"mIoU": 0.4}}}}, "mIoU") == pytest.approx(30.0)
    assert headline({"results": {"b": {"mIoU": float("nan"), "num_images": 3, "num_images_with_masks": 0}}},
                    "mIoU") == 0.0
    history = [{"loss": 4.0, "lm_loss": 2.0}, {"loss": 3.0}, {"loss": 2.0, "lm_loss": 1.0}, {"loss": 1.0},
               {"train_runtime": 1.0, "train_loss": 2.5}]
    windows = loss_windows(history, 2)
    assert windows["loss"] == (3.5, 1.5) and windows["lm_loss"] == (2.0, 1.0)
    mixed = [{"loss": 60.0, "lm_loss": 5.0, "seg_loss": 55.0}, {"loss": 5.0, "lm_loss": 5.0},
             {"loss": 40.0, "lm_loss": 4.0, "seg_loss": 36.0}, {"loss": 4.0, "lm_loss": 4.0}]
    windows = loss_windows(mixed, 1)  # "loss" over the segmentation batches only
    assert windows["loss"] == (60.0, 40.0) and windows["lm_loss"] == (5.0, 4.0)


def test_resuming_checks_the_world_and_the_stage_name(tmp_path):
    from xsam_hf.synthetic import recipe_sources

    world = tmp_path / "world"
    world.mkdir()
    manifest = {"seed": 0, "splits": {"train": 300, "val": 20}, "recipe_sources": {"train": recipe_sources("train")},
                "evaluation_files": {"caption_chat_json": {"train": "chat/llava_caption_train.json"}}}
    (world / "world.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="No stage 'nope'.*s1, s2, s3_text, s3"):
        run("ci", tmp_path, from_stage="nope", evaluate_models=False)
    manifest["splits"]["train"] = 2000
    (world / "world.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="is not the world of recipe 'ci'"):
        run("ci", tmp_path, from_stage="s3", evaluate_models=False)
    for option in ("dense_train_chat", "identify_train_chat"):  # the same scenes, another training chat
        manifest["splits"]["train"] = 300
        manifest.pop("dense_train_chat", None)
        manifest[option] = True
        (world / "world.json").write_text(json.dumps(manifest))
        with pytest.raises(ValueError, match="is not the world of recipe 'ci'"):
            run("ci", tmp_path, from_stage="s3", evaluate_models=False)


@pytest.mark.parametrize("option", ["dense_train_chat", "identify_train_chat"])
def test_world_chat_options_must_be_yaml_booleans(tmp_path, option):
    import yaml

    recipe = yaml.safe_load(Path(_tiny_recipe(tmp_path / "tiny.yaml", {"only": 1})).read_text())
    recipe["world"][option] = "no"  # a quoted YAML string is truthy
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(recipe))
    with pytest.raises(ValueError, match=f"world.{option} must be true or false, got 'no'"):
        run(str(tmp_path / "bad.yaml"), tmp_path / "run", evaluate_models=False)
    assert not (tmp_path / "run" / "world").exists()


def _tiny_recipe(path: Path, stage_steps: dict[str, int], save_steps: int | None = None) -> str:
    """Write a recipe of S1 stages (name -> max_steps) on a 4-scene world, checkpointing every `save_steps`."""
    import yaml

    saving = {"save_strategy": "steps", "save_steps": save_steps} if save_steps else {"save_strategy": "no"}
    path.write_text(yaml.safe_dump({
        "world": {"seed": 0, "train": 4, "val": 2}, "loss_window": 1,
        "common": {"seed": 0, "model": {"preset": "world", "attn_implementation": "eager"},
                   "processor": {"preset": "world"},
                   "training": {"per_device_train_batch_size": 2, "logging_steps": 1, "report_to": "none",
                                "use_cpu": True, "disable_tqdm": True, **saving}},
        "stages": [{"name": name, "stage": "s1", "sources": ["panoptic"], "training": {"max_steps": steps}}
                   for name, steps in stage_steps.items()]}))
    return str(path)


def test_a_run_stopped_at_a_stage_goes_on_from_the_next_one(tmp_path):
    """`make test` trains the CI recipe in two runs (the last stage on two threads once the suite is done): the second
    run must end as one whole run would, with every stage's losses and both runs' training time."""
    path = _tiny_recipe(tmp_path / "tiny.yaml", {"first": 2, "second": 2})
    with pytest.raises(ValueError, match="not scored"):
        run(path, tmp_path / "run", until_stage="first")
    with pytest.raises(ValueError, match="No stage 'third'"):
        run(path, tmp_path / "run", until_stage="third", evaluate_models=False)
    stopped = run(path, tmp_path / "run", until_stage="first", evaluate_models=False)
    assert list(stopped["losses"]) == ["first"] and not (tmp_path / "run" / "runs" / "second").exists()
    assert stopped["final"] == str(tmp_path / "run" / "runs" / "first" / "final")
    with pytest.raises(ValueError, match="comes before"):
        run(path, tmp_path / "run", from_stage="second", until_stage="first", evaluate_models=False)
    whole = run(path, tmp_path / "run", from_stage="second", evaluate_models=False)
    assert list(whole["losses"]) == ["first", "second"] and whole["train_s"] > stopped["train_s"]
    assert whole["final"] == str(tmp_path / "run" / "runs" / "second" / "final")
    second = json.loads((tmp_path / "run" / "runs" / "second" / "final" / "training_summary.json").read_text())
    assert second["global_step"] == 2


def test_a_stopped_stage_resumes_from_its_last_checkpoint(tmp_path):
    def recipe(steps: int) -> str:
        return _tiny_recipe(tmp_path / f"tiny{steps}.yaml", {"only": steps}, save_steps=2)

    with pytest.raises(ValueError, match="--resume goes on with the --from-stage"):
        run(recipe(4), tmp_path / "run", resume=True, evaluate_models=False)
    run(recipe(2), tmp_path / "run", evaluate_models=False)  # stands in for a run stopped after step 2
    # mark the checkpoint's state: a resumed run carries its log history on, a restarted one starts a new one
    state_file = tmp_path / "run" / "runs" / "only" / "checkpoint-2" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    state["log_history"].append({"step": 2, "marker": "from checkpoint-2"})
    state_file.write_text(json.dumps(state))
    run(recipe(4), tmp_path / "run", from_stage="only", resume=True, evaluate_models=False)
    summary = json.loads((tmp_path / "run" / "runs" / "only" / "final" / "training_summary.json").read_text())
    assert summary["global_step"] == 4
    assert {"step": 2, "marker": "from checkpoint-2"} in summary["log_history"]
    assert [entry["step"] for entry in summary["log_history"] if "loss" in entry] == [1, 2, 3, 4]
    run(recipe(4), tmp_path / "run", from_stage="only", evaluate_models=False)  # without --resume: starts over
    summary = json.loads((tmp_path / "run" / "runs" / "only" / "final" / "training_summary.json").read_text())
    assert summary["global_step"] == 4 and not any("marker" in entry for entry in summary["log_history"])


def test_make_test_splits_the_ci_recipe_before_its_last_stage():
    import re

    makefile = (Path(__file__).parents[2] / "Makefile").read_text()
    split, last = (re.search(rf"^{name} := (\S+)$", makefile, re.M).group(1)
                   for name in ("CI_RECIPE_SPLIT", "CI_RECIPE_LAST"))
    assert [split, last] == [stage["name"] for stage in load_recipe("ci")["stages"][-2:]]


def test_the_results_table_reports_chat_s_question_only_prior(tmp_path):
    from xsam_hf.synthetic.train_default import chat_answer_prior, results_markdown

    world, eval_dir = tmp_path / "world", tmp_path / "eval"
    assert math.isnan(chat_answer_prior(world, eval_dir))  # chat not scored: no prior
    (world / "chat").mkdir(parents=True)
    (world / "chat" / "llava_qa_train.json").write_text("[]")
    (eval_dir / "blind" / "chat").mkdir(parents=True)
    (eval_dir / "blind" / "chat" / "predictions.jsonl").write_text("")
    assert math.isnan(chat_answer_prior(world, eval_dir))  # a world written for scoring only: no training chat
    training = [{"id": str(i), "conversations": [{"from": "human", "value": "<image>\nWhat colour is the sky?"},
                                                  {"from": "gpt", "value": answer}]}
                for i, answer in enumerate(["blue", "blue", "white"])]
    (world / "chat" / "llava_qa_train.json").write_text(json.dumps(training))
    samples = [{"question": "What colour is the sky?", "reference": reference, "prediction": "", "correct": False}
               for reference in ("blue", "white", "orange", "blue")]
    rows = [{"index": 0, "samples": samples[:3]}, {"index": 1, "samples": samples[3:]}]
    (eval_dir / "blind" / "chat" / "predictions.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    prior = chat_answer_prior(world, eval_dir)
    assert prior == pytest.approx(50.0)  # "blue" answers 2 of the 4 scored questions

    results = {"scores": {m: {} for m in ("trained", "untrained", "blind")}, "losses": {}, "recipe": "ci",
               "world": {}, "train_s": 1.0, "eval": {}, "machine": "x", "chat_answer_prior": prior}
    table = results_markdown(results)
    assert "question-only prior" in table and "50.0 on the same questions" in table
    results["chat_answer_prior"] = float("nan")
    assert "question-only prior" not in results_markdown(results)


def test_each_model_keeps_its_own_scoring_time():
    # models are scored by separate processes side by side: one shared clock would report the last writer's time
    assert evaluation_seconds({"eval_s": {"trained": 263.4, "blind": 250.0}}) == "trained 263 s, blind 250 s"
    assert evaluation_seconds({"eval_s": 263.4}) == "263 s"  # a results.json from before per-model times
    assert evaluation_seconds({"eval_s": {}}) == "not run"


def test_models_are_scored_in_child_processes_one_thread_each(monkeypatch, tmp_path):
    import subprocess

    from xsam_hf.synthetic.train_default import score_in_children

    launched = []

    class FakeChild:
        def __init__(self, command, env):
            launched.append((command, env))
            self.returncode = 3 if command[-1] == "blind" else 0

        def poll(self):
            return self.returncode

    monkeypatch.setattr(subprocess, "Popen", FakeChild)
    with pytest.raises(RuntimeError, match=r"blind \(exit 3\)"):
        score_in_children("ci", tmp_path, ["trained", "blind", "untrained"], 2, tasks=["gcg", "vgd"],
                          eval_limit=20, checkpoint=None, processor_path=None)
    assert [command[-1] for command, _ in launched] == ["trained", "blind", "untrained"]  # all run despite a failure
    for command, env in launched:
        assert env["OMP_NUM_THREADS"] == "1"
        assert {"--eval-only", "--scores-only"} <= set(command) and "--checkpoint" not in command
        assert command[command.index("--tasks") + 1] == "gcg,vgd"
        assert command[command.index("--eval-limit") + 1] == "20"
        assert command[command.index("--output") + 1] == str(tmp_path)


def test_a_freed_scoring_slot_is_refilled_before_the_first_child_ends(monkeypatch, tmp_path):
    # "trained" only finishes once "untrained" has started: waiting on children in launch order would hang here
    import subprocess
    import time

    from xsam_hf.synthetic.train_default import score_in_children

    launched, polls = [], []

    class FakeChild:
        def __init__(self, command, env):
            self.label = command[-1]
            launched.append(self.label)
            self.returncode = None

        def poll(self):
            polls.append(self.label)
            if len(polls) > 100:
                raise AssertionError(f"no slot was refilled; launched {launched}")
            if self.label != "trained" or "untrained" in launched:
                self.returncode = 0
            return self.returncode

    monkeypatch.setattr(subprocess, "Popen", FakeChild)
    monkeypatch.setattr(time, "sleep", lambda seconds: None)
    score_in_children("ci", tmp_path, ["trained", "blind", "untrained"], 2, tasks=None, eval_limit=None,
                      checkpoint=None, processor_path=None)
    assert launched == ["trained", "blind", "untrained"]


def test_eval_jobs_scores_each_model_in_a_child_of_the_command_line(tmp_path):
    # the real children, as `python -m` starts them (a child must import this module by its package name)
    import subprocess
    import sys

    import torch

    from xsam_hf.modeling.configuration_xsam import XSamConfig
    from xsam_hf.modeling.modeling_xsam import XSamForSegmentation
    from xsam_hf.processing import XSamProcessor
    from xsam_hf.synthetic.writer import write_world

    write_world(tmp_path / "world", seed=0, num_train=0, num_val=2)
    final = tmp_path / "runs" / "s3" / "final"
    torch.manual_seed(0)
    XSamForSegmentation(XSamConfig.from_preset("world", stage="s3")).save_pretrained(final)
    XSamProcessor.from_preset("world").save_pretrained(final)
    (tmp_path / "results.json").write_text(json.dumps({
        "recipe": "ci", "world": {}, "losses": {}, "train_s": 1.0, "final": str(final), "machine": "test",
        "scores": {"trained": {}, "blind": {}, "untrained": {}}}))
    done = subprocess.run([sys.executable, "-m", "xsam_hf.synthetic.train_default", "--recipe", "ci", "--output",
                           str(tmp_path), "--eval-only", "--models", "trained,blind", "--eval-jobs", "2",
                           "--tasks", "chat", "--eval-limit", "1"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    for label in ("trained", "blind"):
        assert math.isfinite(results["scores"][label]["chat"])
        assert (tmp_path / "eval" / label / "chat" / "results.json").is_file()
        assert results["eval_s"][label] > 0
    assert "untrained" not in results["eval_s"]
