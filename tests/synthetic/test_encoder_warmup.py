"""The encoder warm-up stage (`stage: encoder_warmup`): mask-pooled segment classification that trains only the SAM
encoder and the connector, and starts S1 of the synthetic recipes."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from xsam_hf.training.encoder_warmup import (TRAINED_PREFIXES, WARMUP_STAGE, EncoderWarmupModel,
                                             mask_pooled_features)
from xsam_hf.training.train import build_model, run_training


def test_mask_pooled_features_is_the_area_weighted_mean():
    features = torch.arange(32.0).reshape(2, 4, 4)  # 2 channels, 4x4 cells of 2x2 pixels on an 8x8 canvas
    masks = torch.zeros(2, 8, 8)
    masks[0, 0:2, 0:4] = 1  # cells (0,0), (0,1) fully
    masks[0, 2, 0:2] = 1  # half of cell (1,0)
    pooled = mask_pooled_features(features, masks)
    expected = [(0 + 1 + 0.5 * 4) / 2.5, (16 + 17 + 0.5 * 20) / 2.5]
    assert pooled[0].tolist() == pytest.approx(expected)
    assert pooled[1].tolist() == [0.0, 0.0]  # an empty mask


def _warmup_recipe(world, output_dir, steps: int) -> dict:
    from xsam_hf.synthetic.train_default import world_sources

    return {
        "stage": WARMUP_STAGE, "seed": 0,
        "model": {"preset": "world", "attn_implementation": "eager"}, "processor": {"preset": "world"},
        "data": {"root": str(world.root), "sources": [world_sources(world.manifest)["panoptic"]], "seed": 0},
        "training": {"output_dir": str(output_dir), "max_steps": steps, "per_device_train_batch_size": 4,
                     "learning_rate": 1e-3, "lr_scheduler_type": "constant", "weight_decay": 0.0,
                     "max_grad_norm": 1.0, "logging_steps": 5, "save_strategy": "no", "report_to": "none",
                     "use_cpu": True, "disable_tqdm": True, "dataloader_num_workers": 0},
    }


def test_warmup_learns_the_segments_and_changes_only_the_encoder_and_connector(world, tmp_path):
    recipe = _warmup_recipe(world, tmp_path / "warmup", steps=40)
    summary = run_training(recipe)
    losses = [entry["loss_cross_entropy"] for entry in summary["log_history"] if "loss_cross_entropy" in entry]
    assert len(losses) == 8
    assert sum(losses[-2:]) / 2 < 0.8 * sum(losses[:2]) / 2  # 20 training scenes: the classes are learned

    final = load_file(tmp_path / "warmup" / "final" / "model.safetensors")
    torch.manual_seed(0)
    s1 = copy.deepcopy(recipe)
    s1["stage"] = "s1"
    initial, _ = build_model(s1, num_closed_set_classes=len(world.manifest["class_names"]))
    changed = {name for name, value in initial.state_dict().items() if not torch.equal(value, final[name])}
    assert changed and all(name.startswith(TRAINED_PREFIXES) for name in changed)
    assert any(name.startswith("segmentation_encoder.") for name in changed)
    assert any(name.startswith("connector.") for name in changed)
    # the summary counts what was trained: every encoder and connector tensor plus the head's weight and bias
    encoder_and_connector = [name for name, _ in initial.named_parameters() if name.startswith(TRAINED_PREFIXES)]
    frozen = sum(1 for name, _ in initial.named_parameters()) - len(encoder_and_connector)
    assert summary["freezing"] == {"policy": WARMUP_STAGE, "trainable": len(encoder_and_connector) + 2,
                                   "frozen": frozen}


def test_s1_starts_from_the_warmed_up_encoder(world, tmp_path):
    from xsam_hf.synthetic.train_default import stage_recipes

    recipe = {"common": {"seed": 0, "model": {"preset": "world", "attn_implementation": "eager"},
                         "processor": {"preset": "world"}, "training": {"max_steps": 1}},
              "stages": [{"name": "warmup", "stage": WARMUP_STAGE, "sources": ["panoptic"]},
                         {"name": "s1", "stage": "s1", "sources": ["panoptic"]},
                         {"name": "s2", "stage": "s2", "sources": ["caption"]},
                         {"name": "s3", "stage": "s3", "sources": ["refcoco"]}]}
    stages = {e["name"]: e["recipe"] for e in stage_recipes(recipe, world.root, tmp_path / "runs", world.manifest)}
    assert stages["s1"]["model"]["init_from"] == [{"path": str(tmp_path / "runs" / "warmup" / "final"),
                                                   "prefixes": list(TRAINED_PREFIXES)}]
    assert {e["from_stage"] for e in stages["s3"]["model"]["init_from"]} == {"s1", "s2"}  # not the warm-up

    run_training({**stages["warmup"], "training": {**stages["warmup"]["training"], "report_to": "none",
                                                    "use_cpu": True, "save_strategy": "no"}})
    warmed = load_file(tmp_path / "runs" / "warmup" / "final" / "model.safetensors")
    model, report = build_model(stages["s1"], num_closed_set_classes=len(world.manifest["class_names"]))
    expected = [name for name in warmed if name.startswith(TRAINED_PREFIXES)]
    assert report["init_from"][0]["loaded"] == len(expected)
    state = model.state_dict()
    assert all(torch.equal(state[name], warmed[name]) for name in expected)

    late = copy.deepcopy(recipe)
    late["stages"].insert(1, late["stages"].pop(0))  # the warm-up after S1
    with pytest.raises(ValueError, match="must come first"):
        stage_recipes(late, world.root, tmp_path / "late", world.manifest)


def test_warmup_resumes_from_its_checkpoint_and_takes_callbacks(world, tmp_path):
    """The warm-up is one form of `run_training`: a run stopped at step 4 and resumed ends where the whole run ends."""
    from transformers import TrainerCallback

    class CountSteps(TrainerCallback):
        steps = 0

        def on_step_end(self, args, state, control, **kwargs):
            CountSteps.steps += 1

    whole = _warmup_recipe(world, tmp_path / "whole", steps=8)
    run_training(whole, callbacks=[CountSteps()])
    assert CountSteps.steps == 8

    halted = _warmup_recipe(world, tmp_path / "halted", steps=8)
    halted["training"].update(save_strategy="steps", save_steps=4)
    first = copy.deepcopy(halted)
    first["training"]["max_steps"] = 4
    run_training(first)
    assert (tmp_path / "halted" / "checkpoint-4").is_dir()
    summary = run_training(halted, resume_from_checkpoint="auto")
    assert summary["global_step"] == 8 and summary["freezing"]["policy"] == WARMUP_STAGE
    assert min(entry["step"] for entry in summary["log_history"] if "loss" in entry) > 4  # it did not start over
    resumed = load_file(tmp_path / "halted" / "final" / "model.safetensors")
    reference = load_file(tmp_path / "whole" / "final" / "model.safetensors")
    assert resumed.keys() == reference.keys()
    for name in reference:
        torch.testing.assert_close(resumed[name], reference[name], rtol=1e-4, atol=1e-5, msg=name)


def _world_segmentor(classes: int):
    from xsam_hf.modeling.configuration_xsam import XSamConfig
    from xsam_hf.modeling.modeling_xsam import XSamForSegmentation

    torch.manual_seed(0)
    return XSamForSegmentation(XSamConfig.from_preset("world", stage="s1", num_closed_set_classes=classes))


def test_colour_target_is_each_segments_mean_input_and_the_loss_adds_its_weighted_mse():
    model = EncoderWarmupModel(_world_segmentor(3), num_classes=3, colour_weight=0.5)
    side = model.config.segmentation_encoder_config.image_size
    pixels = torch.zeros(1, 3, side, side)
    pixels[0, :, : side // 2] = torch.tensor([1.0, -1.0, 0.5])[:, None, None]  # top half one colour
    pixels[0, :, side // 2:] = torch.tensor([-2.0, 0.0, 2.0])[:, None, None]
    masks = torch.zeros(2, side, side)
    masks[0, : side // 4] = 1  # inside the top half
    masks[1, side // 4: 3 * side // 4] = 1  # half of each
    levels, colours = model._pooled(pixels, [masks])
    torch.testing.assert_close(colours, torch.tensor([[1.0, -1.0, 0.5], [-0.5, -0.5, 1.25]]))
    assert [level.shape[1] for level in levels] == list(model.config.decoder_config.feature_channels)

    output = model(pixels, [masks], [torch.tensor([0, 2])])
    ce = F.cross_entropy(model.head(levels[0]), torch.tensor([0, 2]))
    mse = torch.stack([F.mse_loss(head(level), colours) for head, level in zip(model.colour_heads, levels)]).mean()
    assert output.loss_dict["loss_colour"].item() == pytest.approx(mse.item(), rel=1e-5)
    assert output.loss.item() == pytest.approx(ce.item() + 0.5 * mse.item(), rel=1e-5)

    plain = EncoderWarmupModel(_world_segmentor(3), num_classes=3)
    assert plain.colour_heads is None
    assert set(plain(pixels, [masks], [torch.tensor([0, 2])]).loss_dict) == {"loss_cross_entropy"}


def test_classify_every_level_averages_one_class_heads_cross_entropy_per_level():
    torch.manual_seed(1)
    model = EncoderWarmupModel(_world_segmentor(4), num_classes=4, classify_every_level=True)
    side = model.config.segmentation_encoder_config.image_size
    pixels = torch.randn(2, 3, side, side)
    masks = [torch.zeros(2, side, side), torch.zeros(1, side, side)]
    masks[0][0, :16, :16] = 1
    masks[0][1, 40:, 8:60] = 1
    masks[1][0, 20:50, 20:50] = 1
    labels = [torch.tensor([3, 1]), torch.tensor([0])]
    levels, _ = model._pooled(pixels, masks)
    targets = torch.tensor([3, 1, 0])
    heads = [model.head, *model.coarse_heads]
    assert len(heads) == len(levels) > 1 and model.colour_heads is None
    per_level = [F.cross_entropy(head(level), targets).item() for head, level in zip(heads, levels)]
    output = model(pixels, masks, labels)
    assert output.loss.item() == pytest.approx(sum(per_level) / len(per_level), rel=1e-5)
    assert output.loss_dict["loss_cross_entropy"].item() == pytest.approx(output.loss.item())
    # the coarse heads change the loss: without them only the finest level's term is left
    finest_only = EncoderWarmupModel(model.segmentor, num_classes=4)
    finest_only.head = model.head
    assert finest_only(pixels, masks, labels).loss.item() == pytest.approx(per_level[0], rel=1e-5)
    assert not any(abs(term - per_level[0]) < 1e-6 for term in per_level[1:])


def test_colour_and_every_level_warmup_learns_colour_and_saves_only_the_s1_form_model(world, tmp_path):
    recipe = _warmup_recipe(world, tmp_path / "colour", steps=40)
    recipe["warmup"] = {"colour_weight": 1.0, "classify_every_level": True}
    summary = run_training(recipe)
    colour = [entry["loss_colour"] for entry in summary["log_history"] if "loss_colour" in entry]
    assert len(colour) == 8 and sum(colour[-2:]) / 2 < 0.5 * sum(colour[:2]) / 2
    final = load_file(tmp_path / "colour" / "final" / "model.safetensors")
    trained = sum(1 for name in final if name.startswith(TRAINED_PREFIXES))
    # + three class heads (one a level) and three colour heads, a weight and a bias each
    assert summary["freezing"]["trainable"] == trained + 2 * 3 + 2 * 3
    assert not any(name.startswith(("head.", "coarse_heads.", "colour_heads.")) for name in final)  # S1 form only


@pytest.mark.parametrize(("stage", "section", "message"), [
    ("s1", {"colour_weight": 1.0}, "applies to the encoder_warmup stage only"),
    (WARMUP_STAGE, {"colour": 1.0}, "takes only colour_weight and classify_every_level"),
    (WARMUP_STAGE, {"colour_weight": -1.0}, "must be >= 0"),
    (WARMUP_STAGE, {"classify_every_level": "no"}, "must be true or false")])
def test_warmup_section_is_checked(world, tmp_path, stage, section, message):
    recipe = _warmup_recipe(world, tmp_path / "bad", steps=1)
    recipe.update(stage=stage, warmup=section)
    with pytest.raises(ValueError, match=message):
        run_training(recipe)


@pytest.mark.parametrize("section", ["lora", "quantization", "freeze", "augmentation"])
def test_warmup_refuses_sections_that_do_not_apply(world, tmp_path, section):
    recipe = _warmup_recipe(world, tmp_path / "warmup", steps=1)
    recipe[section] = {"r": 4}
    with pytest.raises(ValueError, match=f"no `{section}:` section"):
        run_training(recipe)
