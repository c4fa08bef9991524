"""A procedural image world that writes every X-SAM task's data in the official on-disk formats.

No real weights or data sets can be downloaded where this project is checked, so a small model trained from scratch on
this world is the proof that the whole system learns every task. A scene is a 128 px canvas with sky, ground and water
regions and up to six coloured shapes (8 colours x 6 shapes x 3 sizes) that may occlude one another; its texts use a
closed vocabulary of under 200 words (:data:`WORLD_VOCABULARY`).

``write_world(output_dir, seed, num_train, num_val)`` (or ``python -m xsam_hf.synthetic --output DIR``) writes COCO
panoptic, RefCOCO, ReasonSeg, GranD-f GCG, COCO-Interactive, COCO-VGD (plus a cross-image validation file) and LLaVA
files that the loaders of :mod:`xsam_hf.training.data` read unchanged; see :mod:`.writer` for the layout.
"""

from .cross_image import cross_image_pairs, load_cross_image_vgd
from .scene import Scene, SceneObject, StuffRegion, generate_scene, image_file_name, image_id_for
from .vocabulary import (CANVAS_SIZE, CATEGORIES, CLASS_NAMES, COLOURS, MAX_OBJECTS, SHAPES, SIZES, STUFF,
                         WORLD_VOCABULARY, words)
from .writer import build_image_record, mask_to_rectangles, recipe_sources, write_world

__all__ = [
    "CANVAS_SIZE", "CATEGORIES", "CLASS_NAMES", "COLOURS", "MAX_OBJECTS", "SHAPES", "SIZES", "STUFF",
    "WORLD_VOCABULARY", "Scene", "SceneObject", "StuffRegion", "build_image_record", "cross_image_pairs",
    "generate_scene", "image_file_name", "image_id_for", "load_cross_image_vgd", "mask_to_rectangles",
    "recipe_sources", "words", "write_world",
]
