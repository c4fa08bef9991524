"""Hub publishing, offline: the Hub client transformers shares (`transformers.utils.hub.hf_api`) is replaced by a
recorder that keeps every uploaded file's bytes, and every file is checked (names, contents, card metadata). The
cards' usage snippets are executed against local folders holding exactly the uploaded files, which is the call
users type with the Hub id.
"""

from __future__ import annotations

import json
import math
import re
import types
from pathlib import Path
from unittest import mock

import pytest
import torch
from huggingface_hub import ModelCard
from huggingface_hub.errors import EntryNotFoundError
from safetensors.torch import load

from xsam_hf import XSamConfig, XSamForSegmentation
from xsam_hf.hub import (
    BASE_MODELS,
    EVAL_RESULTS_FORMAT,
    RELEASED_MODEL_ID,
    build_model_card,
    eval_results_for_card,
    push_adapter_to_hub,
    push_checkpoint,
    push_model_to_hub,
    read_eval_results,
)
from xsam_hf.processing import XSamProcessor

GOLDEN = Path(__file__).resolve().parent / "fixtures" / "golden_genseg"
PHOTO = GOLDEN / "synthetic.png"

EVAL_JSON = {
    "_meta": {"model": "tiny", "date": "2026-07-01"},
    "referring": {"cIoU": 0.803, "gIoU": 0.8215, "num_samples": 1500, "_dataset": "lmms-lab/RefCOCO", "_split": "val"},
    "coco_panoptic_val": {
        "_task": "panoptic",
        "PQ": 0.547,
        "PQ_th": 0.6,
        "n": 5000,
        "per_class_iou": [0.1, 0.2],
        "point": {"mIoU": 0.71, "num_samples": 10},
    },
    "gcg_val": {"_task": "gcg", "METEOR": 0.155, "CIDEr": float("nan")},
}


class RecordingHub:
    """Stands in for `HfApi`: records repositories and commits, reading every uploaded file when it is committed
    (staging folders are gone afterwards)."""

    def __init__(self, user: str = "tester"):
        self.user = user
        self.commits: list[dict] = []
        self.branches: list[str] = []

    def create_repo(self, repo_id, private=None, token=None, exist_ok=False, **kwargs):
        return types.SimpleNamespace(repo_id=repo_id if "/" in repo_id else f"{self.user}/{repo_id}")

    def create_branch(self, repo_id, branch, token=None, exist_ok=False, **kwargs):
        self.branches.append(branch)

    def create_commit(self, repo_id, operations, commit_message=None, **kwargs):
        files = {}
        for operation in operations:
            source = operation.path_or_fileobj
            if isinstance(source, (str, Path)):
                files[operation.path_in_repo] = Path(source).read_bytes()
            elif isinstance(source, bytes):
                files[operation.path_in_repo] = source
            else:
                files[operation.path_in_repo] = source.read()
        assert len(files) == len(operations), "a path was uploaded twice in one commit"
        self.commits.append({"repo_id": repo_id, "files": files, "message": commit_message, **kwargs})
        return types.SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/0", repo_id=repo_id)

    @property
    def files(self) -> dict[str, bytes]:
        return self.commits[-1]["files"]

    def snapshot(self, folder: Path) -> Path:
        """Write the last commit's files to `folder`, as `snapshot_download` would."""
        for name, content in self.files.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(content)
        return folder


@pytest.fixture()
def hub():
    recorder = RecordingHub()
    with mock.patch("transformers.utils.hub.hf_api", return_value=recorder):
        yield recorder


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return XSamForSegmentation(XSamConfig.from_preset("tiny")).eval()


@pytest.fixture(scope="module")
def processor():
    return XSamProcessor.from_preset("tiny")


def card_of(files: dict[str, bytes]) -> ModelCard:
    return ModelCard(files["README.md"].decode("utf-8"))


def usage_code(card: ModelCard) -> str:
    return re.search(r"## Usage\n\n```python\n(.*?)```", card.text, flags=re.S).group(1)


def run_snippet(code: str, replacements: dict[str, str]) -> dict:
    for old, new in replacements.items():
        assert old in code, old
        code = code.replace(old, new)
    namespace: dict = {}
    exec(compile(code, "<model card usage>", "exec"), namespace)
    return namespace


