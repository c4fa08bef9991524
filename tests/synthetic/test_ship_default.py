"""Shipping a trained world model as the embedded default (xsam_hf/synthetic/ship.py) and loading it back."""

from __future__ import annotations

import json

import torch

from xsam_hf import default_model
from xsam_hf.modeling.configuration_xsam import XSamConfig
from xsam_hf.modeling.modeling_xsam import XSamForSegmentation
from xsam_hf.processing import XSamProcessor
from xsam_hf.synthetic.ship import ship
from xsam_hf.synthetic.train_default import RECIPES_DIR
from xsam_hf.synthetic.vocabulary import CLASS_NAMES, STUFF


def _fake_run(tmp_path):
    torch.manual_seed(0)
    model = XSamForSegmentation(XSamConfig.from_preset("world", stage="s3"))
    final = tmp_path / "run" / "runs" / "s3" / "final"
    model.save_pretrained(final)
    XSamProcessor.from_preset("world").save_pretrained(final)
    (final / "training_summary.json").write_text("{}")
    (tmp_path / "run" / "results.json").write_text(json.dumps({  # as train_default writes it
        "final": str(final), "recipe": "default", "world": {"seed": 0, "train": 4, "val": 2}, "steps": {"s3": 1},
        "losses": {"s3": {"loss": [2.0, 1.0]}}, "train_s": 1.0, "eval": {"limit": 2}, "eval_s": {"trained": 1.0},
        "machine": "test", "scores": {"trained": {"panoptic": 30.0}, "blind": {}, "untrained": {}}}))
    return tmp_path / "run", model


def test_ship_writes_a_small_loadable_folder_with_a_card(tmp_path, monkeypatch):
    run, model = _fake_run(tmp_path)
    dest = ship(run, tmp_path / "default_model")
    names = {p.name for p in dest.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md", "results.json"} <= names
    assert "training_summary.json" not in names  # training files stay behind
    assert sum(p.stat().st_size for p in dest.iterdir()) < 20 * 2**20
    card = (dest / "README.md").read_text()
    assert "| panoptic | PQ |" in card and "python -m xsam_hf.synthetic.train_default --recipe default" in card

    monkeypatch.setattr(default_model, "DEFAULT_MODEL_DIR", dest)
    loaded = default_model.load_model(None)
    assert loaded.source == "embedded:world" and not loaded.random_weights
    assert loaded.default_classes == tuple(CLASS_NAMES) and loaded.default_stuff_classes == tuple(STUFF)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.model.state_dict()[name]), name
    assert loaded.processor.tokenizer.get_vocab() == XSamProcessor.from_preset("world").tokenizer.get_vocab()


def test_a_named_model_gets_no_default_classes(tmp_path):
    run, _ = _fake_run(tmp_path)
    loaded = default_model.load_model(str(run / "runs" / "s3" / "final"))
    assert loaded.default_classes == () and loaded.source.endswith("final")


def test_shipped_results_name_no_local_folder_and_a_copied_recipe_by_its_name(tmp_path):
    run, _ = _fake_run(tmp_path)
    copied = tmp_path / "my_default.yaml"
    copied.write_text((RECIPES_DIR / "default.yaml").read_text())
    results = json.loads((run / "results.json").read_text())
    results.update(recipe=str(copied), checkpoint=str(run / "runs" / "s3" / "checkpoint-500"),
                   eval_s={"trained": 1.0}, note=str(tmp_path / "elsewhere"))
    (run / "results.json").write_text(json.dumps(results))
    shipped = json.loads((ship(run, tmp_path / "default_model") / "results.json").read_text())
    assert shipped["final"] == "runs/s3/final" and shipped["checkpoint"] == "runs/s3/checkpoint-500"
    assert shipped["recipe"] == "default" and shipped["eval_s"] == {"trained": 1.0}
    assert shipped["note"] == str(tmp_path / "elsewhere")  # outside the run: left as it is
    card = (tmp_path / "default_model" / "README.md").read_text()
    assert "--recipe default" in card and "Recipe `default` (steps" in card and str(copied) not in card

    inside = run / "default_copy.yaml"  # a copy kept in the run folder is named too
    inside.write_text((RECIPES_DIR / "default.yaml").read_text())
    (run / "results.json").write_text(json.dumps({**results, "recipe": str(inside)}))
    assert json.loads((ship(run, tmp_path / "inside") / "results.json").read_text())["recipe"] == "default"
    (run / "results.json").write_text(json.dumps(results))

    edited = (RECIPES_DIR / "default.yaml").read_text().replace("max_steps: 4000", "max_steps: 4001")
    assert edited != (RECIPES_DIR / "default.yaml").read_text()
    copied.write_text(edited)
    assert json.loads((ship(run, tmp_path / "again") / "results.json").read_text())["recipe"] == str(copied)
