"""Named X-SAM variants (public path); the table lives beside the config, `xsam_hf/modeling/presets.py`, so that the
config's `from_preset` is a sibling import that remote-code exports can copy."""

from .modeling.presets import available_presets, get_preset

__all__ = ["available_presets", "get_preset"]