def local_listing(*savers) -> dict[str, bytes]:
    """What `save_pretrained` of the given objects writes into one folder, as name -> bytes."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        for saver in savers:
            saver(folder)
        return {p.relative_to(folder).as_posix(): p.read_bytes() for p in Path(folder).rglob("*") if p.is_file()}


# ----------------------------------------------------------------------------------------------------------------
# The evaluation JSON
def test_eval_results_reader_follows_the_documented_shape(tmp_path):
    path = tmp_path / "eval.json"
    path.write_text(json.dumps(EVAL_JSON))
    results = read_eval_results(path)
    assert list(results) == ["referring", "coco_panoptic_val", "gcg_val"]
    assert results["referring"] == {
        "task": "referring", "dataset": "lmms-lab/RefCOCO", "split": "val", "scores": {"cIoU": 0.803, "gIoU": 0.8215}
    }
    assert results["coco_panoptic_val"]["scores"] == {"PQ": 0.547, "PQ_th": 0.6, "point/mIoU": 0.71}
    assert results["coco_panoptic_val"]["task"] == "panoptic" and results["coco_panoptic_val"]["dataset"] == (
        "coco_panoptic_val"
    )
    card_results = eval_results_for_card(results)
    assert [(r.dataset_name, r.metric_type, r.metric_value) for r in card_results] == [
        ("referring", "cIoU", 0.803),
        ("referring", "gIoU", 0.8215),
        ("coco_panoptic_val", "PQ", 0.547),
        ("coco_panoptic_val", "PQ_th", 0.6),
        ("coco_panoptic_val", "point/mIoU", 0.71),
        ("gcg_val", "METEOR", 0.155),  # the NaN CIDEr is left out of the metadata
    ]
    assert card_results[0].task_type == "image-segmentation" and card_results[0].task_name == "Referring segmentation"
    assert card_results[-1].task_type == "image-text-to-text"
    assert '"_task": "referring"' in EVAL_RESULTS_FORMAT

    # The results.json envelope of `xsam eval` (one document per run), several documents merged, null = no value.
    run = {"model": "tiny", "results": {"val_gcg": {"_task": "gcg", "METEOR": 0.2, "CIDEr": None}}, "meta": {"n": 1}}
    merged = read_eval_results([{"referring": EVAL_JSON["referring"]}, run])
    assert list(merged) == ["referring", "val_gcg"] and merged["val_gcg"]["scores"]["METEOR"] == 0.2
    assert math.isnan(merged["val_gcg"]["scores"]["CIDEr"])
    with pytest.raises(ValueError, match="more than one results document"):
        read_eval_results([run, run])

    with pytest.raises(ValueError, match="score mIoU = 'high' is not a number"):
        read_eval_results({"refcoco": {"mIoU": "high"}})
    with pytest.raises(ValueError, match="unknown _task 'depth'"):
        read_eval_results({"nyu": {"_task": "depth", "rmse": 0.3}})
    with pytest.raises(ValueError, match="expected an object"):
        read_eval_results({"refcoco": 0.8})
    with pytest.raises(ValueError, match="has no scores"):
        read_eval_results({"refcoco": {"num_samples": 3}})


# ----------------------------------------------------------------------------------------------------------------
# Model + processor
def test_push_model_and_processor_uploads_every_file_with_a_card(hub, model, processor, tmp_path):
    (tmp_path / "eval.json").write_text(json.dumps(EVAL_JSON))
    push_model_to_hub(model, "x-sam-tiny", processor, eval_results=tmp_path / "eval.json", tags=["tiny"])

    assert len(hub.commits) == 1 and hub.commits[0]["repo_id"] == "tester/x-sam-tiny"
    expected = local_listing(model.save_pretrained, processor.save_pretrained)
    assert set(hub.files) == set(expected) | {"README.md"}
    assert {"config.json", "model.safetensors", "processor_config.json", "tokenizer.json"} <= set(hub.files)
    for name, content in expected.items():
        if name.endswith(".json"):  # byte-identical to a local save_pretrained
            assert hub.files[name] == content, name
    uploaded = load(hub.files["model.safetensors"])
    state = model.state_dict()
    assert set(uploaded) == set(state) and all(torch.equal(uploaded[k], state[k]) for k in state)
    assert json.loads(hub.files["config.json"])["stage"] == "s3"

    card = card_of(hub.files)
    data = card.data.to_dict()
    assert data["license"] == "apache-2.0" and data["library_name"] == "transformers"
    assert data["pipeline_tag"] == "image-segmentation" and data["base_model"] == list(BASE_MODELS)
    assert {"x-sam", "image-segmentation", "tiny"} <= set(data["tags"])
    metrics = data["model-index"][0]["results"]
    assert metrics[0]["dataset"] == {"name": "referring", "type": "lmms-lab/RefCOCO", "split": "val"}
    assert metrics[0]["metrics"][0] == {"type": "cIoU", "value": 0.803, "name": "cIoU"}
    assert "| referring | 80.3 | 82.2 |" in card.text  # the results table is in percent
    assert 'AutoModel.from_pretrained("tester/x-sam-tiny")' in usage_code(card)


def test_card_usage_runs_on_a_local_snapshot_of_the_upload(hub, model, processor, tmp_path):
    """The snippet's exact call form, `AutoModel.from_pretrained(<id>)` / `AutoProcessor.from_pretrained(<id>)`,
    with the id pointing to a folder of the uploaded files, reproduces the pushed model's outputs."""
    push_model_to_hub(model, "tester/x-sam-tiny", processor)
    folder = hub.snapshot(tmp_path / "snapshot")
    namespace = run_snippet(
        usage_code(card_of(hub.files)), {"tester/x-sam-tiny": str(folder), "photo.jpg": str(PHOTO)}
    )
    inputs = namespace["inputs"]  # the referring request, last in the snippet
    with torch.no_grad():
        reference = model(**inputs)
    torch.testing.assert_close(namespace["outputs"].masks_queries_logits, reference.masks_queries_logits)
    assert namespace["mask"].shape == (100, 140) and namespace["mask"].dtype == torch.bool
    assert isinstance(namespace["panoptic"]["segments_info"], list)


