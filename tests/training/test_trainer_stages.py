"""Stage policies, parameter groups, learning-rate schedule and recipes; S1 -> S2 -> S3 trained and chained."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from xsam_hf import XSamForSegmentation
from xsam_hf.processing import XSamProcessor
from xsam_hf.training.collator import XSamDataCollator
from xsam_hf.training.stages import (
    STAGE_POLICIES,
    apply_stage_freezing,
    lr_multiplier_for,
    no_decay_parameter_names,
    parameter_groups,
    unreached_parameter_modules,
)
from xsam_hf.training.train import (
    _packaged_file,
    build_model,
    build_train_dataset,
    build_training_arguments,
    builtin_recipes,
    load_recipe,
    run_training,
)
from xsam_hf.training.trainer import XSamTrainer, XSamTrainingArguments

from .conftest import tiny_model, tiny_recipe

CONFIGS = Path(__file__).resolve().parents[2] / "xsam_hf" / "training" / "configs"


def tiny(stage: str) -> XSamForSegmentation:
    return tiny_model(stage)


def trainable_top_level(model) -> set[str]:
    return {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad}


def test_stage_policies_train_exactly_the_modules_of_the_spec():
    s1, s2, s3 = tiny("s1"), tiny("s2"), tiny("s3")
    for stage, model in (("s1", s1), ("s2", s2), ("s3", s3)):
        apply_stage_freezing(model, STAGE_POLICIES[stage].trainable)
    assert trainable_top_level(s1) == {"segmentation_encoder", "connector", "segmentation_decoder", "closed_set_head"}
    assert trainable_top_level(s2) == {"vision_projector", "seg_projector"}
    assert trainable_top_level(s3) == {name for name, _ in s3.named_children()}
    # Never-reached parameters are frozen in every stage: SigLIP's last layer (hidden_states[-2] is read), its
    # post-layernorm and pooling head, SAM's neck (X-SAM reads the blocks, not the neck).
    frozen_s3 = {name for name, p in s3.named_parameters() if not p.requires_grad}
    frozen_siglip_layers = {n for n in frozen_s3 if n.startswith("vision_tower.encoder.")}
    assert frozen_siglip_layers and all(n.startswith("vision_tower.encoder.layers.2.") for n in frozen_siglip_layers)
    assert any(n.startswith("vision_tower.head.") for n in frozen_s3)
    assert any(n.startswith("segmentation_encoder.vision_encoder.neck.") for n in frozen_s3)
    assert not any(n.startswith("segmentation_encoder.vision_encoder.layers.") for n in frozen_s3)  # all 8 read
    # S2 reads SAM only up to hidden_states[-2], so its last SAM block is unreached (and frozen anyway).
    assert "segmentation_encoder.vision_encoder.layers.7" in unreached_parameter_modules(s2.config)


def test_unreached_parameters_are_exactly_those_without_gradient(data_root, sources):
    """A generic-segmentation step through the full model reaches every parameter but the listed ones."""
    model = tiny("s3")
    dataset = build_train_dataset(tiny_recipe("s3", data_root, data_root / "unused", [sources["genseg"]]))
    batch = XSamDataCollator(XSamProcessor.from_preset("tiny"), stage="s3")([dataset[0], dataset[1]])
    batch.pop("skipped_samples"), batch.pop("task")
    model(**batch).loss.backward()
    without_gradient = {name for name, p in model.named_parameters() if p.grad is None or not p.grad.any()}
    unreached = unreached_parameter_modules(model.config)
    expected = {name for name, _ in model.named_parameters()
                if any(name.startswith(module + ".") for module in unreached)}
    assert without_gradient == expected


def test_parameter_groups_scale_encoders_and_exclude_norms_biases_embeddings_from_decay():
    model = tiny("s3")
    apply_stage_freezing(model, None)
    groups = parameter_groups(model, 4e-5, 0.05, STAGE_POLICIES["s3"].lr_multipliers)
    by_name = {name: group for group in groups for name in group["parameter_names"]}
    assert by_name["vision_tower.encoder.layers.0.mlp.fc1.weight"]["lr"] == pytest.approx(4e-6)
    assert by_name["segmentation_encoder.vision_encoder.layers.0.attn.qkv.weight"]["lr"] == pytest.approx(4e-6)
    assert by_name["language_model.model.layers.0.self_attn.qkv_proj.weight"]["lr"] == pytest.approx(4e-5)
    assert by_name["segmentation_decoder.transformer_module.decoder.layers.0.fc1.weight"]["lr"] == pytest.approx(4e-5)
    no_decay = {
        "language_model.model.embed_tokens.weight", "background_embedding.weight", "class_head.logit_scale",
        "language_model.model.norm.weight", "vision_tower.encoder.layers.0.layer_norm1.weight",
        "segmentation_encoder.vision_encoder.pos_embed", "segmentation_encoder.vision_encoder.layers.0.attn.rel_pos_h",
        "segmentation_decoder.transformer_module.queries_embedder.weight", "vision_projector.linear_1.bias",
        "segmentation_decoder.pixel_decoder.level_embed",
    }
    for name in no_decay:
        assert by_name[name]["weight_decay"] == 0.0, name
    decayed = ("vision_projector.linear_1.weight", "language_model.lm_head.weight",
               "connector.levels.0.layers.0.weight")
    for name in decayed:
        assert by_name[name]["weight_decay"] == 0.05, name
    # GroupNorm weights of the connector / pixel decoder (found by module type, not by name) do not decay either.
    group_norms = [f"{n}.weight" for n, m in model.named_modules() if isinstance(m, torch.nn.GroupNorm)]
    assert group_norms and all(name in no_decay_parameter_names(model) for name in group_norms)
    assert {g["name"] for g in groups} == {"lr_x1/decay", "lr_x1/no_decay", "lr_x0.1/decay", "lr_x0.1/no_decay"}
    assert sum(len(g["params"]) for g in groups) == sum(p.requires_grad for p in model.parameters())
    # Under peft, names gain prefixes; the module components still match.
    assert lr_multiplier_for("base_model.model.vision_tower.encoder.x", {"vision_tower": 0.1}) == 0.1
    assert lr_multiplier_for("base_model.model.my_vision_tower.x", {"vision_tower": 0.1}) == 1.0


def test_trainer_optimizer_groups_and_step_schedule(tmp_path):
    model = tiny("s1")
    apply_stage_freezing(model, STAGE_POLICIES["s1"].trainable)
    args = XSamTrainingArguments(output_dir=str(tmp_path), learning_rate=1e-4, weight_decay=0.05, use_cpu=True,
                                 module_lr_multipliers={"segmentation_encoder": 0.1}, lr_milestones=[0.5, 0.75],
                                 warmup_steps=2, report_to="none")
    trainer = XSamTrainer(model=model, args=args)
    trainer.create_optimizer_and_scheduler(num_training_steps=8)
    base = next(g for g in trainer.optimizer.param_groups if g["lr_multiplier"] == 1.0)
    encoder = next(g for g in trainer.optimizer.param_groups if g["lr_multiplier"] == 0.1)
    seen_base, seen_encoder = [], []
    for _ in range(8):
        seen_base.append(base["lr"])
        seen_encoder.append(encoder["lr"])
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
    # Linear warm-up over 2 steps, then x0.1 at 50 % and 75 % of the steps (S1's MultiStepLR at epochs 24/30 of 36).
    assert seen_base == pytest.approx([5e-5, 1e-4, 1e-4, 1e-4, 1e-5, 1e-5, 1e-6, 1e-6])
    assert seen_encoder == pytest.approx([v * 0.1 for v in seen_base])
    assert not trainer.args.remove_unused_columns and trainer.args.label_names == ["labels"]


def test_recipes_match_the_stage_table_and_overrides_apply(tmp_path):
    shipped = {"s1_segmentor", "s2_alignment", "s3_mixed", "s3_lora", "s3_qlora", "finetune_coco"}
    assert shipped <= set(builtin_recipes())
    s1, s2, s3 = load_recipe("s1_segmentor"), load_recipe("s2_alignment"), load_recipe("s3_mixed")
    expected = {  # architecture spec §4: lr, epochs, per-device batch, wd, clip, activation checkpointing
        "s1": (s1, 1e-4, 36, 4, 0.05, 0.01, False),
        "s2": (s2, 1e-3, 1, 4, 0.0, 1.0, True),
        "s3": (s3, 4e-5, 1, 4, 0.05, 1.0, True),
    }
    for stage, (recipe, lr, epochs, batch, wd, clip, checkpointing) in expected.items():
        training = recipe["training"]
        assert recipe["stage"] == stage
        assert (training["learning_rate"], training["num_train_epochs"], training["per_device_train_batch_size"],
                training["weight_decay"], training["max_grad_norm"], training["activation_checkpointing"]) == (
            lr, epochs, batch, wd, clip, checkpointing)
    assert s1["augmentation"] == {"min_scale": 0.1, "max_scale": 2.0}
    assert s1["training"]["lr_milestones"] == pytest.approx([24 / 36, 30 / 36])
    assert s2["training"]["gradient_accumulation_steps"] == 4
    assert s2["freeze"]["trainable"] == ["vision_projector", "seg_projector"]
    assert s2["processor"]["pad_to_square"] is True and s3["processor"]["pad_to_square"] is False
    assert [e["from_stage"] for e in s2["model"]["init_from"]] == ["s1"]
    assert [e["from_stage"] for e in s3["model"]["init_from"]] == ["s1", "s2"]
    assert s3["training"]["module_lr_multipliers"] == {"vision_tower": 0.1, "segmentation_encoder": 0.1}
    assert {s["format"] for s in s3["data"]["sources"]} == {"llava", "coco_panoptic", "refcoco", "reasonseg", "gcg",
                                                            "coco_vgd"}
    assert len(s3["data"]["sources"]) == 11 and s3["data"]["balance_threshold"] == 0.1

    qlora = load_recipe("s3_qlora", ["training.output_dir=" + str(tmp_path), "data.sources.1.image_dir=/elsewhere",
                                     "lora.r=8", "model.config_overrides.lm_loss_weight=0.5"])
    assert qlora["quantization"]["load_in_4bit"] and qlora["lora"]["r"] == 8 and qlora["lora"]["lora_alpha"] == 256
    assert qlora["data"]["sources"][1]["image_dir"] == "/elsewhere" and qlora["stage"] == "s3"
    assert qlora["model"]["config_overrides"] == {"lm_loss_weight": 0.5}
    for name in ("s1_segmentor", "s2_alignment", "s3_mixed", "s3_lora", "finetune_coco"):
        args = build_training_arguments(load_recipe(name, [f"training.output_dir={tmp_path}"]))
        assert args.remove_unused_columns is False
        assert args.bf16 is False or torch.cuda.is_available()  # "auto" resolves to False without a bf16 GPU
    # The shipped FSDP / DeepSpeed files are found by name (GPU-only and untested here; see s3_mixed.yaml).
    fsdp = build_training_arguments(load_recipe("s3_mixed", [f"training.output_dir={tmp_path}", "training.fsdp=true",
                                                             "training.fsdp_config=fsdp.json",
                                                             "training.activation_checkpointing=false"]))
    assert fsdp.fsdp_plugin_args["fsdp_version"] == 2
    assert "Phi3DecoderLayer" in fsdp.fsdp_plugin_args["transformer_cls_names_to_wrap"]
    deepspeed = json.loads((CONFIGS / "deepspeed_zero2.json").read_text())
    assert deepspeed["zero_optimization"]["stage"] == 2
    assert _packaged_file("deepspeed_zero2.json") == str(CONFIGS / "deepspeed_zero2.json")


def test_three_stages_train_and_chain(data_root, sources, tmp_path):
    """S1 (with scale + crop) -> S2 (starts from S1's SAM) -> S3 (S1's segmentor + connector, S2's projectors), a few
    steps each on the tiny preset; S3 reads every task's official format, one task per step."""
    s1 = tiny_recipe("s1", data_root, tmp_path / "s1", [sources["genseg"]], max_steps=1)
    s1["augmentation"] = {"min_scale": 0.1, "max_scale": 2.0}
    s1_summary = run_training(s1)
    assert s1_summary["global_step"] == 1 and s1_summary["freezing"]["policy"] == "s1"
    s1_log = s1_summary["log_history"][0]
    assert "lm_loss" not in s1_log and s1_log["seg_loss"] > 0 and s1_log["loss"] == pytest.approx(s1_log["seg_loss"])
    s1_weights = load_file(tmp_path / "s1" / "final" / "model.safetensors")
    # The closed set is the data set's category list (person, car, tree) plus "no object".
    assert s1_weights["closed_set_head.weight"].shape[0] == 3 + 1

    s2 = tiny_recipe("s2", data_root, tmp_path / "s2", [sources["chat"]], max_steps=1)
    s2["model"]["init_from"] = [{"path": str(tmp_path / "s1" / "final"), "from_stage": "s1"}]
    s2_summary = run_training(s2)
    s2_weights = load_file(tmp_path / "s2" / "final" / "model.safetensors")
    sam_keys = [k for k in s1_weights if k.startswith("segmentation_encoder.")]
    assert sam_keys and all(torch.equal(s2_weights[k], s1_weights[k]) for k in sam_keys)  # taken over, then frozen
    assert s2_summary["initialisation"]["init_from"][0]["loaded"] == len(sam_keys)
    assert set(s2_summary["log_history"][0]) >= {"lm_loss", "loss"} and "seg_loss" not in s2_summary["log_history"][0]

    s3 = tiny_recipe("s3", data_root, tmp_path / "s3", [sources[t] for t in
                                                          ("genseg", "refseg", "reaseg", "gcgseg", "vgdseg", "chat")],
                     max_steps=7)
    s3["model"]["init_from"] = [{"path": str(tmp_path / "s1" / "final"), "from_stage": "s1"},
                                {"path": str(tmp_path / "s2" / "final"), "from_stage": "s2"}]
    model, report = build_model(s3)
    state = model.state_dict()
    for key, value in s1_weights.items():
        if key.startswith(("segmentation_encoder.", "connector.", "segmentation_decoder.")):
            assert torch.equal(state[key], value), key
    for key, value in s2_weights.items():
        if key.startswith(("vision_projector.", "seg_projector.")):
            assert torch.equal(state[key], value), key
    assert [r["unused"] > 0 for r in report["init_from"]] == [True, True]  # S1's closed-set head, S2's LLM, ...

    summary = run_training(s3)
    assert summary["global_step"] == 7
    # One task per step, and each task of the mix trained (genseg has 2 groups of 2 images).
    assert summary["task_micro_batches"] == {"genseg": 2, "refseg": 1, "reaseg": 1, "gcgseg": 1, "vgdseg": 1,
                                             "chat": 1}
    steps = [entry for entry in summary["log_history"] if "loss" in entry]
    assert len(steps) == 7 and all(torch.isfinite(torch.tensor(e["loss"])) for e in steps)
    assert sum("seg_loss" in e for e in steps) == 6  # the chat step has the LM loss only
    assert all(e["lm_loss"] > 0 for e in steps)


def test_config_overrides_are_saved_and_carry_into_the_stage_that_continues(tmp_path):
    # A recipe that lowers a loss weight for one stage must set it back in the next: the value travels in the
    # checkpoint's config (earlier variants trained S3 at a weight meant for the text warm-up only).
    tiny("s3").save_pretrained(tmp_path / "start")
    first, _ = build_model({"stage": "s3", "model": {"pretrained": str(tmp_path / "start"),
                                                     "config_overrides": {"seg_loss_weight": 0.2}}})
    assert first.config.seg_loss_weight == 0.2
    first.save_pretrained(tmp_path / "text_warmup")
    kept, _ = build_model({"stage": "s3", "model": {"pretrained": str(tmp_path / "text_warmup")}})
    reset, _ = build_model({"stage": "s3", "model": {"pretrained": str(tmp_path / "text_warmup"),
                                                     "config_overrides": {"seg_loss_weight": 1.0}}})
    assert (kept.config.seg_loss_weight, reset.config.seg_loss_weight) == (0.2, 1.0)
