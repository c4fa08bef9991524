"""One small synthetic world per test session (written once; every test reads it through the project's loaders)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from xsam_hf.synthetic import Scene, generate_scene, write_world
from xsam_hf.synthetic.scene import VAL_IMAGE_ID_OFFSET

SEED, NUM_TRAIN, NUM_VAL = 7, 20, 10


@dataclass
class World:
    root: Path
    manifest: dict[str, Any]
    cpu_seconds: float
    wall_seconds: float
    scenes: dict[int, Scene]  # by image id, regenerated in memory

    def scene(self, image_id: int) -> Scene:
        return self.scenes[int(image_id)]

    def split_scenes(self, split: str) -> list[Scene]:
        return [s for s in self.scenes.values() if s.split == split]


def split_and_index(image_id: int) -> tuple[str, int]:
    return ("val", image_id - VAL_IMAGE_ID_OFFSET - 1) if image_id > VAL_IMAGE_ID_OFFSET else ("train", image_id - 1)


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("synthetic_world")
    wall, cpu = time.perf_counter(), time.process_time()
    manifest = write_world(root, SEED, NUM_TRAIN, NUM_VAL, workers=1)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    scenes = {}
    for split, count in (("train", NUM_TRAIN), ("val", NUM_VAL)):
        for index in range(count):
            scene = generate_scene(SEED, split, index)
            scenes[scene.image_id] = scene
    return World(root=root, manifest=manifest, cpu_seconds=cpu, wall_seconds=wall, scenes=scenes)
