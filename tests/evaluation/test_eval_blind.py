"""`xsam eval --blind`: every image feature the model consumes is zero, the model is restored afterwards, and a
blind model cannot tell two images apart."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training" / "data"))
from xsam_data_fixtures import write_image, write_json  # noqa: E402

from xsam_hf.default_model import LoadedModel  # noqa: E402
from xsam_hf.evaluation import runner  # noqa: E402
from xsam_hf.evaluation.blind import blind, blinded  # noqa: E402
from xsam_hf.evaluation.runner import EvalSettings, main, run_evaluation  # noqa: E402
from xsam_hf.evaluation.tasks import parse_data_arguments  # noqa: E402
from xsam_hf.modeling.configuration_xsam import XSamConfig  # noqa: E402
from xsam_hf.modeling.modeling_xsam import XSamForSegmentation  # noqa: E402
from xsam_hf.processing import ReasoningRequest, XSamProcessor  # noqa: E402

H, W = 24, 32


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return XSamForSegmentation(XSamConfig.from_preset("tiny", stage="s3")).eval(), XSamProcessor.from_preset("tiny")


def write_two_images(root: Path) -> list[str]:
    """ReasonSeg layout: two different images, the same question and target."""
    for name, seed in (("a", 1), ("b", 2)):
        write_image(root / f"{name}.jpg", H, W, seed=seed)
        write_json(root / f"{name}.json", {"text": ["the thing on the left"], "is_sentence": False,
                                           "shapes": [{"label": "target", "points": [[2, 2], [14, 2], [14, 20],
                                                                                     [2, 20]]}]})
    return [str(root)]


def image_features(model, processor):
    image = torch.rand(3, H, W)
    inputs = processor(images=[image], requests=[ReasoningRequest("the thing")])
    with torch.no_grad():
        return model.get_image_features(inputs["pixel_values"], inputs["extra_pixel_values"])


def tensors(features) -> list[torch.Tensor]:
    return [features.vision_tokens, features.segmentation_tokens, *features.feature_pyramid]


def test_blinded_zeroes_every_image_feature_then_restores_the_model(tiny):
    model, processor = tiny
    torch.manual_seed(1)
    before = image_features(model, processor)
    assert all(t.abs().sum() > 0 for t in tensors(before))
    with blinded(model):
        torch.manual_seed(1)
        assert all(torch.count_nonzero(t) == 0 for t in tensors(image_features(model, processor)))
    assert "get_image_features" not in vars(model)  # the class method again, not a leftover patch
    torch.manual_seed(1)
    after = image_features(model, processor)
    assert all(torch.equal(a, b) for a, b in zip(tensors(before), tensors(after)))

    spy = model.get_image_features  # an instance patch present before is put back, not deleted
    model.get_image_features = spy
    try:
        with blinded(model):
            pass
        assert vars(model)["get_image_features"] is spy
    finally:
        del model.get_image_features


def test_blind_evaluation_sees_zeros_and_cannot_tell_two_images_apart(tiny, tmp_path, monkeypatch):
    model, processor = tiny
    data = parse_data_arguments("reasoning", write_two_images(tmp_path / "val"))
    seen, logits = [], []
    merge, decode = model._merge_inputs, model._decode

    def spy_merge(input_ids, attention_mask, labels, features, region_tokens):
        seen.append(features.vision_tokens)
        seen.append(features.segmentation_tokens)
        return merge(input_ids, attention_mask, labels, features, region_tokens)

    def spy_decode(pyramid, *args, **kwargs):
        seen.extend(pyramid)
        return decode(pyramid, *args, **kwargs)

    monkeypatch.setattr(model, "_merge_inputs", spy_merge)
    monkeypatch.setattr(model, "_decode", spy_decode)
    handle = model.register_forward_hook(lambda module, args, output: logits.append(output.masks_queries_logits))

    def evaluate(blind_run: bool, output: Path) -> dict:
        seen.clear()
        logits.clear()
        settings = EvalSettings(task="reasoning", data=data, output_dir=output, batch_size=1, progress=False,
                                blind=blind_run)
        return run_evaluation(model, processor, settings, model_source="tiny-random")

    try:
        document = evaluate(True, tmp_path / "blind")
        assert len(logits) == 2 and len(seen) == 2 * 5  # per image: 2 token sets + a 3-level pyramid
        assert all(torch.count_nonzero(t) == 0 for t in seen)
        assert torch.equal(logits[0], logits[1])  # a blind model gives the same answer for both images
        assert "get_image_features" not in vars(model)

        evaluate(False, tmp_path / "sighted")
        assert any(torch.count_nonzero(t) > 0 for t in seen)
        assert not torch.equal(logits[0], logits[1])
    finally:
        handle.remove()

    assert document["meta"]["blind"] is True and document["model"] == "tiny-random (blind)"
    assert json.loads((tmp_path / "blind" / "eval_config.json").read_text())["blind"] is True
    assert "blind" not in json.loads((tmp_path / "sighted" / "eval_config.json").read_text())
    assert "BLIND" in (tmp_path / "blind" / "results.md").read_text()


def test_cli_blind_flag(tiny, tmp_path, monkeypatch):
    model, processor = tiny
    monkeypatch.setattr(runner, "load_model", lambda *args, **kwargs: LoadedModel(model, processor, "tiny", False))
    data = write_two_images(tmp_path / "val")
    assert main(["--task", "reasoning", "--data", *data, "--output", str(tmp_path / "out"), "--limit", "1",
                 "--no-progress", "--blind"]) == 0
    document = json.loads((tmp_path / "out" / "results.json").read_text())
    assert document["meta"]["blind"] is True and document["model"] == "tiny (blind)"
    assert "get_image_features" not in vars(model)


def test_train_default_keeps_blind_importable():
    from xsam_hf.synthetic import train_default

    assert train_default.blind is blind
