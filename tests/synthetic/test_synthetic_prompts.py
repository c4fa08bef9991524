"""Interactive and VGD files: official prompt rules, thin PSALM prompts, and the cross-image validation pairs."""

from __future__ import annotations

import json

import numpy as np

from xsam_hf.synthetic import SHAPES, generate_scene, load_cross_image_vgd
from xsam_hf.synthetic.visual_prompts import object_prompts
from xsam_hf.training.data import load_coco_interactive, load_coco_vgd
from xsam_hf.training.data.masks import decode_rle
from xsam_hf.training.data.visual_prompt_generation import connected_components, generate_visual_prompts

from .conftest import NUM_VAL


def test_fast_prompts_equal_the_official_generator_draw_for_draw():
    scene = generate_scene(0, "train", 5)
    two_parts = np.zeros((128, 128), bool)
    two_parts[10:30, 5:25] = two_parts[90:120, 100:126] = True
    for mask in [o.mask for o in scene.objects] + [two_parts]:
        ours = object_prompts(mask, np.random.default_rng(11))
        official = generate_visual_prompts(mask, np.random.default_rng(11))
        for prompt_type in ("point", "scribble", "box", "mask"):
            assert np.array_equal(ours.masks[prompt_type], official[prompt_type]["mask"]), prompt_type
        assert ours.points == official["point"]["points"] and ours.box == official["box"]["box"]


def _vgd(world, split):
    root = world.root
    return load_coco_vgd(root / f"vgd/img_vgdseg_coco_{split}.json", root / f"images/{split}",
                         categories=root / f"panoptic/annotations/instances_{split}.json")


def test_vgd_and_interactive_files_hold_the_same_prompts_of_the_exact_objects(world):
    root = world.root
    vgd = {e.meta["image_id"]: e for e in _vgd(world, "val")}
    interactive = list(load_coco_interactive(root / "interactive/coco_interactive_val_psalm.json", root / "images/val",
                                             categories=root / "panoptic/annotations/instances_val.json"))
    assert len(vgd) == len(interactive) == NUM_VAL
    for example in interactive:
        scene = world.scene(example.meta["image_id"])
        assert example.class_names == list(SHAPES) and example.task == "intseg"
        twin = vgd[example.meta["image_id"]]
        assert len(example.objects) == len(twin.objects) == len(scene.objects)
        for loaded, from_vgd, obj in zip(example.objects, twin.objects, scene.objects):
            assert np.array_equal(decode_rle(loaded.mask), obj.mask) and loaded.object_id == from_vgd.object_id
            assert example.class_names[loaded.class_index] == obj.shape
            # raw clicks, read from the one-pixel PSALM prompt: one inside each part of an object split by occlusion
            clicks = loaded.prompt("point").points
            assert len(clicks) == len(connected_components(obj.mask))
            assert all(obj.mask[int(y), int(x)] for x, y in clicks)
            for prompt_type in ("point", "scribble", "box", "mask"):
                # PSALM stores thin clicks and scribbles; the loader's dilation gives the VGD shapes back
                assert np.array_equal(decode_rle(loaded.prompt(prompt_type).mask),
                                      decode_rle(from_vgd.prompt(prompt_type).mask)), prompt_type
            assert from_vgd.prompt("box").box == loaded.prompt("box").box


def test_thin_psalm_prompts_are_thin(world):
    items = json.loads((world.root / "interactive/coco_interactive_train_psalm.json").read_text())
    for ann in (a for item in items for a in item["anns"]):
        parts = len(connected_components(decode_rle(ann["segmentation"])))
        assert decode_rle(ann["point_visual_prompt_mask"]).sum() == parts  # one click per connected part
        scribble = decode_rle(ann["scribble_visual_prompt_mask"])
        assert 0 < scribble.sum() < decode_rle(ann["box_visual_prompt_mask"]).sum()


def test_cross_image_vgd_prompts_come_from_another_image_of_the_same_category(world):
    root = world.root
    vgd = {e.meta["image_id"]: e for e in _vgd(world, "val")}
    examples = list(load_cross_image_vgd(root / "vgd/img_vgdseg_cross_val.json", root / "images/val"))
    assert len(examples) >= NUM_VAL - 1
    for example in examples:
        scene = world.scene(example.meta["image_id"])
        prompted = example.class_ids
        assert sorted(prompted) == sorted({o.category_id for o in scene.objects} & set(prompted))
        assert [example.class_names[o.class_index] for o in example.objects] == [
            o.shape for o in scene.objects if o.category_id in prompted]
        for loaded, obj in zip(example.objects, [o for o in scene.objects if o.category_id in prompted]):
            assert np.array_equal(decode_rle(loaded.mask), obj.mask)
        for prompt, category_id in zip(example.meta["prompts"], prompted):
            assert prompt["image_id"] != example.meta["image_id"]
            assert prompt["image_path"].endswith(world.scene(prompt["image_id"]).file_name)
            source = vgd[prompt["image_id"]]
            (instance,) = [o for o in source.objects if int(o.object_id) == prompt["annotation_id"]]
            assert source.class_ids[instance.class_index] == category_id
            for prompt_type, rle in prompt["visual_prompts"].items():
                assert np.array_equal(decode_rle(rle), decode_rle(instance.prompt(prompt_type).mask))
