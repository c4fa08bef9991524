"""bench/world_shapes.py (what the embedded model gets wrong about objects) on a few scenes."""

from __future__ import annotations

import pytest

from xsam_hf import default_model
from xsam_hf.synthetic.scene import generate_scene

def test_every_object_gets_exactly_one_outcome(bench_script):
    loaded = default_model.load_model(None)
    result = bench_script("world_shapes").shape_outcomes(loaded.model.eval(), loaded.processor, scenes=3)
    assert result["objects"] == sum(len(generate_scene(0, "val", i).objects) for i in range(3))
    outcomes = ("no object", "other shape", "right shape", "stuff")
    assert sum(result.get(key, 0.0) for key in outcomes) == pytest.approx(1.0, abs=0.01)
    assert 0.0 <= result["iou >= 0.5"] <= 1.0
    # the shipped model segments most objects (`bench/world_shapes.py --scenes 40`: IoU >= 0.5 for 80% of 162 objects)
    assert result["iou >= 0.5"] >= 0.5
