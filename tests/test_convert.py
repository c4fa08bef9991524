"""`xsam convert`: official X-SAM checkpoints (S1, S2, S3 layouts) -> sharded safetensors of this package.

Official state dicts are synthesised with the official key names (`to_official`, checked against the golden case's
key list) at tiny shapes, at the released shapes on the meta device, and at a few hundred MB for the memory test;
the golden case checks that converted weights reproduce the official outputs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from transformers import AutoModel, AutoProcessor, AutoTokenizer

from xsam_hf import XSamConfig, XSamForSegmentation
from xsam_hf.convert import (
    ShapeMismatchError,
    build_config,
    convert_checkpoint,
    detect_stage,
    expected_state_shapes,
    main,
    plan_conversion,
    shard_names,
    write_safetensors_file,
)

GOLDEN = Path(__file__).resolve().parent / "fixtures" / "golden_genseg"
CONFIGS = GOLDEN / "configs"
SHARED_EMBEDDING = "segmentor.shared_image_embedding.positional_embedding"

# Our names -> the official [A] names (the inverse of xsam_hf.modeling.conversion, for building official files).
_TO_OFFICIAL = [
    (r"^vision_tower\.", "visual_encoder.vision_model."),
    (r"^segmentation_encoder\.vision_encoder\.", "segmentor.encoder."),
    (r"^segmentation_decoder\.pixel_decoder\.", "segmentor.pixel_decoder."),
    (r"^segmentation_decoder\.transformer_module\.", "segmentor.decoder."),
    (r"^class_head\.logit_scale$", "segmentor.logit_scale"),
    (r"^closed_set_head\.", "segmentor.class_predictor."),
    (r"^language_model\.", "llm."),
    (r"^vision_projector\.linear_1\.", "visual_projector.model.0."),
    (r"^vision_projector\.linear_2\.", "visual_projector.model.2."),
    (r"^(seg|llm)_projector\.linear_1\.", r"\1_projector.model.0."),
    (r"^(seg|llm)_projector\.linear_2\.", r"\1_projector.model.2."),
    (r"^connector\.levels\.(\d+)\.layers\.(\d+)\.", r"seg_connector.model.\1.model.\2."),
    (r"^background_embedding\.weight$", "bg_embeds.weight"),
]


def to_official(key: str) -> str:
    for pattern, replacement in _TO_OFFICIAL:
        if re.search(pattern, key):
            return re.sub(pattern, replacement, key, count=1)
    raise KeyError(key)


def official_state_dict(config: XSamConfig, seed: int = 0, device: str = "cpu") -> dict[str, torch.Tensor]:
    """An official-layout state dict for `config`'s stage: every tensor the model expects, under its official name,
    filled with seeded random values (or empty on the meta device), plus SAM's unused positional buffer."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, (shape, _) in expected_state_shapes(config).items():
        if device == "meta":
            state[to_official(key)] = torch.empty(shape, device="meta")
        else:
            state[to_official(key)] = torch.randn(shape, generator=generator)
    if config.stage != "s2":
        sam_feats = config.segmentation_encoder_config.num_pos_feats
        state[SHARED_EMBEDDING] = torch.empty((2, sam_feats), device=device).fill_(0.5)
    return state


def tiny_component_configs(tmp_path: Path, vocab_size: int = 384) -> dict[str, Path]:
    """The golden case's component configs, with the LLM vocabulary BEFORE the resize (like Phi-3's padded 32064)
    and the official XSamModel arguments without the resized vocabulary and token ids."""
    llm = json.loads((CONFIGS / "llm_config.json").read_text())
    llm["vocab_size"] = vocab_size
    (tmp_path / "llm_config.json").write_text(json.dumps(llm))
    kwargs = json.loads((CONFIGS / "xsam_model_kwargs.json").read_text())
    (tmp_path / "xsam_kwargs.json").write_text(json.dumps({"xsam_kwargs": kwargs["xsam_kwargs"]}))
    return {
        "vision_config": CONFIGS / "siglip_config.json",
        "segmentation_config": CONFIGS / "sam_config.json",
        "text_config": tmp_path / "llm_config.json",
        "decoder_config": CONFIGS / "mask2former_config.json",
        "xsam_kwargs": tmp_path / "xsam_kwargs.json",
    }