def test_released_id_is_what_the_converted_release_card_names(hub, tmp_path):
    """`xsam convert` writes a card naming RELEASED_MODEL_ID; the same call on the converted folder works; the
    folder is published with push_checkpoint."""
    from xsam_hf.convert import convert_checkpoint

    configs = GOLDEN / "configs"
    out = tmp_path / "X-SAM-Phi3-mini"
    convert_checkpoint(
        GOLDEN / "official_state_dict.pt", out, vision_config=configs / "siglip_config.json",
        segmentation_config=configs / "sam_config.json", text_config=configs / "llm_config.json",
        decoder_config=configs / "mask2former_config.json", xsam_kwargs=configs / "xsam_model_kwargs.json",
        tokenizer=GOLDEN / "tokenizer",
    )
    assert RELEASED_MODEL_ID == "xsam-hf/X-SAM-Phi3-mini"
    card = ModelCard.load(out / "README.md")
    code = usage_code(card)
    assert f'AutoModel.from_pretrained("{RELEASED_MODEL_ID}")' in code
    assert "hao9610/X-SAM" in card.text and card.data.to_dict()["base_model"] == list(BASE_MODELS)
    namespace = run_snippet(code, {RELEASED_MODEL_ID: str(out), "photo.jpg": str(PHOTO)})
    assert namespace["model"].config.stage == "s3" and namespace["mask"].shape == (100, 140)

    push_checkpoint(out, RELEASED_MODEL_ID, kind="converted", eval_results=EVAL_JSON)
    assert hub.commits[-1]["repo_id"] == RELEASED_MODEL_ID
    local = {p.name: p.read_bytes() for p in out.iterdir() if p.name != "README.md"}
    assert set(hub.files) == set(local) | {"README.md"} and all(hub.files[n] == b for n, b in local.items())
    published = card_of(hub.files)
    assert "converted by `xsam convert`" in published.text and "model-index" in published.data.to_dict()


