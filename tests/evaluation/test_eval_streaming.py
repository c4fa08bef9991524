"""Streaming: 2,000 masks of 512x512 go through the accumulators with bounded memory (tracemalloc)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from xsam_hf.evaluation import GCGAccumulator, InteractiveIoUAccumulator, MaskAPAccumulator, PROMPT_TYPES

SIZE = 512
NUM_SAMPLES = 1_000  # one predicted and one reference mask each: 2,000 masks
HOLDING_BYTES = 2 * NUM_SAMPLES * SIZE * SIZE  # the masks as NumPy bools: 524 MB
PEAK_BOUND_BYTES = 16 * 2**20  # asserted while streaming: < 16 MiB, about 3 % of holding them (measured ~3 MiB)
RETAINED_BOUND_BYTES = 8 * 2**20  # asserted after streaming: the accumulators' state (RLEs, counts) < 8 MiB


def disc(rows: np.ndarray, columns: np.ndarray, center: np.ndarray, radius: float) -> np.ndarray:
    """A ``(SIZE, SIZE)`` bool disc; only its bounding window is computed, to keep the test fast."""
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    top, bottom = int(max(center[0] - radius, 0)), int(min(center[0] + radius + 1, SIZE))
    left, right = int(max(center[1] - radius, 0)), int(min(center[1] + radius + 1, SIZE))
    mask[top:bottom, left:right] = (
        (rows[top:bottom] - center[0]) ** 2 + (columns[:, left:right] - center[1]) ** 2 <= radius**2
    )
    return mask


def test_memory_stays_bounded_over_2000_masks():
    rng = np.random.default_rng(60)
    rows, columns = np.ogrid[:SIZE, :SIZE]
    interactive = InteractiveIoUAccumulator()
    mask_ap = MaskAPAccumulator([1])
    gcg = GCGAccumulator()
    per_sample_ious = []

    tracemalloc.start()
    try:
        for index in range(NUM_SAMPLES):
            center = rng.uniform(64, SIZE - 64, 2)
            radius = rng.uniform(10, 60)
            reference = disc(rows, columns, center, radius)
            prediction = disc(rows, columns, center + rng.normal(0, 6, 2), radius * rng.uniform(0.8, 1.2))
            per_sample_ious.append(interactive.add(prediction, reference, PROMPT_TYPES[index % 4]))
            mask_ap.add(index + 1, [reference], [1], [prediction], [float(rng.random())], [1])
            if index % 10 == 0:  # GCG keeps RLEs and one number per image too
                gcg.add(index, "a ball", ["a round ball"], [prediction], [reference])
        retained, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    holding_mib = HOLDING_BYTES / 2**20
    assert peak < PEAK_BOUND_BYTES, f"peak {peak / 2**20:.1f} MiB; holding the masks needs {holding_mib:.0f} MiB"
    assert retained < RETAINED_BOUND_BYTES, f"the accumulators retain {retained / 2**20:.1f} MiB"
    # compute() runs untraced: COCOeval's own working memory is pycocotools' (and tracing it takes ~20 s)
    results = mask_ap.compute()
    gcg_results = gcg.compute(caption_metric_names=())
    # the streamed numbers are still the real ones
    interactive_results = interactive.compute()
    assert sum(r["num_samples"] for r in interactive_results.values()) == NUM_SAMPLES
    point_ious = per_sample_ious[0::4]
    assert interactive_results["point"]["mIoU"] == pytest.approx(np.mean(point_ious), abs=1e-9)
    assert 0.5 < results["AP50"] <= 1.0 and 0.0 < gcg_results["mIoU"] < 1.0
