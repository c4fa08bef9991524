"""The model used when none is named: the embedded default checkpoint (or, in a tree without it, random weights).

The embedded default is a small model (`world` preset) trained from scratch on the package's synthetic world and
shipped inside the package (`xsam_hf/assets/default_model/`, written by `python -m xsam_hf.synthetic.ship`). It knows
the world's vocabulary only: the six shapes, sky / ground / water, the eight colours and the world's relations. A
tree without that folder falls back to the `tiny` preset with seeded random weights and says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "assets" / "default_model"
RANDOM_WEIGHTS_NOTICE = (
    "No trained model given and the embedded default model is missing from this installation: using the 'tiny' "
    "preset with RANDOM weights. The masks are meaningless; this only exercises the whole pipeline offline. Pass "
    "--model DIR_OR_ID."
)


@dataclass
class LoadedModel:
    model: torch.nn.Module
    processor: object
    source: str
    random_weights: bool
    # What generic segmentation segments when no classes are given (the embedded default: the world's classes).
    default_classes: tuple[str, ...] = ()
    default_stuff_classes: tuple[str, ...] = ()


def embedded_default_classes() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(class names, stuff class names) of the synthetic world, which the embedded default was trained on."""
    from .synthetic.vocabulary import CLASS_NAMES, STUFF

    return tuple(CLASS_NAMES), tuple(STUFF)


def embedded_default_available() -> bool:
    return (DEFAULT_MODEL_DIR / "config.json").is_file()


def load_model(name_or_path: str | None = None, device: str | torch.device = "cpu",
               dtype: torch.dtype | None = None) -> LoadedModel:
    """Load `name_or_path` (a folder or Hub id with model and processor), else the embedded default, else the
    random tiny preset (`random_weights=True`)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    embedded = name_or_path is None and embedded_default_available()
    if embedded:
        name_or_path = str(DEFAULT_MODEL_DIR)
    if name_or_path is not None:
        model = AutoModelForImageTextToText.from_pretrained(name_or_path, dtype=dtype)
        processor = AutoProcessor.from_pretrained(name_or_path)
        classes, stuff = embedded_default_classes() if embedded else ((), ())
        return LoadedModel(model.to(device).eval(), processor, "embedded:world" if embedded else name_or_path,
                           random_weights=False, default_classes=classes, default_stuff_classes=stuff)
    return random_tiny_model(device, dtype)


def random_tiny_model(device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> LoadedModel:
    """The `tiny` preset with seeded random weights: the same model on every call, for tests and as the fallback."""
    from .modeling.configuration_xsam import XSamConfig
    from .modeling.modeling_xsam import XSamForSegmentation
    from .processing import XSamProcessor

    generator_state = torch.random.get_rng_state()
    torch.manual_seed(0)
    model = XSamForSegmentation(XSamConfig.from_preset("tiny"))
    torch.random.set_rng_state(generator_state)
    if dtype is not None:
        model = model.to(dtype)
    return LoadedModel(model.to(device).eval(), XSamProcessor.from_preset("tiny"), "preset:tiny (random)", True)
