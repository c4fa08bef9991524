"""The one map from official X-SAM checkpoint keys to this package's layout (architecture spec §7).

Used by the parity tests, by `xsam convert`, and available as `from_pretrained(..., key_mapping=OFFICIAL_KEY_MAPPING)`.
Both code lines of the official repository are covered: [A] (`visual_encoder.`, `segmentor.logit_scale`, the
released weights) and [M] (`vision_encoder.`, `segmentor.class_predictor.*`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

# Ordered (pattern, replacement) pairs; the first matching pattern wins.
OFFICIAL_KEY_MAPPING: dict[str, str] = {
    r"^(?:visual|vision)_encoder\.vision_model\.": "vision_tower.",
    r"^segmentor\.encoder\.": "segmentation_encoder.vision_encoder.",
    r"^segmentor\.pixel_decoder\.": "segmentation_decoder.pixel_decoder.",
    r"^segmentor\.decoder\.": "segmentation_decoder.transformer_module.",
    r"^segmentor\.(?:class_predictor\.)?logit_scale$": "class_head.logit_scale",
    r"^segmentor\.class_predictor\.(?:predictor\.)?(weight|bias)$": r"closed_set_head.\1",
    r"^llm\.": "language_model.",
    r"^visual_projector\.model\.0\.": "vision_projector.linear_1.",
    r"^visual_projector\.model\.2\.": "vision_projector.linear_2.",
    r"^(seg|llm)_projector\.model\.0\.": r"\1_projector.linear_1.",
    r"^(seg|llm)_projector\.model\.2\.": r"\1_projector.linear_2.",
    r"^seg_connector\.model\.(\d+)\.model\.(\d+)\.": r"connector.levels.\1.layers.\2.",
    r"^bg_embeds\.weight$": "background_embedding.weight",
}

# Official keys with no counterpart: SAM's prompt-encoder positional buffer is not on X-SAM's path.
DROPPED_OFFICIAL_KEYS: tuple[str, ...] = (r"^segmentor\.shared_image_embedding\.",)

_COMPILED = [(re.compile(p), r) for p, r in OFFICIAL_KEY_MAPPING.items()]
_DROPPED = [re.compile(p) for p in DROPPED_OFFICIAL_KEYS]


def convert_official_key(key: str) -> str | None:
    """The new name of an official key; None if it is dropped. Raises KeyError for a key no rule knows."""
    if any(p.search(key) for p in _DROPPED):
        return None
    for pattern, replacement in _COMPILED:
        if pattern.search(key):
            return pattern.sub(replacement, key, count=1)
    raise KeyError(f"No conversion rule for official checkpoint key {key!r}.")


def convert_official_state_dict(
    state_dict: Mapping[str, object], strict: bool = True
) -> tuple[dict[str, object], list[str], list[str]]:
    """Rename an official state dict.

    Returns:
        `(converted, dropped, unknown)`: the renamed tensors, the keys dropped on purpose, and (with
        `strict=False`) keys no rule knows, which are left out.
    """
    converted, dropped, unknown = {}, [], []
    for key, value in state_dict.items():
        try:
            new_key = convert_official_key(key)
        except KeyError:
            if strict:
                raise
            unknown.append(key)
            continue
        if new_key is None:
            dropped.append(key)
        else:
            converted[new_key] = value
    return converted, dropped, unknown


def official_keys_for(keys: Iterable[str]) -> dict[str, str]:
    """Inverse lookup for reports: new key -> official key, for the keys given in official form."""
    return {new: old for old in keys if (new := convert_official_key(old)) is not None}