def test_plain_push_to_hub_of_model_and_processor_keeps_an_existing_card(hub, model, processor):
    """transformers' own `push_to_hub` through the same client; with our card already in the repository it keeps
    it (adding tags), so pushing an update later does not lose the card."""
    with mock.patch("transformers.utils.hub.ModelCard.load", side_effect=EntryNotFoundError("no card")):
        model.push_to_hub("tester/x-sam-tiny")
        assert set(hub.files) == {"config.json", "model.safetensors", "README.md"}
        processor.push_to_hub("tester/x-sam-tiny")
        assert {"processor_config.json", "tokenizer.json", "tokenizer_config.json", "README.md"} <= set(hub.files)

    ours = build_model_card("tester/x-sam-tiny", eval_results=EVAL_JSON)
    with mock.patch("transformers.utils.hub.ModelCard.load", return_value=ours):
        model.push_to_hub("tester/x-sam-tiny", tags=["update"])
    data = card_of(hub.files).data.to_dict()
    assert data["library_name"] == "transformers" and "update" in data["tags"] and "model-index" in data


# ----------------------------------------------------------------------------------------------------------------
# LoRA adapters
@pytest.fixture(scope="module")
def peft_model():
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    base = XSamForSegmentation(XSamConfig.from_preset("tiny")).eval()
    config = peft.LoraConfig(
        r=2, lora_alpha=4, target_modules=r"language_model\.model\.layers\.\d+\.self_attn\.(qkv_proj|o_proj)",
        modules_to_save=["llm_projector"],
    )
    wrapped = peft.get_peft_model(base, config)
    with torch.no_grad():  # LoRA B starts at zero; make the adapter change the outputs so the reload is tested
        for name, parameter in wrapped.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    return wrapped.eval()


def test_push_adapter_uploads_the_adapter_and_its_base_id(hub, peft_model, processor, model, tmp_path):
    push_adapter_to_hub(peft_model, "tester/x-sam-lora", processor, base_model_id="tester/x-sam-tiny")
    files = hub.files
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "processor_config.json"} <= set(files)
    assert "model.safetensors" not in files and "config.json" not in files
    adapter_config = json.loads(files["adapter_config.json"])
    assert adapter_config["base_model_name_or_path"] == "tester/x-sam-tiny" and adapter_config["r"] == 2
    weights = load(files["adapter_model.safetensors"])
    lora = {k: v for k, v in weights.items() if "lora_" in k}
    assert len(lora) == 8  # A and B of qkv_proj and o_proj in 2 layers
    state = {k.replace(".default", ""): v for k, v in peft_model.state_dict().items()}
    assert all(torch.equal(v, state[k]) for k, v in lora.items())
    assert any("llm_projector" in k for k in weights)  # modules_to_save travel with the adapter

    data = card_of(files).data.to_dict()
    assert data["library_name"] == "peft" and data["base_model"] == "tester/x-sam-tiny"
    assert {"lora", "peft", "x-sam"} <= set(data["tags"])

    # The snippet with the two ids pointing to local folders gives the adapted model's outputs.
    base_folder = tmp_path / "base"
    torch.manual_seed(0)  # the base is wrapped in place: save a fresh model of the same seeded initialisation
    XSamForSegmentation(XSamConfig.from_preset("tiny")).save_pretrained(base_folder)
    adapter_folder = hub.snapshot(tmp_path / "adapter")
    namespace = run_snippet(
        usage_code(card_of(files)),
        {"tester/x-sam-tiny": str(base_folder), "tester/x-sam-lora": str(adapter_folder), "photo.jpg": str(PHOTO)},
    )
    with torch.no_grad():
        reference = peft_model(**namespace["inputs"])
    torch.testing.assert_close(namespace["outputs"].logits, reference.logits)
    with torch.no_grad():
        unadapted = model(**namespace["inputs"])
    assert not torch.allclose(unadapted.logits, reference.logits, atol=1e-3)  # the adapter really is applied