def read_safetensors_folder(folder: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for path in sorted(folder.glob("model*.safetensors")):
        with safe_open(path, framework="pt") as handle:
            assert handle.metadata() == {"format": "pt"}
            tensors.update({key: handle.get_tensor(key) for key in handle.keys()})
    return tensors


def test_inverse_names_reproduce_the_golden_official_keys():
    """`to_official` is right: on the tiny preset it gives exactly the official checkpoint's key list."""
    golden_keys = [line.split("\t")[0] for line in (GOLDEN / "state_dict_keys.txt").read_text().splitlines()]
    ours = {to_official(key) for key in expected_state_shapes(XSamConfig.from_preset("tiny"))}
    assert ours == set(golden_keys) - {SHARED_EMBEDDING}
    assert len(golden_keys) == 394


# ----------------------------------------------------------------------------------------------------------------
# (a) synthetic official checkpoints at tiny shapes
def test_s3_layout_with_vocabulary_resize(tmp_path):
    """Tokenizer of 375 entries + <SEG>, <p>, </p> = 378 rows (the text config said 384, like Phi-3's 32064)."""
    components = tiny_component_configs(tmp_path)
    config = build_config("s3", **components)
    config.text_config.vocab_size = 378  # what the official resize produced
    official = official_state_dict(config, seed=1)
    assert official["llm.model.embed_tokens.weight"].shape == (378, 64)
    torch.save(official, tmp_path / "pytorch_model.bin")

    out = tmp_path / "converted"
    report = convert_checkpoint(
        tmp_path / "pytorch_model.bin", out, tokenizer=GOLDEN / "tokenizer_base", max_shard_size="1MB", **components
    )
    assert report.stage == "s3" and report.plan.missing == []
    assert report.plan.unused == [SHARED_EMBEDDING] and report.plan.dropped == [SHARED_EMBEDDING]

    saved = json.loads((out / "config.json").read_text())
    assert saved["stage"] == "s3" and saved["architectures"] == ["XSamForSegmentation"]
    assert saved["text_config"]["vocab_size"] == 378
    assert [saved["seg_token_id"], saved["phrase_start_token_id"], saved["phrase_end_token_id"]] == [375, 376, 377]
    assert saved["connector_feature_layers"] == [4, 6, 8] and saved["connector_hidden_size"] == 16

    # Sharded as transformers does: an index whose map covers every tensor, and byte totals that add up.
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(p.name for p in out.glob("model-*.safetensors"))
    assert len(shards) == len(report.shards) >= 3 and set(index["weight_map"].values()) == set(shards)
    written = read_safetensors_folder(out)
    assert set(index["weight_map"]) == set(written) and len(written) == len(official) - 1
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in written.values())
    for key, tensor in written.items():
        assert torch.equal(tensor, official[to_official(key)]), key

    # The tokenizer went into the processor with the three tokens added, in order.
    processor = AutoProcessor.from_pretrained(out)
    assert len(processor.tokenizer) == 378
    assert processor.tokenizer.convert_tokens_to_ids(["<SEG>", "<p>", "</p>"]) == [375, 376, 377]
    assert (out / "README.md").read_text().startswith("---\n")


def test_unresized_embeddings_are_refused_with_both_shapes(tmp_path):
    components = tiny_component_configs(tmp_path)
    config = build_config("s3", **components)  # 384 rows: the vocabulary before the resize
    torch.save(official_state_dict(config), tmp_path / "pytorch_model.bin")
    out = tmp_path / "converted"
    with pytest.raises(ShapeMismatchError) as error:
        convert_checkpoint(tmp_path / "pytorch_model.bin", out, tokenizer=GOLDEN / "tokenizer_base", **components)
    message = str(error.value)
    assert "'llm.model.embed_tokens.weight' -> 'language_model.model.embed_tokens.weight'" in message
    assert "checkpoint (384, 64) vs model (378, 64)" in message
    assert "'llm.lm_head.weight'" in message and "len(tokenizer)" in message
    assert not out.exists()  # validated before anything is written


