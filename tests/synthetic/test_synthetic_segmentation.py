"""Panoptic, semantic and instance files, read by the project's loaders, give back exactly what was drawn."""

from __future__ import annotations

import numpy as np
from PIL import Image

from xsam_hf.synthetic import CLASS_NAMES, STUFF
from xsam_hf.training.data import load_coco_instances, load_coco_panoptic
from xsam_hf.training.data.masks import decode_rle
from xsam_hf.training.data.semantic import IGNORE_ID, load_semantic_png

from .conftest import NUM_TRAIN, NUM_VAL


def _panoptic(world, split):
    root = world.root
    return load_coco_panoptic(root / f"panoptic/annotations/panoptic_{split}.json", root / f"panoptic/panoptic_{split}",
                              root / f"images/{split}")


def test_panoptic_masks_classes_and_images_equal_the_drawn_scenes(world):
    for split, count in (("train", NUM_TRAIN), ("val", NUM_VAL)):
        examples = list(_panoptic(world, split))
        assert len(examples) == count
        for example in examples:
            scene = world.scene(example.meta["image_id"])
            assert example.class_names == list(CLASS_NAMES) and example.image_size == (128, 128)
            expected = [(o.shape, True, o.mask) for o in scene.objects] + [(r.name, False, r.mask) for r in scene.stuff]
            loaded = [(example.class_names[o.class_index], o.isthing, decode_rle(o.mask)) for o in example.objects]
            assert [(name, thing) for name, thing, _ in loaded] == [(name, thing) for name, thing, _ in expected]
            assert all(np.array_equal(got, want) for (_, _, got), (_, _, want) in zip(loaded, expected))
            # the segments tile the image: every pixel belongs to exactly one of them
            assert np.array_equal(sum(m.astype(int) for _, _, m in loaded), np.ones((128, 128), int))
            with Image.open(example.image_path) as image:
                pixels = np.asarray(image, dtype=np.int16)
            assert image.size == (128, 128)
            assert np.abs(pixels - scene.image).mean() < 3.0  # JPEG quality 95, 4:4:4


def test_occluded_objects_keep_only_their_visible_pixels(world):
    occluded = [(o, s) for s in world.scenes.values() for o in s.objects if o.area < o.full_mask.sum()]
    assert occluded, "the small world has at least one occluded object"
    for obj, scene in occluded:
        hidden = obj.full_mask & ~obj.mask
        later = np.logical_or.reduce([o.full_mask for o in scene.objects[scene.objects.index(obj) + 1:]])
        assert (hidden <= later).all()  # only objects drawn later hide it
        assert obj.area >= 0.55 * obj.full_mask.sum()


def test_semantic_pngs_hold_contiguous_class_ids(world):
    for scene in world.split_scenes("val"):
        semantic = load_semantic_png(world.root / "panoptic/panoptic_semseg_val" / scene.file_name.replace(".jpg",
                                                                                                           ".png"))
        expected = np.full((128, 128), IGNORE_ID, np.uint8)
        for region in scene.stuff:
            expected[region.mask] = 6 + STUFF.index(region.name)
        for obj in scene.objects:
            expected[obj.mask] = CLASS_NAMES.index(obj.shape)
        assert np.array_equal(semantic, expected) and IGNORE_ID not in semantic


def test_instance_annotations_are_the_things_only(world):
    source = load_coco_instances(world.root / "panoptic/annotations/instances_val.json", world.root / "images/val")
    assert len(source) == NUM_VAL
    for example in source:
        scene = world.scene(example.meta["image_id"])
        assert example.class_names == list(CLASS_NAMES[:6])
        assert [example.class_names[o.class_index] for o in example.objects] == [o.shape for o in scene.objects]
        for loaded, obj in zip(example.objects, scene.objects):
            assert np.array_equal(decode_rle(loaded.mask), obj.mask)
            assert loaded.bbox == obj.bbox
