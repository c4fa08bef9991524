"""The sample image of the world shipped with the package (``xsam_hf/assets/samples/synthetic_world.png``).

It is validation scene 46 of seed 0 (sky, ground and water; two red stars, one partly hidden behind the other,
so referring to either needs a relation), saved as a 128-colour palette PNG so that it stays about 11 KB.
Regenerate it with ``python -m xsam_hf.synthetic.sample``.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

from PIL import Image

from .scene import Scene, generate_scene

SAMPLE_SEED, SAMPLE_SPLIT, SAMPLE_INDEX = 0, "val", 46
SAMPLE_PALETTE_COLOURS = 128
SAMPLE_RESOURCE = ("xsam_hf", "assets/samples/synthetic_world.png")


def sample_scene() -> Scene:
    return generate_scene(SAMPLE_SEED, SAMPLE_SPLIT, SAMPLE_INDEX)


def sample_image_path() -> Path:
    """Path of the shipped sample PNG (inside the installed package)."""
    package, relative = SAMPLE_RESOURCE
    return Path(str(resources.files(package).joinpath(relative)))


def render_sample(path: str | Path) -> Path:
    """Write the sample PNG to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(sample_scene().image).quantize(SAMPLE_PALETTE_COLOURS, dither=Image.Dither.NONE)
    image.save(path, format="PNG", optimize=True)
    return path


if __name__ == "__main__":
    print(render_sample(sys.argv[1] if len(sys.argv) > 1 else sample_image_path()))