def test_s1_layout_keeps_the_closed_set_head(tmp_path):
    """S1: the segmentor and connector, and `segmentor.class_predictor` [134, hidden] -> `closed_set_head`."""
    golden = torch.load(GOLDEN / "official_state_dict.pt", weights_only=True)
    official = {k: v for k, v in golden.items() if k.startswith(("segmentor.", "seg_connector."))}
    official.pop("segmentor.logit_scale")  # S1 classifies with the closed-set head, not the cosine head
    official["segmentor.class_predictor.weight"] = torch.randn(134, 64)
    official["segmentor.class_predictor.bias"] = torch.randn(134)
    assert detect_stage(official) == "s1"
    torch.save(official, tmp_path / "pytorch_model.bin")

    report = convert_checkpoint(tmp_path / "pytorch_model.bin", tmp_path / "s1", preset="tiny", dtype="bfloat16")
    assert report.stage == "s1" and report.plan.missing == [] and report.plan.unused == [SHARED_EMBEDDING]
    assert json.loads((tmp_path / "s1" / "config.json").read_text())["dtype"] == "bfloat16"
    model = AutoModel.from_pretrained(tmp_path / "s1")
    assert model.config.stage == "s1" and model.config.num_closed_set_classes == 133
    assert not hasattr(model, "language_model") and not hasattr(model, "vision_tower")
    assert model.closed_set_head.weight.dtype == torch.bfloat16
    assert torch.equal(model.closed_set_head.weight, official["segmentor.class_predictor.weight"].bfloat16())
    assert torch.equal(
        model.segmentation_decoder.transformer_module.queries_features.weight,
        official["segmentor.decoder.queries_features.weight"].bfloat16(),
    )


def test_s2_layout_lists_what_it_lacks_and_chains_into_s3(tmp_path):
    """S2 holds only the two image projectors: everything else is reported missing, and the folder feeds the
    S2 -> S3 stage chaining."""
    golden = torch.load(GOLDEN / "official_state_dict.pt", weights_only=True)
    official = {k: v for k, v in golden.items() if k.startswith(("visual_projector.", "seg_projector."))}
    assert detect_stage(official) == "s2" and len(official) == 8
    torch.save(official, tmp_path / "pytorch_model.bin")

    report = convert_checkpoint(tmp_path / "pytorch_model.bin", tmp_path / "s2", XSamConfig.from_preset("tiny"))
    assert report.stage == "s2" and report.plan.unused == []  # the stage comes from the checkpoint
    assert len(report.plan.renamed) == 8
    missing = set(report.plan.missing)
    assert "language_model.model.embed_tokens.weight" in missing and "vision_tower.post_layernorm.weight" in missing
    assert not any(key.startswith(("vision_projector.", "seg_projector.")) for key in missing)
    assert "language_model.model.layers.{0..1}.self_attn.qkv_proj.weight" in report.summary()

    model = XSamForSegmentation(XSamConfig.from_preset("tiny"))
    chained = model.load_stage_weights(tmp_path / "s2", from_stage="s2")
    assert sorted(chained.loaded) == sorted(key for key, _ in report.plan.renamed)
    assert torch.equal(model.seg_projector.linear_1.weight, official["seg_projector.model.0.weight"])


# ----------------------------------------------------------------------------------------------------------------
# (b) the golden case: converted weights reproduce the official outputs
def test_golden_conversion_reproduces_official_outputs(tmp_path, capsys):
    out = tmp_path / "golden"
    status = main(
        [
            str(GOLDEN / "official_state_dict.pt"),
            "--output", str(out),
            "--vision-config", str(CONFIGS / "siglip_config.json"),
            "--segmentation-config", str(CONFIGS / "sam_config.json"),
            "--text-config", str(CONFIGS / "llm_config.json"),
            "--decoder-config", str(CONFIGS / "mask2former_config.json"),
            "--xsam-kwargs", str(CONFIGS / "xsam_model_kwargs.json"),
            "--tokenizer", str(GOLDEN / "tokenizer"),
            "--vision-image-processor", str(CONFIGS / "siglip_image_processor.json"),
            "--segmentation-image-processor", str(CONFIGS / "sam_image_processor.json"),
            "--max-shard-size", "1MB",
            "--strict",
        ]
    )
    printed = capsys.readouterr().out
    assert status == 0
    assert "393 tensors" in printed and f"unused: {SHARED_EMBEDDING}" in printed and "Missing model keys" in printed

    model = AutoModel.from_pretrained(out, attn_implementation="eager").eval()
    golden = torch.load(GOLDEN / "genseg_io.pt", weights_only=True)["genseg"]
    data = golden["inputs"]["data_dict"]
    inputs = {k: data[k] for k in ("input_ids", "pixel_values", "extra_pixel_values", "labels")}
    with torch.no_grad():
        outputs = model(**inputs)
    expected = golden["outputs"]

    def relative_error(actual, reference):
        return ((actual.double() - reference.double()).abs().max() / reference.double().abs().max()).item()

    assert relative_error(outputs.logits, expected["llm_logits"]) < 1e-5
    assert abs(outputs.lm_loss.item() - expected["llm_loss"].item()) <= 1e-5 * expected["llm_loss"].item()
    assert relative_error(outputs.class_queries_logits, expected["class_queries_logits"]) < 1e-5
    masks = F.interpolate(outputs.masks_queries_logits, size=(128, 128), mode="bilinear", align_corners=False)
    assert relative_error(masks, expected["masks_queries_logits"]) < 1e-5

    processor = AutoProcessor.from_pretrained(out)
    assert processor.canvas_size == 128 and processor.image_processor.size["height"] == 56
    assert len(processor.tokenizer) == 378 and processor.seg_token_id == 375


