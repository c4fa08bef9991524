"""Do the segmentation features of a model carry an object's shape (or colour), and how fast can they learn it?

Two measurements on the synthetic world (scenes generated from the seed, no files needed):

* ``--model DIR`` (default: the embedded model): a **linear probe**. Each object's features are averaged and
  max-pooled over its ground-truth mask on every level of the SAM connector's pyramid (what the Mask2Former decoder
  reads), a multinomial logistic regression is fitted on ``--train-scenes`` training scenes and scored on the first
  ``--val-scenes`` validation scenes. Chance is 1/6 (the six shapes are drawn uniformly). ``--attribute colour``
  probes the object's colour name instead (chance 1/8). ``--features llm-tokens`` probes the image tokens the LLM
  reads instead (the projected SAM tokens and the projected SigLIP tokens, each an 8 x 8 grid in the world preset):
  per object the tokens' mean weighted by how much of each token's cell the object covers, and the one token it
  covers most (what an attention head reading one token gets).
* ``--train-encoder STEPS``: the **learnability** of shape by the `world` preset's SAM ViT and connector from random
  initialisation, with the most direct signal there is: the encoder warm-up's model (each object's finest-level
  features averaged over its mask, a linear head) with the six shapes for classes, cross-entropy, batch 4, AdamW
  ``--lr``. Prints the validation accuracy every 100 steps.

    python bench/world_shape_probe.py [--model DIR] [--train-scenes 300] [--attribute colour] [--features llm-tokens]
    python bench/world_shape_probe.py --train-encoder 3000

Prints JSON lines.
"""

from __future__ import annotations

import argparse
import functools
import json
import time

import numpy as np
import torch
import torch.nn.functional as F

from xsam_hf import default_model
from xsam_hf.synthetic.scene import generate_scene
from xsam_hf.synthetic.vocabulary import COLOURS, SHAPES
from xsam_hf.training.encoder_warmup import EncoderWarmupModel, freeze_for_warmup, mask_pooled_features


def _canvas_tensor(image: np.ndarray, seg_image_processor) -> torch.Tensor:
    return seg_image_processor(images=[image], return_tensors="pt")["pixel_values"]


