"""XSamConfig: the X-SAM composite configuration.

Sub-configs (each accepted as a config object or a dict, like LLaVA's):
- `vision_config`: the SigLIP vision tower (fixed resolution; the released SigLIP2-so400m-patch14-384 checkpoint is
  stored with the SigLIP architecture, model_type `siglip_vision_model`).
- `segmentation_encoder_config`: the SAM ViT image encoder (`sam_vision_model`).
- `text_config`: any causal LM (`AutoModelForCausalLM`); default Phi-3-mini-4k-instruct with the vocabulary resized
  to 32014 rows after `<SEG>`, `<p>`, `</p>` are added.
- `decoder_config`: the Mask2Former pixel decoder and masked-attention decoder, and the Mask2Former loss settings
  (class/mask/dice weights, no-object weight, point sampling). No backbone is used; transformers fills in a default
  Swin entry that X-SAM ignores.

Defaults reproduce the released model (architecture spec §1). `XSamConfig.from_preset(name)` gives the named variants
of `xsam_hf.presets`.
"""

from __future__ import annotations

import math
from typing import Literal

from transformers import Mask2FormerConfig
from transformers.configuration_utils import PreTrainedConfig, SubConfigSpec
from transformers.models.auto.configuration_auto import AutoConfig

# Released component sizes (architecture spec §1.1, §1.6, §1.7; HF configs of the named checkpoints).
SIGLIP_SO400M_384 = {
    "hidden_size": 1152,
    "intermediate_size": 4304,
    "num_hidden_layers": 27,
    "num_attention_heads": 16,
    "image_size": 384,
    "patch_size": 14,
    "hidden_act": "gelu_pytorch_tanh",
    "layer_norm_eps": 1e-6,
}
SAM_VIT_LARGE = {
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "global_attn_indexes": [5, 11, 17, 23],
    "mlp_dim": 4096,
    "output_channels": 256,
    "image_size": 1024,
    "patch_size": 16,
    "window_size": 14,
    "num_pos_feats": 128,
}
PHI3_MINI_4K = {
    "vocab_size": 32014,
    "hidden_size": 3072,
    "intermediate_size": 8192,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "max_position_embeddings": 4096,
    "original_max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5,
    "sliding_window": 2047,
    "bos_token_id": 1,
    "eos_token_id": 32000,
    "pad_token_id": 32000,
    "tie_word_embeddings": False,
}
MASK2FORMER_XSAM = {
    "feature_size": 256,
    "mask_feature_size": 256,
    "hidden_dim": 256,
    "encoder_layers": 6,
    "decoder_layers": 10,
    "num_attention_heads": 8,
    "dim_feedforward": 2048,
    "encoder_feedforward_dim": 1024,
    "num_queries": 200,
    "common_stride": 4,
    "feature_strides": [4, 8, 16, 32],
    "dropout": 0.0,
    "no_object_weight": 0.1,
    "class_weight": 2.0,
    "mask_weight": 5.0,
    "dice_weight": 5.0,
    "train_num_points": 12544,
    "oversample_ratio": 3.0,
    "importance_sample_ratio": 0.75,
}


