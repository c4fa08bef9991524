"""The world as a whole: determinism, speed, the entry point, the vocabulary, the sample image."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from xsam_hf.synthetic import (CLASS_NAMES, WORLD_VOCABULARY, generate_scene, mask_to_rectangles, words,
                               write_world)
from xsam_hf.synthetic.__main__ import main
from xsam_hf.synthetic.sample import sample_image_path, sample_scene
from xsam_hf.training.data.reasonseg import rasterise_labelme_shapes

from .conftest import NUM_TRAIN, NUM_VAL, SEED


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_files_whatever_the_worker_count(world, tmp_path):
    again = tmp_path / "again"
    write_world(again, SEED, NUM_TRAIN, NUM_VAL, workers=2)
    first, second = _tree(world.root), _tree(again)
    assert sorted(first) == sorted(second)
    assert len(first) > 4 * (NUM_TRAIN + NUM_VAL)  # images, panoptic PNGs, ReasonSeg copies and JSONs, ...
    assert [name for name in first if first[name] != second[name]] == []


def test_another_seed_draws_other_scenes():
    one, other = generate_scene(1, "train", 0), generate_scene(2, "train", 0)
    assert not np.array_equal(one.image, other.image)
    assert np.array_equal(generate_scene(1, "train", 0).image, one.image)


def test_small_world_is_written_in_a_few_seconds(world):
    # CPU time of the writing process (workers=1), so other load on the machine does not count.
    print(f"\n{NUM_TRAIN}+{NUM_VAL} scenes: {world.cpu_seconds:.2f} s CPU, {world.wall_seconds:.2f} s wall")
    assert world.cpu_seconds < 6.0


def test_manifest_lists_counts_classes_and_recipe_sources(world):
    manifest = json.loads((world.root / "world.json").read_text())
    assert manifest["seed"] == SEED and manifest["splits"] == {"train": NUM_TRAIN, "val": NUM_VAL}
    assert manifest["class_names"] == list(CLASS_NAMES) == ["circle", "square", "triangle", "star", "ring", "cross",
                                                            "sky", "ground", "water"]
    scenes = world.split_scenes("val")
    assert manifest["counts"]["val"]["objects"] == sum(len(s.objects) for s in scenes)
    formats = [s["format"] for s in manifest["recipe_sources"]["train"]]
    assert formats == ["coco_panoptic", "refcoco", "reasonseg", "gcg", "coco_vgd", "coco_interactive", "llava"]
    for split in ("train", "val"):
        for spec in manifest["recipe_sources"][split]:
            for key, value in spec.items():
                if key.endswith(("_json", "_dir", "_path", "categories")):
                    assert (world.root / value).exists(), (split, key, value)


def test_entry_point_writes_a_world(tmp_path, capsys):
    assert main(["--output", str(tmp_path / "w"), "--seed", "3", "--train", "2", "--val", "2", "--workers", "1"]) == 0
    assert "wrote 2 train + 2 val scenes" in capsys.readouterr().out
    assert len(list((tmp_path / "w" / "images" / "val").glob("*.jpg"))) == 2
    manifest = json.loads((tmp_path / "w" / "world.json").read_text())
    assert manifest["seed"] == 3 and manifest["dense_train_chat"] is False
    assert main(["--output", str(tmp_path / "d"), "--seed", "3", "--train", "2", "--val", "2", "--workers", "1",
                 "--dense-train-chat"]) == 0
    manifest = json.loads((tmp_path / "d" / "world.json").read_text())
    assert manifest["dense_train_chat"] is True
    assert manifest["counts"]["train"]["chat_turns"] > json.loads(
        (tmp_path / "w" / "world.json").read_text())["counts"]["train"]["chat_turns"]
    assert main(["--output", str(tmp_path / "i"), "--seed", "3", "--train", "2", "--val", "2", "--workers", "1",
                 "--dense-train-chat", "--identify-train-chat"]) == 0
    identify = json.loads((tmp_path / "i" / "world.json").read_text())
    assert identify["identify_train_chat"] is True and manifest["identify_train_chat"] is False
    assert identify["counts"]["train"]["chat_turns"] > manifest["counts"]["train"]["chat_turns"]
    assert identify["counts"]["val"] == manifest["counts"]["val"]


def test_vocabulary_is_small_and_covers_every_text(world):
    assert 100 < len(WORLD_VOCABULARY) < 300
    assert len(set(WORLD_VOCABULARY)) == len(WORLD_VOCABULARY)
    texts = []
    root = world.root
    for split in ("train", "val"):
        texts += [t["value"].replace("<image>", "") for item in
                  json.loads((root / f"chat/llava_qa_{split}.json").read_text()) for t in item["conversations"]]
        texts += [t["value"].replace("<image>", "") for item in
                  json.loads((root / f"chat/llava_caption_{split}.json").read_text()) for t in item["conversations"]]
        for path in (root / "reasonseg" / split).glob("*.json"):
            texts += json.loads(path.read_text())["text"]
    texts += [item["outputs"] for item in json.loads((root / "reasonseg/explanatory/train.json").read_text())]
    texts += [item["caption"] for item in
              json.loads((root / "gcg/annotations/train/GranDf_HA_GCG_train.json").read_text())]
    with open(root / "refcoco" / "refs(unc).p", "rb") as handle:
        texts += [s["sent"] for ref in pickle.load(handle) for s in ref["sentences"]]
    texts += list(CLASS_NAMES)
    used = {w for text in texts for w in words(text)}
    assert used - set(WORLD_VOCABULARY) == set()
    assert len(used) > 0.6 * len(WORLD_VOCABULARY)  # the list is not padded with words nothing says


def test_labelme_rectangles_rasterise_back_to_the_exact_mask():
    rng = np.random.default_rng(0)
    masks = [rng.random((24, 30)) < p for p in (0.1, 0.5, 0.9)] + [generate_scene(0, "train", 3).objects[0].mask]
    for mask in masks:
        shapes = [{"label": "target", "points": points} for points in mask_to_rectangles(mask)]
        target, ignore = rasterise_labelme_shapes(shapes, *mask.shape)
        assert np.array_equal(target, mask) and not ignore.any()


def test_sample_image_is_shipped_small_and_shows_the_world():
    path = sample_image_path()
    assert path.name == "synthetic_world.png" and path.stat().st_size < 16_000
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.int16)
    scene = sample_scene()
    assert pixels.shape == (128, 128, 3)
    assert np.abs(pixels - scene.image).mean() < 4.0  # 128-colour palette of the rendered scene
    assert scene.stuff_names == ["sky", "ground", "water"] and len(scene.objects) >= 4
