"""The segmentation side of X-SAM: connector, `<SEG>`-conditioned Mask2Former decoder, and class heads."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from transformers.models.mask2former.modeling_mask2former import (
    Mask2FormerConfig,
    Mask2FormerPixelDecoder,
    Mask2FormerPreTrainedModel,
    Mask2FormerTransformerModule,
)
from transformers.models.sam.modeling_sam import SamLayerNorm

from .projection import pixel_shuffle


class XSamConnectorLevel(nn.Module):
    """One pyramid level from a SAM block output: 1x1 -> 3x3 -> 1x1 convs (no bias), each followed by a
    channels-first LayerNorm, then a pixel shuffle by `scale` (2: stride 16 -> 8; 0.5: stride 16 -> 32)."""

    def __init__(self, in_channels: int, hidden_channels: int, scale: float):
        super().__init__()
        out_channels = int(in_channels * scale)
        self.scale = scale
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, hidden_channels, kernel_size=1, bias=False),
            SamLayerNorm(hidden_channels, data_format="channels_first"),
            nn.Conv2d(hidden_channels, hidden_channels, kernel_size=3, padding=1, bias=False),
            SamLayerNorm(hidden_channels, data_format="channels_first"),
            nn.Conv2d(hidden_channels, out_channels, kernel_size=1, bias=False),
            SamLayerNorm(out_channels, data_format="channels_first"),
        )

    def forward(self, hidden_state: torch.Tensor) -> torch.Tensor:
        """`(B, h, w, C)` channels-last SAM block output -> `(B, C / scale, h * scale, w * scale)`."""
        features = self.layers(hidden_state.permute(0, 3, 1, 2))
        features = pixel_shuffle(features.permute(0, 2, 3, 1), self.scale)
        # Contiguous NCHW: a channels-last-strided input makes the pixel decoder's convs pick another kernel.
        return features.permute(0, 3, 1, 2).contiguous()


class XSamConnector(nn.Module):
    """SAM block outputs -> the 3-level feature pyramid (strides 8, 16, 32) that the pixel decoder reads."""

    def __init__(self, in_channels: int, hidden_channels: int, scale_factors: list[float]):
        super().__init__()
        self.levels = nn.ModuleList(XSamConnectorLevel(in_channels, hidden_channels, s) for s in scale_factors)

    def forward(self, hidden_states: list[torch.Tensor]) -> list[torch.Tensor]:
        return [level(state) for level, state in zip(self.levels, hidden_states)]


class XSamMaskedAttentionDecoder(Mask2FormerTransformerModule):
    """Mask2Former's masked-attention transformer module whose content queries also receive the `<SEG>` embedding.

    Upstream's forward is reused unchanged: a pre-hook on the inner decoder adds the `<SEG>` embedding to the
    content queries (`queries_features`) it is about to receive. The positional queries are not modified.
    """

    def forward(
        self,
        multi_scale_features: list[torch.Tensor],
        mask_features: torch.Tensor,
        seg_embeddings: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ):
        """`seg_embeddings`: `(N, 1, hidden)`, one per decoder instance, broadcast over the queries."""
        if seg_embeddings is None:
            return super().forward(multi_scale_features, mask_features, output_hidden_states, output_attentions)

        def add_seg_to_content_queries(module, args, kwargs):
            # inputs_embeds is (num_queries, batch, hidden) there.
            kwargs["inputs_embeds"] = kwargs["inputs_embeds"] + seg_embeddings.transpose(0, 1)
            return args, kwargs

        handle = self.decoder.register_forward_pre_hook(add_seg_to_content_queries, with_kwargs=True)
        try:
            return super().forward(multi_scale_features, mask_features, output_hidden_states, output_attentions)
        finally:
            handle.remove()


class XSamSegmentationDecoder(Mask2FormerPreTrainedModel):
    """Mask2Former's pixel decoder (deformable-attention encoder + one FPN level) and masked-attention decoder,
    built from the decoder config alone (no backbone). A `Mask2FormerPreTrainedModel`, so upstream's weight
    initialisation applies to both parts."""

    # Its attention (nn.MultiheadAttention, deformable attention) ignores the attention-implementation setting, so
    # any value the composite model passes down is accepted rather than refused.
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True

    def __init__(self, config: Mask2FormerConfig):
        super().__init__(config)
        self.pixel_decoder = Mask2FormerPixelDecoder(config, feature_channels=list(config.feature_channels))
        self.transformer_module = XSamMaskedAttentionDecoder(in_features=config.feature_size, config=config)
        self.post_init()


def _very_negative(dtype: torch.dtype) -> float:
    # The released code fills padded classes with -1e9; fp16 cannot hold that.
    return max(-1e9, torch.finfo(dtype).min / 2)


class XSamCosineClassHead(nn.Module):
    """Open-vocabulary classifier: `exp(logit_scale) * cos(query, condition)`, clamped, padded classes masked."""

    def __init__(self, logit_scale_init: float, clamp: float):
        super().__init__()
        self.logit_scale_init = logit_scale_init
        self.clamp = clamp
        self.logit_scale = nn.Parameter(torch.full((1,), logit_scale_init))

    def forward(self, queries: torch.Tensor, conditions: torch.Tensor, condition_mask: torch.Tensor) -> torch.Tensor:
        """
        Args:
            queries: `(N, Q, D)` layer-normed query states.
            conditions: `(N, C, D)` class embeddings (the last one is the background).
            condition_mask: `(N, C)` bool, False for padding.
        Returns:
            `(N, Q, C)` class logits.
        """
        cosine = torch.einsum("nqd,ncd->nqc", F.normalize(queries, dim=-1), F.normalize(conditions, dim=-1))
        logits = (self.logit_scale.exp() * cosine).clamp(-self.clamp, self.clamp)
        return logits.masked_fill(~condition_mask[:, None, :], _very_negative(logits.dtype))
