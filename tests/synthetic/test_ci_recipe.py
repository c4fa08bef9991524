"""The CI recipe (xsam_hf/synthetic/recipes/ci.yaml) end to end: world -> S1 -> S2 -> S3 -> `xsam eval` of every task.

Asserts that every logged loss term of every stage falls (mean of the first vs the last logged window; S1's dice
term excepted, see below) and that the trained, blind and untrained models are each scored on every task. The recipe
is far too short to learn the tasks, so the issue's "beats the blind model by 10 points" is NOT asserted here: the
measured gaps are written to ``RESULTS.md`` of the run (and printed) instead.

The end-to-end tests are ``slow`` (excluded from the default run): on the shared 2-core CPU the recipe took 4.3 min
(73 s training, 170 s evaluation) on a quiet machine and over 15 min beside other jobs, above the few-minute CI
budget. The driver's fast checks run by default.
"""

from __future__ import annotations

import json
import math
import time

import pytest

from xsam_hf.synthetic.train_default import EVAL_TASKS, load_recipe, run


@pytest.fixture(scope="module")
def ci_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("ci_recipe")
    start = time.time()
    results = run("ci", output)
    return output, results, time.time() - start


@pytest.mark.slow
def test_ci_recipe_runs_every_stage_and_writes_the_table(ci_run):
    output, results, wall = ci_run
    recipe = load_recipe("ci")
    assert list(results["losses"]) == [stage["name"] for stage in recipe["stages"]]
    for stage in recipe["stages"]:
        summary = json.loads((output / "runs" / stage["name"] / "final" / "training_summary.json").read_text())
        assert summary["global_step"] == stage["training"]["max_steps"]
        assert summary["skipped_samples"] == 0
    table = (output / "RESULTS.md").read_text()
    for task in EVAL_TASKS:
        assert f"| {task} |" in table
    print(f"\nCI recipe wall time {wall:.0f} s\n{table}")


@pytest.mark.slow
def test_every_loss_term_falls_in_every_stage(ci_run):
    _, results, _ = ci_run
    expected = {"s1": {"loss", "loss_cross_entropy", "loss_mask", "loss_dice"}, "s2": {"loss"},
                "s3": {"loss", "lm_loss", "seg_loss", "loss_cross_entropy", "loss_mask", "loss_dice"}}
    for stage, terms in expected.items():
        windows = results["losses"][stage]
        assert terms <= set(windows), (stage, sorted(windows))
        for term, (first, last) in windows.items():
            assert last < first, f"{stage} {term}: first window {first:.4f}, last window {last:.4f}"


@pytest.mark.slow
def test_every_task_is_scored_for_trained_blind_and_untrained(ci_run):
    _, results, _ = ci_run
    for model in ("trained", "blind", "untrained"):
        scores = results["scores"][model]
        assert set(scores) == set(EVAL_TASKS)
        missing = [task for task, value in scores.items() if not math.isfinite(value)]
        assert not missing, f"{model}: no score for {missing}"


# Fast checks of the driver (no training).
@pytest.mark.parametrize("name", ["ci", "default"])
def test_recipes_chain_s1_s2_s3_on_the_world(name, tmp_path):
    from xsam_hf.modeling.presets import get_preset
    from xsam_hf.synthetic import recipe_sources
    from xsam_hf.synthetic.train_default import stage_recipes

    manifest = {"recipe_sources": {"train": recipe_sources("train")},
                "evaluation_files": {"caption_chat_json": {"train": "chat/llava_caption_train.json"}}}
    recipe = load_recipe(name)
    stages = stage_recipes(recipe, tmp_path / "world", tmp_path / "runs", manifest)
    forms = [entry["recipe"]["stage"] for entry in stages]
    assert forms[0] == "s1" and forms[1] == "s2" and forms[-1] == "s3"
    first_s3 = forms.index("s3")
    init = stages[first_s3]["recipe"]["model"]["init_from"]
    assert {entry["from_stage"] for entry in init} == {"s1", "s2"}
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