class XSamConfig(PreTrainedConfig):
    r"""
    Configuration of [`XSamForSegmentation`].

    Args:
        vision_config, segmentation_encoder_config, text_config, decoder_config:
            Sub-configurations (see the module docstring).
        stage (`str`): which form of the network to build. `"s3"` (default) is the full model; `"s1"` is the
            segmentor alone (SAM encoder, connector, Mask2Former decoder and a closed-set class head of
            `num_closed_set_classes + 1` outputs); `"s2"` is the alignment form (both encoders, projectors, LLM; no
            connector or decoder).
        vision_feature_layer (`int`): SigLIP hidden state fed to the LLM (-2: output of the second-to-last layer,
            before the post-layernorm).
        vision_pad_to_square (`bool`): whether the SigLIP image is padded to a square with the mean colour before
            resizing (how the released model was evaluated). Read by the processor.
        segmentation_feature_layer (`int`): SAM hidden state (channels-last, index 0 = patch embedding) that is
            pixel-unshuffled and projected into LLM tokens.
        segmentation_downsample_ratio (`float`): pixel-shuffle ratio before `seg_projector` (0.5: 2x2 -> 1 token).
        connector_feature_layers (`list[int]`): SAM hidden states that feed the connector, fine to coarse.
        connector_scale_factors (`list[float]`): pixel-shuffle scale of each connector level (2: depth-to-space,
            0.5: space-to-depth), giving strides 8, 16, 32 for a 16-pixel patch.
        connector_hidden_size (`int`): bottleneck width of each connector level.
        projector_hidden_act (`str`): activation of the three projector MLPs.
        image_token_index, region_token_index (`int`): the placeholder ids of `<image>` and `<region>` in
            `input_ids` (not vocabulary entries; the official -200 and -300).
        seg_token_id, phrase_start_token_id, phrase_end_token_id (`int`): vocabulary ids of `<SEG>`, `<p>`, `</p>`.
        region_num_points (`int`): points sampled inside each visual-prompt mask.
        logit_scale_init (`float`): initial value of the learnable log-scale of the cosine classifier.
        class_logit_clamp (`float`): class logits are clamped to +-this value (500 in the released code).
        num_closed_set_classes (`int`): classes of the S1 closed-set head (COCO panoptic: 133).
        lm_loss_weight, seg_loss_weight (`float`): weights of the causal-LM loss and of the sum of weighted
            Mask2Former terms in the total loss.
    """

    model_type = "xsam"
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(
            config_class=AutoConfig, model_type="siglip_vision_model", init_kwargs=SIGLIP_SO400M_384
        ),
        "segmentation_encoder_config": SubConfigSpec(
            config_class=AutoConfig, model_type="sam_vision_model", init_kwargs=SAM_VIT_LARGE
        ),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="phi3", init_kwargs=PHI3_MINI_4K),
        "decoder_config": SubConfigSpec(config_class=Mask2FormerConfig, init_kwargs=MASK2FORMER_XSAM),
    }

    vision_config: dict | PreTrainedConfig | None = None
    segmentation_encoder_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    decoder_config: dict | PreTrainedConfig | None = None

    stage: Literal["s1", "s2", "s3"] = "s3"
    vision_feature_layer: int = -2
    vision_pad_to_square: bool = True
    segmentation_feature_layer: int = -2
    segmentation_downsample_ratio: float = 0.5
    connector_feature_layers: list[int] | tuple[int, ...] = (12, 18, 24)
    connector_scale_factors: list[float] | tuple[float, ...] = (2.0, 1.0, 0.5)
    connector_hidden_size: int = 512
    projector_hidden_act: str = "gelu"
    image_token_index: int = -200
    region_token_index: int = -300
    seg_token_id: int = 32011
    phrase_start_token_id: int = 32012
    phrase_end_token_id: int = 32013
    region_num_points: int = 256
    logit_scale_init: float = math.log(1 / 0.07)
    class_logit_clamp: float = 500.0
    num_closed_set_classes: int = 133
    lm_loss_weight: float = 1.0
    seg_loss_weight: float = 1.0
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.stage not in ("s1", "s2", "s3"):
            raise ValueError(f"`stage` must be 's1', 's2' or 's3', got {self.stage!r}.")
        self.connector_feature_layers = list(self.connector_feature_layers)
        self.connector_scale_factors = [float(s) for s in self.connector_scale_factors]
        if len(self.connector_feature_layers) != 3 or len(self.connector_scale_factors) != 3:
            raise ValueError(
                "The Mask2Former pixel decoder takes exactly 3 feature levels: `connector_feature_layers` and "
                f"`connector_scale_factors` must have 3 entries, got {self.connector_feature_layers} and "
                f"{self.connector_scale_factors}."
            )
        # X-SAM has no Mask2Former backbone; transformers fills in a default Swin config that would only add noise
        # (and attention-implementation warnings for a sub-model that does not exist).
        self.decoder_config.backbone_config = None
        # The decoder reads the connector outputs, whose channels follow from the SAM width and the scales.
        sam_width = self.segmentation_encoder_config.hidden_size
        self.decoder_config.feature_channels = self.connector_output_channels(sam_width)

    def connector_output_channels(self, sam_width: int) -> list[int]:
        """Channels of each connector level: a conv to `width * s` channels, then a pixel shuffle by `s` that divides
        the channels by `s**2`, so `width / s` in all (1024 -> 512, 1024, 2048 for s = 2, 1, 0.5)."""
        return [int(round(sam_width / s)) for s in self.connector_scale_factors]

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "XSamConfig":
        """Build a named variant (`"x-sam-phi3-mini"`, `"tiny"`, ...); keyword arguments override top-level fields."""
        from .presets import get_preset  # a sibling, so remote-code exports carry it along

        return cls(**{**get_preset(name)["config"], **overrides})


__all__ = ["XSamConfig"]