# ----------------------------------------------------------------------------------------------------------------
# Trainer checkpoints
TRAINER_STATE = {
    "global_step": 500,
    "epoch": 1.5,
    "best_metric": None,
    "log_history": [
        {"loss": 1.25, "step": 250, "epoch": 0.75},
        {"eval_loss": 1.1, "step": 500, "epoch": 1.5},
        {"loss": 0.9312, "step": 500, "epoch": 1.5},
    ],
}
TRAINING_STATE_FILES = ("optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state.pth", "rng_state_1.pth",
                        "training_args.bin", "global_step500/mp_rank_00_model_states.pt")


def fake_trainer_checkpoint(folder: Path, save_model) -> Path:
    """The folder layout `Trainer._save_checkpoint` writes: the model, trainer_state.json and the training state."""
    save_model(folder)
    (folder / "trainer_state.json").write_text(json.dumps(TRAINER_STATE))
    for name in TRAINING_STATE_FILES:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"training state " + name.encode())
    return folder


def test_push_checkpoint_uploads_the_model_not_the_training_state(hub, model, processor, tmp_path):
    checkpoint = fake_trainer_checkpoint(tmp_path / "checkpoint-500", model.save_pretrained)
    push_checkpoint(checkpoint, "tester/x-sam-ft", processor=processor, eval_results=EVAL_JSON)
    files = hub.files
    processor_files = set(local_listing(processor.save_pretrained))
    assert set(files) == {"config.json", "model.safetensors", "trainer_state.json", "README.md"} | processor_files
    for name in ("config.json", "model.safetensors", "trainer_state.json"):
        assert files[name] == (checkpoint / name).read_bytes(), name
    assert hub.commits[-1]["message"] == "Upload X-SAM checkpoint (step 500)"
    card = card_of(files)
    assert "- Global step: 500" in card.text and "- Last logged training loss: 0.9312 (step 500)" in card.text
    assert "- Last evaluation loss: 1.1000 (step 500)" in card.text
    assert card.data.to_dict()["model-index"][0]["name"] == "x-sam-ft"

    push_checkpoint(checkpoint, "tester/x-sam-ft", include_training_state=True, revision="resume")
    assert set(TRAINING_STATE_FILES) <= set(hub.files) and hub.branches == ["resume"]
    assert hub.files["optimizer.pt"] == b"training state optimizer.pt"

    with pytest.raises(FileNotFoundError, match="no model weights"):
        push_checkpoint(tmp_path, "tester/empty")


def test_push_adapter_checkpoint_names_a_hub_base(hub, peft_model, tmp_path):
    checkpoint = fake_trainer_checkpoint(tmp_path / "checkpoint-500", peft_model.save_pretrained)
    local = json.loads((checkpoint / "adapter_config.json").read_text())
    local["base_model_name_or_path"] = str(tmp_path)  # a Trainer records the local path of the base
    (checkpoint / "adapter_config.json").write_text(json.dumps(local))

    push_checkpoint(checkpoint, "tester/x-sam-lora-ft")
    files = hub.files
    assert set(files) == {"adapter_config.json", "adapter_model.safetensors", "trainer_state.json", "README.md"}
    assert json.loads(files["adapter_config.json"])["base_model_name_or_path"] == RELEASED_MODEL_ID
    assert files["adapter_model.safetensors"] == (checkpoint / "adapter_model.safetensors").read_bytes()
    data = card_of(files).data.to_dict()
    assert data["library_name"] == "peft" and data["base_model"] == RELEASED_MODEL_ID
    assert f'AutoProcessor.from_pretrained("{RELEASED_MODEL_ID}")' in usage_code(card_of(files))


def test_wrong_objects_are_refused(hub, model, peft_model):
    with pytest.raises(TypeError, match="push_adapter_to_hub"):
        push_model_to_hub(peft_model, "tester/x")
    with pytest.raises(TypeError, match="push_model_to_hub"):
        push_adapter_to_hub(model, "tester/x")
    assert hub.commits == []


def test_stage_cards_explain_how_to_use_an_intermediate_stage():
    card = build_model_card("tester/x-sam-s1", kind="converted", stage="s1")
    assert 'from_stage="s1"' in card.text and "closed-set head" in card.text
    assert "load_quantized" not in card.text and card.content.startswith("---\n")