# ----------------------------------------------------------------------------------------------------------------
# (c) the released preset's shapes, on the meta device
RELEASED_SHAPES = {  # architecture spec §7.2 / §1, official names
    "llm.model.embed_tokens.weight": (32014, 3072),
    "llm.lm_head.weight": (32014, 3072),
    "llm.model.layers.31.self_attn.qkv_proj.weight": (9216, 3072),
    "llm.model.layers.31.mlp.gate_up_proj.weight": (16384, 3072),
    "visual_encoder.vision_model.embeddings.position_embedding.weight": (729, 1152),
    "visual_encoder.vision_model.encoder.layers.26.mlp.fc1.weight": (4304, 1152),
    "segmentor.encoder.pos_embed": (1, 64, 64, 1024),
    "segmentor.encoder.layers.0.attn.rel_pos_h": (27, 64),
    "segmentor.encoder.layers.23.attn.rel_pos_w": (127, 64),
    "segmentor.pixel_decoder.input_projections.0.0.weight": (256, 2048, 1, 1),
    "segmentor.pixel_decoder.input_projections.1.0.weight": (256, 1024, 1, 1),
    "segmentor.pixel_decoder.input_projections.2.0.weight": (256, 512, 1, 1),
    "segmentor.pixel_decoder.encoder.layers.5.self_attn.sampling_offsets.weight": (192, 256),
    "segmentor.decoder.queries_features.weight": (200, 256),
    "segmentor.decoder.level_embed.weight": (3, 256),
    "segmentor.decoder.decoder.layers.8.cross_attn.in_proj_weight": (768, 256),
    "segmentor.logit_scale": (1,),
    "seg_connector.model.0.model.4.weight": (2048, 512, 1, 1),
    "seg_connector.model.2.model.4.weight": (512, 512, 1, 1),
    "visual_projector.model.0.weight": (3072, 1152),
    "seg_projector.model.0.weight": (3072, 4096),
    "llm_projector.model.0.weight": (256, 3072),
    "bg_embeds.weight": (1, 256),
}


def test_released_s3_shapes_dry_run_on_meta_tensors(tmp_path):
    """A released-size S3 checkpoint made of meta tensors (1 kB on disk) passes the whole conversion check."""
    config = XSamConfig.from_preset("x-sam-phi3-mini")
    official = official_state_dict(config, device="meta")
    for key, shape in RELEASED_SHAPES.items():
        assert tuple(official[key].shape) == shape, key
    assert "segmentor.decoder.decoder.layers.9.fc1.weight" not in official  # decoder_layers 10 -> 9 layers
    path = tmp_path / "pytorch_model.bin"
    torch.save({k: v.to(torch.bfloat16) for k, v in official.items()}, path)
    assert path.stat().st_size < 200_000

    report = convert_checkpoint(path, tmp_path / "out", dry_run=True)
    assert report.stage == "s3" and report.plan.missing == [] and report.plan.unused == [SHARED_EMBEDDING]
    assert len(report.plan.renamed) == len(official) - 1
    assert report.dtype == "bfloat16" and report.total_size == 2 * 4_624_247_809  # every parameter, 2 bytes
    assert len(report.shards) == 2 and not (tmp_path / "out").exists()  # 9.2 GB in 5 GB shards


