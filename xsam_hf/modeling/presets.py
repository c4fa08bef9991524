"""Named X-SAM variants: the released model and a tiny one for tests.

Each preset gives `config` (keyword arguments of `XSamConfig`) and `processor` (sizes the processor needs).
`"tiny"` has exactly the sizes of the official golden case (`tests/fixtures/golden_genseg/configs`), so the tests,
the processor and the golden parity check share one fixture.
"""

from __future__ import annotations

import copy

from .configuration_xsam import MASK2FORMER_XSAM, PHI3_MINI_4K, SAM_VIT_LARGE, SIGLIP_SO400M_384
from .nested_dicts import deep_merge

_PRESETS: dict[str, dict] = {
    "x-sam-phi3-mini": {
        "config": {
            "vision_config": {"model_type": "siglip_vision_model", **SIGLIP_SO400M_384},
            "segmentation_encoder_config": {"model_type": "sam_vision_model", **SAM_VIT_LARGE},
            "text_config": {"model_type": "phi3", **PHI3_MINI_4K},
            "decoder_config": dict(MASK2FORMER_XSAM),
        },
        "processor": {"vision_image_size": 384, "segmentation_image_size": 1024, "tokenizer": None},
    },
    "tiny": {
        "config": {
            "vision_config": {
                "model_type": "siglip_vision_model",
                "hidden_size": 48,
                "intermediate_size": 96,
                "num_hidden_layers": 3,
                "num_attention_heads": 4,
                "image_size": 56,
                "patch_size": 14,
                "hidden_act": "gelu_pytorch_tanh",
                "layer_norm_eps": 1e-6,
            },
            "segmentation_encoder_config": {
                "model_type": "sam_vision_model",
                "hidden_size": 32,
                "num_hidden_layers": 8,
                "num_attention_heads": 2,
                "global_attn_indexes": [1, 3, 5, 7],
                "mlp_dim": 128,
                "output_channels": 16,
                "image_size": 128,
                "patch_size": 16,
                "window_size": 3,
                "num_pos_feats": 8,
                # SamVisionConfig's default (1e-10) leaves a randomly initialised encoder near zero.
                "initializer_range": 0.02,
            },
            "text_config": {
                "model_type": "phi3",
                "vocab_size": 378,
                "hidden_size": 64,
                "intermediate_size": 128,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "num_key_value_heads": 4,
                "max_position_embeddings": 4096,
                "original_max_position_embeddings": 4096,
                "rms_norm_eps": 1e-5,
                "sliding_window": 2047,
                "bos_token_id": 1,
                "eos_token_id": 370,
                "pad_token_id": 370,
                "tie_word_embeddings": False,
            },
            "decoder_config": {
                **MASK2FORMER_XSAM,
                "feature_size": 64,
                "mask_feature_size": 64,
                "hidden_dim": 64,
                "encoder_layers": 2,
                "decoder_layers": 5,
                "num_attention_heads": 4,
                "dim_feedforward": 128,
                "encoder_feedforward_dim": 128,
                "num_queries": 8,
            },
            "connector_feature_layers": [4, 6, 8],
            "connector_hidden_size": 16,
            "seg_token_id": 375,
            "phrase_start_token_id": 376,
            "phrase_end_token_id": 377,
        },
        "processor": {"vision_image_size": 56, "segmentation_image_size": 128, "tokenizer": "tiny"},
    },
}


# The embedded default model trained on the synthetic world (xsam_hf/synthetic): a few MB, sized for its 128 px scenes
# of up to 6 objects + 3 stuff regions. Changes from "tiny": SAM patch 8 (16x16 tokens, mask features every 4 px
# instead of 8), 16 queries (a scene has up to 9 segments; tiny's 8 cannot cover them), a 4-layer 128-wide LLM with
# the world's word-level byte BPE (xsam_hf/synthetic/tokenizer.py), SigLIP at 112 px (8x8 tokens), wider encoders.
_PRESETS["world"] = deep_merge(_PRESETS["tiny"], {
    "config": {
        "vision_config": {"hidden_size": 64, "intermediate_size": 128, "image_size": 112},
        "segmentation_encoder_config": {"hidden_size": 64, "num_attention_heads": 4, "mlp_dim": 256,
                                        "output_channels": 32, "patch_size": 8, "window_size": 4,
                                        "num_pos_feats": 16},
        "text_config": {"vocab_size": 1773, "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 4,
                        "max_position_embeddings": 1024, "original_max_position_embeddings": 1024,
                        "sliding_window": 1023, "eos_token_id": 1765, "pad_token_id": 1765},
        "decoder_config": {"num_queries": 16, "train_num_points": 1024},
        "connector_hidden_size": 32,
        "seg_token_id": 1770,
        "phrase_start_token_id": 1771,
        "phrase_end_token_id": 1772,
    },
    "processor": {"vision_image_size": 112, "tokenizer": "world"},
})


def available_presets() -> list[str]:
    return sorted(_PRESETS)


def get_preset(name: str) -> dict:
    """A deep copy of the named preset (`config` kwargs and `processor` sizes)."""
    if name not in _PRESETS:
        raise ValueError(f"Unknown X-SAM preset {name!r}; available: {', '.join(available_presets())}.")
    return copy.deepcopy(_PRESETS[name])
