"""Why is things PQ low on the synthetic world: are objects not segmented, or segmented but mis-classified?

For each object of the first ``--scenes`` validation scenes (generated from the seed, no files needed), the panoptic
query whose mask (sigmoid > 0.5) best matches the object's visible mask is taken; its IoU and its most likely class
(the right shape, another shape, a stuff class or "no object") are counted.

    python bench/world_shapes.py [--model DIR] [--scenes 40]

Prints one JSON line: objects, share with a best-query IoU >= 0.5, and the share per predicted-class outcome.
"""

from __future__ import annotations

import argparse
import collections
import json

import torch
from PIL import Image

from xsam_hf import default_model
from xsam_hf.processing import GenericSegmentationRequest
from xsam_hf.processing.image_processing import canvas_size_of
from xsam_hf.processing.post_processing import resize_mask_logits, split_instances
from xsam_hf.synthetic.scene import generate_scene
from xsam_hf.synthetic.vocabulary import CLASS_NAMES, STUFF


def shape_outcomes(model, processor, scenes: int, seed: int = 0) -> dict:
    classes = list(CLASS_NAMES)
    stuff = [classes.index(name) for name in STUFF]
    canvas = canvas_size_of(processor.seg_image_processor)
    request = GenericSegmentationRequest(classes, task="panoptic", stuff_categories=stuff)
    counts: collections.Counter = collections.Counter()
    for index in range(scenes):
        scene = generate_scene(seed, "val", index)
        batch = processor(images=[Image.fromarray(scene.image)], requests=[request])
        with torch.no_grad():
            outputs = model(**batch)
        (instance,) = split_instances(outputs, 1)[0]
        info = batch.sample_info[0]
        masks = resize_mask_logits(instance.mask_logits, canvas, info.reshaped_size, info.original_size) > 0
        labels = instance.probabilities.argmax(dim=-1)
        for obj in scene.objects:
            truth = torch.from_numpy(obj.mask)
            ious = (masks & truth).sum((1, 2)) / (masks | truth).sum((1, 2)).clamp(min=1)
            query = int(ious.argmax())
            label = int(labels[query])
            outcome = ("no object" if label == len(classes) else "right shape" if label == classes.index(obj.shape)
                       else "stuff" if label in stuff else "other shape")
            counts[outcome] += 1
            counts["iou >= 0.5"] += int(ious[query] >= 0.5)
            counts["objects"] += 1
    total = counts.pop("objects")
    return {"objects": total, **{key: round(value / total, 3) for key, value in sorted(counts.items())}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model folder (default: the embedded default model)")
    parser.add_argument("--scenes", type=int, default=40)
    args = parser.parse_args(argv)
    loaded = default_model.load_model(args.model)
    print(json.dumps(shape_outcomes(loaded.model.eval(), loaded.processor, args.scenes)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
