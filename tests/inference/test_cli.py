"""`xsam segment`: overlay PNG + JSON for a task, run in-process through the console-script entry point."""

import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from xsam_hf.cli import main


def test_segment_writes_overlay_and_json_matching_the_pipeline(tmp_path, capsys):
    prefix = tmp_path / "out" / "astronaut"
    code = main(["segment", "--image", "skimage:astronaut", "--task", "panoptic", "--classes", "person,flag,sky",
                 "--stuff", "sky", "--threshold", "0", "--output", str(prefix)])
    assert code == 0
    assert "RANDOM" not in capsys.readouterr().err  # the embedded default is a trained model
    record = json.loads(prefix.with_suffix(".json").read_text())
    assert record["task"] == "panoptic" and record["random_weights"] is False
    assert record["model"] == "embedded:world"
    assert record["image_size"] == [512, 512] and record["segments"]
    overlay = Image.open(prefix.with_suffix(".png"))
    assert overlay.width == 512 and overlay.height > 512  # the legend sits below the image
    covered = np.zeros((512, 512), dtype=int)
    for segment in record["segments"]:
        assert segment["label"] in {"person", "flag", "sky"}
        rle = dict(segment["rle"], counts=segment["rle"]["counts"].encode())
        decoded = mask_utils.decode(rle)
        assert decoded.sum() == segment["area"]
        x0, y0, x1, y1 = segment["bbox_xyxy"]
        ys, xs = np.nonzero(decoded)
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x0, y0, x1, y1)
        covered += decoded
    assert covered.max() == 1  # panoptic segments do not overlap


def _decoded(segment) -> np.ndarray:
    return mask_utils.decode(dict(segment["rle"], counts=segment["rle"]["counts"].encode())).astype(bool)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_the_embedded_default_segments_the_shipped_sample_scene(tmp_path):
    """The README's first command (no model, no classes, the shipped scene) and two kinds of prompt, checked against
    the scene's ground truth. Measured IoUs of the shipped model: sky 0.98, ground 0.96, water 0.92; all five objects
    found and labelled by their shape: the large red star 0.82, the orange triangle 0.81, the medium red star 0.70,
    the white circle 0.95, the small green circle 0.73 (the previous default found three: the ground and sky masks
    covered the triangle and the small circle and won their pixels in the panoptic merge). Referring with each
    object's full description (size, colour, shape): 0.00, 0.37, 0.71, 0.95, 0.67, mean 0.54 (the previous default
    0.00, 0.88, 0.73, 0.95, 0.00, mean 0.51; over validation scenes 0-39 this one is ahead too: test_pipeline.py);
    a click on the white circle 0.95."""
    from xsam_hf.synthetic.sample import sample_scene

    scene = sample_scene()
    prefix = tmp_path / "world"
    assert main(["segment", "--image", "sample:world", "--output", str(prefix)]) == 0
    record = json.loads(prefix.with_suffix(".json").read_text())
    assert record["model"] == "embedded:world" and record["random_weights"] is False
    for region in scene.stuff:
        ious = [_iou(_decoded(s), region.mask) for s in record["segments"] if s["label"] == region.name]
        assert max(ious, default=0.0) >= 0.8, (region.name, ious)
    found = [max([_iou(_decoded(s), obj.mask) for s in record["segments"] if s["label"] == obj.shape], default=0.0)
             for obj in scene.objects]  # found, and named by its shape
    assert all(iou >= 0.6 for iou in found), found

    referred = []
    for index, obj in enumerate(scene.objects):
        output = tmp_path / f"referring{index}"
        assert main(["segment", "--image", "sample:world", "--task", "referring", "--prompt",
                     f"the {obj.size} {obj.colour} {obj.shape}", "--output", str(output)]) == 0
        (segment,) = json.loads(output.with_suffix(".json").read_text())["segments"]
        referred.append(_iou(_decoded(segment), obj.mask))
    assert sum(iou >= 0.6 for iou in referred) >= 3 and np.mean(referred) >= 0.5, referred

    circle = next(o for o in scene.objects if (o.colour, o.shape) == ("white", "circle"))
    ys, xs = np.nonzero(circle.mask)
    assert main(["segment", "--image", "sample:world", "--task", "interactive", "--point",
                 f"{xs[len(xs) // 2]},{ys[len(ys) // 2]}", "--output", str(tmp_path / "click")]) == 0
    (segment,) = json.loads((tmp_path / "click.json").read_text())["segments"]
    assert _iou(_decoded(segment), circle.mask) >= 0.8


def test_without_the_embedded_default_random_weights_are_said(tmp_path, capsys, monkeypatch):
    from xsam_hf import default_model

    monkeypatch.setattr(default_model, "DEFAULT_MODEL_DIR", tmp_path / "missing")
    prefix = tmp_path / "random"
    assert main(["segment", "--image", "skimage:coffee", "--classes", "cup", "--output", str(prefix)]) == 0
    assert "RANDOM weights" in capsys.readouterr().err
    assert json.loads(prefix.with_suffix(".json").read_text())["random_weights"] is True


def test_interactive_and_vgd_prompts_from_the_command_line(tmp_path):
    mask_file = tmp_path / "prompt.png"
    prompt = np.zeros((400, 600), dtype=np.uint8)
    prompt[100:200, 200:350] = 255
    Image.fromarray(prompt).save(mask_file)
    for extra in (["--point", "300,200"], ["--box", "150,50,450,300"], ["--scribble", "200,100;260,150;300,220"],
                  ["--mask", str(mask_file)]):
        prefix = tmp_path / f"int_{extra[0][2:]}"
        assert main(["segment", "--image", "skimage:coffee", "--task", "interactive", *extra,
                     "--output", str(prefix)]) == 0
        assert len(json.loads(prefix.with_suffix(".json").read_text())["segments"]) == 1
    prefix = tmp_path / "vgd"
    assert main(["segment", "--image", "skimage:coffee", "--task", "vgd", "--box", "10,10,100,100",
                 "--prompt-image", "skimage:chelsea", "--names", "cat", "--threshold", "0",
                 "--output", str(prefix)]) == 0
    assert all(s["label"] == "cat" for s in json.loads(prefix.with_suffix(".json").read_text())["segments"])


def test_generative_task_writes_the_text(tmp_path):
    prefix = tmp_path / "chat"
    assert main(["segment", "--image", "skimage:coffee", "--task", "chat", "--prompt", "What is this?",
                 "--max-new-tokens", "3", "--output", str(prefix)]) == 0
    assert isinstance(json.loads(prefix.with_suffix(".json").read_text())["generated_text"], str)


def test_bad_arguments_give_readable_errors(tmp_path):
    with pytest.raises(SystemExit, match="needs `prompt`"):
        main(["segment", "--image", "skimage:coffee", "--task", "referring", "--output", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="Image not found"):
        main(["segment", "--image", str(tmp_path / "missing.jpg"), "--classes", "a", "--output", str(tmp_path / "x")])
    with pytest.raises(SystemExit):
        main(["segment", "--image", "skimage:coffee", "--point", "1,2,3", "--output", str(tmp_path / "x")])
