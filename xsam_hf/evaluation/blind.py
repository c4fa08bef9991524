"""Blind evaluation: the model with every image feature zeroed, so a score can be compared with what the model gets
from the text (and the prompt layout) alone.

Everything the model knows about an image passes through ``get_image_features`` (the forward, the region tokens of
visual prompts, including cross-image ones, and generation all call it), so zeroing its outputs blinds the model:
SigLIP tokens, SAM tokens and the decoder's feature pyramid.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

_ZEROED_TOKENS = ("vision_tokens", "segmentation_tokens")


def blind(model: torch.nn.Module) -> torch.nn.Module:
    """Patch ``model.get_image_features`` (on the instance) to return zeros; returns ``model``.

    Permanent for this instance; use :func:`blinded` to restore it afterwards."""
    original = model.get_image_features

    def zeroed(*args, **kwargs):
        features = original(*args, **kwargs)
        for key in _ZEROED_TOKENS:
            if getattr(features, key, None) is not None:
                setattr(features, key, torch.zeros_like(getattr(features, key)))
        if getattr(features, "feature_pyramid", None) is not None:
            features.feature_pyramid = tuple(torch.zeros_like(t) for t in features.feature_pyramid)
        return features

    model.get_image_features = zeroed
    return model


@contextmanager
def blinded(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``with blinded(model):`` the model is blind; afterwards its ``get_image_features`` is what it was before."""
    own = vars(model)
    had_own, previous = "get_image_features" in own, own.get("get_image_features")
    blind(model)
    try:
        yield model
    finally:
        if had_own:
            model.get_image_features = previous
        else:
            del model.get_image_features