def test_released_s1_and_s2_shapes_and_a_mismatch_on_meta(tmp_path):
    s1_config = XSamConfig.from_preset("x-sam-phi3-mini", stage="s1")
    s1 = official_state_dict(s1_config, device="meta")
    assert tuple(s1["segmentor.class_predictor.weight"].shape) == (134, 256)
    assert detect_stage(s1) == "s1"
    plan = plan_conversion(s1, expected_state_shapes(s1_config))
    assert plan.missing == [] and plan.unused == [SHARED_EMBEDDING]

    s3_shapes = expected_state_shapes(XSamConfig.from_preset("x-sam-phi3-mini"))
    s3_plan = plan_conversion(s1, s3_shapes)  # an S1 checkpoint read as S3: the head is unused, the LLM missing
    assert sorted(s3_plan.not_in_model) == ["segmentor.class_predictor.bias", "segmentor.class_predictor.weight"]
    assert "language_model.lm_head.weight" in s3_plan.missing

    s2_config = XSamConfig.from_preset("x-sam-phi3-mini", stage="s2")
    s2 = {k: v for k, v in official_state_dict(s2_config, device="meta").items()
          if k.startswith(("visual_projector.", "seg_projector."))}
    assert detect_stage(s2) == "s2"
    s2_plan = plan_conversion(s2, expected_state_shapes(s2_config))
    assert len(s2_plan.renamed) == 8 and len(s2_plan.missing) == len(expected_state_shapes(s2_config)) - 8

    # The stock Phi-3 vocabulary (32064) instead of the resized one (32014).
    official = official_state_dict(XSamConfig.from_preset("x-sam-phi3-mini"), device="meta")
    official["llm.model.embed_tokens.weight"] = torch.empty(32064, 3072, device="meta")
    with pytest.raises(ShapeMismatchError, match=re.escape("checkpoint (32064, 3072) vs model (32014, 3072)")):
        plan_conversion(official, s3_shapes)


# ----------------------------------------------------------------------------------------------------------------
# Streaming: peak memory
_PEAK_PROBE = """
import json, sys
from pathlib import Path

import torch
from xsam_hf.convert import main


def mib(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024


args = json.loads(sys.argv[1])
if not args["control"]:
    # one-off costs (lazy imports, the meta-device model for the shape check) before the baseline
    assert main(args["argv"] + ["--dry-run"]) == 0
Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS, after the imports
before = mib("VmRSS")
if args["control"]:
    loaded = torch.load(args["path"], weights_only=True)
else:
    assert main(args["argv"]) == 0
print(json.dumps({"growth": mib("VmHWM") - before}))
"""


def _peak_rss_growth(**args) -> float:
    """Peak-RSS growth (MiB) of one conversion or control load, in a fresh process: in the long-lived test process,
    memory freed by earlier tests is reused without raising the peak, which hides real use."""
    result = subprocess.run([sys.executable, "-c", _PEAK_PROBE, json.dumps(args)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])["growth"]


def test_peak_memory_stays_far_below_the_checkpoint_size(tmp_path):
    """A 267 MB official checkpoint of 418 tensors converts with a peak RSS growth of ~18 MiB.

    VmHWM (peak resident set, file-backed mmap pages included) is reset after the imports of a fresh process and
    read after the conversion. A control load of the same file without mmap, measured the same way, must show the
    file's size, so the measurement is known to see the memory when it is used.
    """
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("the peak-RSS counter cannot be reset here (/proc/self/clear_refs, Linux only)")
    llm = json.loads((CONFIGS / "llm_config.json").read_text())
    llm.update(vocab_size=378, hidden_size=1024, intermediate_size=2048, num_hidden_layers=6,
               num_attention_heads=8, num_key_value_heads=8)
    (tmp_path / "llm.json").write_text(json.dumps(llm))
    config = build_config("s3", preset="tiny", text_config=tmp_path / "llm.json")
    official = official_state_dict(config, seed=2)
    path = tmp_path / "pytorch_model.bin"
    torch.save(official, path)
    sample = {k: official[k].clone() for k in ("llm.model.layers.5.mlp.gate_up_proj.weight", "bg_embeds.weight")}
    del official
    file_mib = path.stat().st_size / 2**20
    assert file_mib > 250

    argv = [str(path), "--output", str(tmp_path / "out"), "--preset", "tiny", "--text-config",
            str(tmp_path / "llm.json"), "--max-shard-size", "100MB", "--no-model-card"]
    growth = _peak_rss_growth(control=False, argv=argv, path=str(path))
    control = _peak_rss_growth(control=True, argv=argv, path=str(path))
    print(f"peak RSS growth converting a {file_mib:.0f} MiB checkpoint: {growth:.1f} MiB (full load: {control:.1f})")

    assert control > 0.9 * file_mib  # the instrument sees a full load...
    assert growth < 0.1 * file_mib  # ...and the streaming conversion stays far below it
    written = read_safetensors_folder(tmp_path / "out")
    assert len(list((tmp_path / "out").glob("model-*.safetensors"))) == 3
    assert torch.equal(written["language_model.model.layers.5.mlp.gate_up_proj.weight"],
                       sample["llm.model.layers.5.mlp.gate_up_proj.weight"])
    assert torch.equal(written["background_embedding.weight"], sample["bg_embeds.weight"])