def _max_pooled(features: torch.Tensor, masks: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """`features` (C, h, w) max-pooled over the cells each of `masks` (N, H, W) covers for at least 30%: (N, C); an
    object thinner than a cell keeps its mean."""
    cover = F.interpolate(masks[:, None].float(), size=features.shape[-2:], mode="area")[:, 0]
    rows = []
    for inside, fallback in zip(cover >= 0.3, mean):
        rows.append(features[:, inside].amax(dim=1) if inside.any() else fallback)
    return torch.stack(rows)


# The names an object attribute takes, in label order.
ATTRIBUTE_VALUES = {"shape": tuple(SHAPES), "colour": tuple(COLOURS)}


def _object_feature_rows(split: str, scenes: int, seed: int, attribute: str, scene_rows):
    """``scene_rows(scene, masks)`` -> {name: (N, C) rows, one per object} over the first ``scenes`` scenes: the rows
    stacked per name, and the objects' labels of ``attribute`` (an `ATTRIBUTE_VALUES` key)."""
    values = ATTRIBUTE_VALUES[attribute]
    rows: dict[str, list[torch.Tensor]] = {}
    labels = []
    for index in range(scenes):
        scene = generate_scene(seed, split, index)
        masks = torch.from_numpy(np.stack([obj.mask for obj in scene.objects]))
        with torch.no_grad():
            for name, scene_row in scene_rows(scene, masks).items():
                rows.setdefault(name, []).append(scene_row)
        labels.extend(values.index(getattr(obj, attribute)) for obj in scene.objects)
    return {name: torch.cat(stacked) for name, stacked in rows.items()}, torch.tensor(labels)


def pooled_object_features(model, seg_image_processor, split: str, scenes: int, seed: int = 0,
                           attribute: str = "shape"):
    """Per pyramid level, one pooled feature row (mask mean, then mask max) per object of the first ``scenes``
    scenes; and the labels of ``attribute``."""

    def scene_rows(scene, masks):
        pyramid = model.get_image_features(
            extra_pixel_values=_canvas_tensor(scene.image, seg_image_processor)).feature_pyramid
        rows = {}
        for features in pyramid:
            mean = mask_pooled_features(features[0], masks)
            rows[f"{features.shape[-2]}x{features.shape[-1]}"] = torch.cat(
                [mean, _max_pooled(features[0], masks, mean)], 1)
        return rows

    return _object_feature_rows(split, scenes, seed, attribute, scene_rows)


def token_pools(tokens: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`tokens` (T, C) of a square grid of cells over the image, `masks` (N, H, W): per mask the tokens' mean weighted
    by the share of each cell the mask covers, and the token of the cell it covers most; each (N, C)."""
    side = int(round(tokens.shape[0] ** 0.5))
    cover = F.interpolate(masks[:, None].float(), size=(side, side), mode="area")[:, 0].flatten(1)  # (N, T)
    weights = cover / cover.sum(1, keepdim=True).clamp_min(1e-12)
    return weights @ tokens, tokens[cover.argmax(1)]


def llm_token_object_features(model, processor, split: str, scenes: int, seed: int = 0, attribute: str = "shape"):
    """Per kind of LLM image token (SAM, SigLIP) and pooling (weighted mean, top token), one row per object of the
    first ``scenes`` scenes; and the labels of ``attribute``."""

    def scene_rows(scene, masks):
        features = model.get_image_features(
            pixel_values=processor.image_processor(images=[scene.image], return_tensors="pt")["pixel_values"],
            extra_pixel_values=_canvas_tensor(scene.image, processor.seg_image_processor))
        rows = {}
        for name, tokens in (("sam", features.segmentation_tokens), ("siglip", features.vision_tokens)):
            rows[f"{name} tokens, weighted mean"], rows[f"{name} tokens, top token"] = token_pools(tokens[0], masks)
        return rows

    return _object_feature_rows(split, scenes, seed, attribute, scene_rows)


def linear_probe_accuracy(train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor,
                          num_classes: int, l2: float = 1e-3) -> float:
    """Validation accuracy of an L2-regularised multinomial logistic regression (standardised inputs, L-BFGS)."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    train_x, val_x = (train_x - mean) / std, (val_x - mean) / std
    torch.manual_seed(0)
    head = torch.nn.Linear(train_x.shape[1], num_classes)
    optimizer = torch.optim.LBFGS(head.parameters(), max_iter=300, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(head(train_x), train_y) + l2 * head.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return float((head(val_x).argmax(1) == val_y).float().mean())


def probe(model, processor, train_scenes: int, val_scenes: int, attribute: str = "shape",
          features: str = "pyramid") -> dict:
    """Linear-probe accuracies per feature set: the connector pyramid's levels or (``features="llm-tokens"``) the
    LLM's image tokens."""
    if features == "llm-tokens":
        collect = functools.partial(llm_token_object_features, model, processor)
    else:
        collect = functools.partial(pooled_object_features, model, processor.seg_image_processor)
    train_x, train_y = collect("train", train_scenes, attribute=attribute)
    val_x, val_y = collect("val", val_scenes, attribute=attribute)
    classes = len(ATTRIBUTE_VALUES[attribute])
    accuracy = {name: round(linear_probe_accuracy(train_x[name], train_y, val_x[name], val_y, classes), 3)
                for name in train_x}
    return {"attribute": attribute, "features": features, "train_objects": len(train_y), "val_objects": len(val_y),
            "chance": round(1 / classes, 3), "val_accuracy_by_level": accuracy}


def train_encoder(steps: int, lr: float, seg_image_processor, val_scenes: int = 100, every: int = 100,
                  train_scenes: int = 2000):
    """Yield (step, validation accuracy) while training the `world` SAM ViT + connector and a linear shape head: the
    encoder warm-up's model (`EncoderWarmupModel`) with shapes for classes."""
    from xsam_hf.modeling.configuration_xsam import XSamConfig
    from xsam_hf.modeling.modeling_xsam import XSamForSegmentation

    torch.manual_seed(0)
    model = EncoderWarmupModel(
        XSamForSegmentation(XSamConfig.from_preset("world", stage="s1", num_closed_set_classes=len(SHAPES))),
        len(SHAPES))
    freeze_for_warmup(model)
    params = [p for p in model.parameters() if p.requires_grad]  # the encoder, the connector and the head
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)

    def logits(scenes):
        pixels = torch.cat([_canvas_tensor(s.image, seg_image_processor) for s in scenes])
        masks = [torch.from_numpy(np.stack([obj.mask for obj in s.objects])) for s in scenes]
        targets = torch.tensor([SHAPES.index(obj.shape) for s in scenes for obj in s.objects])
        return model.segment_logits(pixels, masks), targets

    val = [generate_scene(0, "val", i) for i in range(val_scenes)]
    for step in range(1, steps + 1):
        batch = [generate_scene(0, "train", (4 * step + k) % train_scenes) for k in range(4)]
        output, targets = logits(batch)
        loss = F.cross_entropy(output, targets)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        if step % every == 0 or step == steps:
            with torch.no_grad():
                right = total = 0
                for start in range(0, len(val), 10):
                    output, targets = logits(val[start:start + 10])
                    right += int((output.argmax(1) == targets).sum())
                    total += len(targets)
            yield step, right / total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model folder (default: the embedded default model)")
    parser.add_argument("--train-scenes", type=int, default=300)
    parser.add_argument("--val-scenes", type=int, default=100)
    parser.add_argument("--attribute", choices=sorted(ATTRIBUTE_VALUES), default="shape",
                        help="what the linear probe reads (the --train-encoder curve is always shape)")
    parser.add_argument("--features", choices=["pyramid", "llm-tokens"], default="pyramid",
                        help="the decoder's feature pyramid or the image tokens the LLM reads")
    parser.add_argument("--train-encoder", type=int, default=0, metavar="STEPS")
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args(argv)
    loaded = default_model.load_model(args.model)
    seg_image_processor = loaded.processor.seg_image_processor
    if args.train_encoder:
        start = time.time()
        for step, accuracy in train_encoder(args.train_encoder, args.lr, seg_image_processor, args.val_scenes):
            print(json.dumps({"step": step, "val_accuracy": round(accuracy, 3), "seconds": round(time.time() - start)}),
                  flush=True)
        return 0
    print(json.dumps(probe(loaded.model.eval(), loaded.processor, args.train_scenes, args.val_scenes,
                           args.attribute, args.features)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
