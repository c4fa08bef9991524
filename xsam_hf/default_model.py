"""The model used when none is named: the embedded default checkpoint, or (until it ships) the random tiny preset.

The embedded default is a small model trained from scratch on the package's synthetic world and shipped inside the
package (`xsam_hf/assets/default_model/`). Until that checkpoint exists, `load_default_model` returns the `tiny`
preset with seeded random weights and says so: its masks are noise, it only shows the whole path working offline.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "assets" / "default_model"
RANDOM_WEIGHTS_NOTICE = (
    "No trained model given and no embedded default model is shipped yet: using the 'tiny' preset with RANDOM "
    "weights. The masks are meaningless; this only exercises the whole pipeline offline. Pass --model DIR_OR_ID."
)


@dataclass
class LoadedModel:
    model: torch.nn.Module
    processor: object
    source: str
    random_weights: bool


def embedded_default_available() -> bool:
    return (DEFAULT_MODEL_DIR / "config.json").is_file()


def load_model(name_or_path: str | None = None, device: str | torch.device = "cpu",
               dtype: torch.dtype | None = None) -> LoadedModel:
    """Load `name_or_path` (a folder or Hub id with model and processor), else the embedded default, else the
    random tiny preset (`random_weights=True`)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from .modeling.configuration_xsam import XSamConfig
    from .modeling.modeling_xsam import XSamForSegmentation
    from .processing import XSamProcessor

    if name_or_path is None and embedded_default_available():
        name_or_path = str(DEFAULT_MODEL_DIR)
    if name_or_path is not None:
        model = AutoModelForImageTextToText.from_pretrained(name_or_path, dtype=dtype)
        processor = AutoProcessor.from_pretrained(name_or_path)
        return LoadedModel(model.to(device).eval(), processor, name_or_path, random_weights=False)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(0)  # the same random model on every run, so outputs are reproducible
    model = XSamForSegmentation(XSamConfig.from_preset("tiny"))
    torch.random.set_rng_state(generator_state)
    if dtype is not None:
        model = model.to(dtype)
    return LoadedModel(model.to(device).eval(), XSamProcessor.from_preset("tiny"), "preset:tiny (random)", True)