# ----------------------------------------------------------------------------------------------------------------
# Pieces
def test_safetensors_writer_round_trips_dtypes_and_odd_shapes(tmp_path):
    tensors = {
        "bf16": torch.randn(3, 5).to(torch.bfloat16),
        "f16": torch.randn(7).to(torch.float16),
        "i64": torch.arange(6).reshape(2, 3),
        "mask": torch.tensor([True, False, True]),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 4),
        "strided": torch.randn(4, 6).t(),  # not contiguous
    }
    entries = [(k, tuple(v.shape), v.dtype) for k, v in tensors.items()]
    nbytes = write_safetensors_file(tmp_path / "x.safetensors", entries, fetch=tensors.__getitem__)
    assert nbytes == sum(v.numel() * v.element_size() for v in tensors.values())
    with safe_open(tmp_path / "x.safetensors", framework="pt") as handle:
        assert handle.metadata() == {"format": "pt"}
        for key, value in tensors.items():
            assert torch.equal(handle.get_tensor(key), value) and handle.get_tensor(key).dtype == value.dtype
    assert (tmp_path / "x.safetensors").read_bytes()[8:].index(b"{") == 0

    cast = [("bf16", (3, 5), torch.float32)]
    write_safetensors_file(tmp_path / "y.safetensors", cast, fetch=tensors.__getitem__)
    with safe_open(tmp_path / "y.safetensors", framework="pt") as handle:
        assert torch.equal(handle.get_tensor("bf16"), tensors["bf16"].float())


def test_shards_are_filled_greedily_in_order():
    sizes = [("a", 40), ("b", 40), ("c", 30), ("d", 150), ("e", 10)]
    assert shard_names(sizes, 100) == {
        "a": "model-00001-of-00004.safetensors",
        "b": "model-00001-of-00004.safetensors",
        "c": "model-00002-of-00004.safetensors",
        "d": "model-00003-of-00004.safetensors",
        "e": "model-00004-of-00004.safetensors",
    }
    assert set(shard_names(sizes, 10**6).values()) == {"model.safetensors"}


def test_cli_reports_unknown_keys_and_fails_on_errors(tmp_path, capsys):
    golden = torch.load(GOLDEN / "official_state_dict.pt", weights_only=True)
    golden["segmentor.extra_head.weight"] = torch.ones(2)  # no rule knows it
    torch.save(golden, tmp_path / "with_unknown.bin")
    tokenizer = AutoTokenizer.from_pretrained(GOLDEN / "tokenizer")
    assert len(tokenizer) == 378

    assert main([str(tmp_path / "with_unknown.bin"), "-o", str(tmp_path / "a"), "--preset", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "1 unknown" in out and "unused: segmentor.extra_head.weight" in out

    assert main([str(tmp_path / "with_unknown.bin"), "-o", str(tmp_path / "b"), "--preset", "tiny", "--strict"]) == 1
    assert "segmentor.extra_head.weight" in capsys.readouterr().err and not (tmp_path / "b").exists()

    golden.pop("segmentor.extra_head.weight")
    golden["bg_embeds.weight"] = torch.ones(1, 32)
    torch.save(golden, tmp_path / "bad_shape.bin")
    assert main([str(tmp_path / "bad_shape.bin"), "-o", str(tmp_path / "c"), "--preset", "tiny"]) == 1
    err = capsys.readouterr().err
    assert "'bg_embeds.weight' -> 'background_embedding.weight': checkpoint (1, 32) vs model (1, 64)" in err

    with pytest.raises(SystemExit):
        main([str(tmp_path / "bad_shape.bin")])  # --output is required
