"""How much does the `world` preset's mask resolution cap its masks, and what would a finer one cost?

Three measurements on the synthetic world:

* **The cap** (always): every validation object's mask (scenes generated from the seed, no files needed) is put on an
  ``G x G`` grid the way a perfect mask head would see it (the fraction of each cell it covers, as a logit), upsampled
  bilinearly to the 128 px canvas and thresholded at 0, as X-SAM's post-processing does with its mask logits. The IoU
  with the true mask is the best any model with that grid can reach. The `world` preset's mask features are
  32 x 32 (SAM patch 8 -> 16 x 16 tokens, the connector's depth-to-space x2); 64 x 64 is shown beside it.
* ``--predictions FILE``: what a model reached, from an ``xsam eval`` interactive ``predictions.jsonl``, in the same
  object-size bins (``n`` counts prompts there, objects for the cap; the reference area is recovered from
  intersection, union and the predicted mask).
* ``--time-steps N``: the S3 training-step time (forward, backward, AdamW; batch 4 on a small written world, the
  trainer's source-grouped batches, the same for every variant, round-robin) of the `world` preset against finer SAM patches (patch 4: 32 x 32 tokens),
  with the connector's official scales [2, 1, 0.5] (mask features 64 x 64) or [1, 0.5, 0.25] (32 x 32 again).

    python bench/world_mask_resolution.py [--predictions RUN/eval/trained/interactive/predictions.jsonl]
                                          [--time-steps 12 --threads 2]

Prints JSON lines.
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from xsam_hf.synthetic.scene import generate_scene

AREA_BINS = ((0, 150), (150, 300), (300, 600), (600, 1200), (1200, 128 * 128 + 1))  # pixels on the 128 px canvas
VARIANTS = {"world (patch 8, scales [2, 1, 0.5])": (8, [2.0, 1.0, 0.5]),
            "patch 4, scales [2, 1, 0.5]": (4, [2.0, 1.0, 0.5]),
            "patch 4, scales [1, 0.5, 0.25]": (4, [1.0, 0.5, 0.25])}


def grid_iou(mask: np.ndarray, grid: int) -> float:
    """IoU of `mask` (H, W bool) with its best reconstruction from a `grid` x `grid` logit map (see the module doc)."""
    truth = torch.from_numpy(mask.astype(np.float32))[None, None]
    cover = F.interpolate(truth, size=(grid, grid), mode="area").clamp(1e-4, 1 - 1e-4)
    logits = F.interpolate(torch.logit(cover), size=mask.shape, mode="bilinear", align_corners=False)
    predicted, reference = logits[0, 0] > 0, truth[0, 0] > 0.5
    return float((predicted & reference).sum() / (predicted | reference).sum())


def _by_area(rows: list[tuple[int, float]]) -> list[dict]:
    out = []
    for low, high in AREA_BINS:
        values = [iou for area, iou in rows if low <= area < high]
        out.append({"area_px": f"{low}-{high - 1}", "n": len(values),
                    "mean_iou": round(float(np.mean(values)), 3) if values else None})
    return out


def resolution_caps(val_scenes: int, grids: tuple[int, ...] = (32, 64), seed: int = 0) -> dict[int, list[dict]]:
    masks = [obj.mask for i in range(val_scenes) for obj in generate_scene(seed, "val", i).objects]
    return {grid: _by_area([(int(m.sum()), grid_iou(m, grid)) for m in masks]) for grid in grids}


def reached(predictions: Path) -> list[dict]:
    from pycocotools import mask as mask_utils

    from xsam_hf.evaluation.iou import sample_iou

    rows = []
    for line in predictions.read_text(encoding="utf-8").splitlines():
        for sample in json.loads(line)["samples"]:
            rle = dict(sample["rle"], counts=sample["rle"]["counts"].encode())
            reference_area = sample["union"] - int(mask_utils.area(rle)) + sample["intersection"]
            rows.append((reference_area, sample_iou(sample["intersection"], sample["union"])))
    return _by_area(rows)


def variant_model(patch: int, scales: list[float]):
    from xsam_hf.modeling.configuration_xsam import XSamConfig
    from xsam_hf.modeling.modeling_xsam import XSamForSegmentation
    from xsam_hf.modeling.presets import get_preset

    config = get_preset("world")["config"]
    config["segmentation_encoder_config"] = {**config["segmentation_encoder_config"], "patch_size": patch}
    config["connector_scale_factors"] = scales
    torch.manual_seed(0)
    return XSamForSegmentation(XSamConfig(**config, stage="s3"))


def step_times(steps: int, train_scenes: int = 40) -> dict[str, float]:
    """Seconds per S3 step of each variant, on the same batches, round-robin (the first two steps are not timed)."""
    from xsam_hf.synthetic import write_world
    from xsam_hf.synthetic.train_default import load_recipe, stage_recipes
    from xsam_hf.training import train
    from xsam_hf.training.collator import SKIPPED_SAMPLES_KEY, TASK_KEY, XSamDataCollator
    from xsam_hf.training.data import SourceGroupedBatchSampler

    with tempfile.TemporaryDirectory() as tmp:
        world = Path(tmp) / "world"
        manifest = write_world(world, seed=0, num_train=train_scenes, num_val=1)
        (entry,) = [e for e in stage_recipes(load_recipe("default"), world, Path(tmp) / "runs", manifest)
                    if e["name"] == "s3"]
        recipe = entry["recipe"]
        recipe["model"].pop("init_from", None)
        dataset, processor = train.build_train_dataset(recipe), train.build_processor(recipe)
        collator = XSamDataCollator(processor, stage="s3", seed=0)
        sampler = SourceGroupedBatchSampler.for_dataset(dataset, 4, seed=0)  # the trainer's one-task batches
        batches = [collator([dataset[i] for i in indices]) for indices in itertools.islice(sampler, steps + 2)]
        models = {name: variant_model(*spec).train() for name, spec in VARIANTS.items()}
        optimizers = {name: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4)
                      for name, m in models.items()}
        seconds = dict.fromkeys(models, 0.0)
        for step, batch in enumerate(batches):
            inputs = {k: v for k, v in batch.items() if k not in (TASK_KEY, SKIPPED_SAMPLES_KEY)}
            for name, model in models.items():
                start = time.perf_counter()
                model(**inputs).loss.backward()
                optimizers[name].step()
                optimizers[name].zero_grad()
                if step >= 2:
                    seconds[name] += time.perf_counter() - start
    return {name: total / steps for name, total in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--val-scenes", type=int, default=100)
    parser.add_argument("--predictions", type=Path, default=None)
    parser.add_argument("--time-steps", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for grid, rows in resolution_caps(args.val_scenes).items():
        print(json.dumps({"measure": "cap", "mask_grid": grid, "by_area": rows}))
    if args.predictions:
        print(json.dumps({"measure": "reached", "predictions": str(args.predictions),
                          "by_area": reached(args.predictions)}))
    if args.time_steps:
        times = step_times(args.time_steps)
        base = times[next(iter(VARIANTS))]
        for name, seconds in times.items():
            print(json.dumps({"measure": "s3_step", "variant": name, "threads": torch.get_num_threads(),
                              "seconds": round(seconds, 3), "ratio": round(seconds / base, 2)}))


if __name__ == "__main__":
    main()
