"""XSamForSegmentation: the X-SAM network (SigLIP + SAM encoders, a causal LM, and a `<SEG>`-conditioned Mask2Former).

Data flow of the full (S3) model, one image per sample:
1. `get_image_features`: SigLIP `hidden_states[-2]` -> `vision_projector` (LLM tokens); SAM `hidden_states[-2]` ->
   pixel shuffle 0.5 -> `seg_projector` (LLM tokens, also the map `<region>` prompts are pooled from); three SAM
   block outputs -> `connector` -> the stride-8/16/32 pyramid for the pixel decoder.
2. The `<image>` placeholder of each sample is replaced by SigLIP tokens then SAM tokens; each `<region>` placeholder
   by one pooled region token; padding is re-applied on the right.
3. The LLM runs once; `llm_projector` maps its last hidden states into the decoder width.
4. Each `<SEG>` opens one decoder instance: its embedding is added to the decoder's content queries; its classes are
   the means of the projected states over each `<p>...</p>` span (tags included) plus a learned background.
5. Class logits are scaled, clamped cosine similarities of the layer-normed queries with the classes; mask logits
   come from Mask2Former's mask predictor at 1/8 of the SAM canvas.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModel, AutoModelForCausalLM, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput, logging

from .configuration_xsam import XSamConfig
from .loss import XSamSegmentationLoss
from .projection import XSamProjector, pixel_shuffle, region_features
from .segmentation import XSamConnector, XSamCosineClassHead, XSamSegmentationDecoder
from .spans import condition_ids, seg_ids
from .stage_loading import STAGE_CHAINING, StageLoadReport, load_stage_weights

logger = logging.get_logger(__name__)


@dataclass
class XSamImageFeatures(ModelOutput):
    """Encoder outputs of a batch of images, computed once and reusable across prompts (`image_features=`).

    Args:
        vision_tokens: `(B, N_v, D_llm)` projected SigLIP tokens (None in the S1 form).
        segmentation_tokens: `(B, N_s, D_llm)` projected, pixel-unshuffled SAM tokens (None in the S1 form).
        segmentation_grid: `(h, w)` layout of `segmentation_tokens` (e.g. 32 x 32 for a 1024 canvas).
        feature_pyramid: connector outputs `(B, C_l, H_l, W_l)` at strides 8, 16, 32 (None in the S2 form).
    """

    vision_tokens: torch.Tensor | None = None
    segmentation_tokens: torch.Tensor | None = None
    segmentation_grid: tuple[int, int] | None = None
    feature_pyramid: tuple[torch.Tensor, ...] | None = None

    def select(self, indices: torch.Tensor | list[int]) -> "XSamImageFeatures":
        """The features of the given batch indices (for prompting cached images in any order)."""
        indices = torch.as_tensor(indices, dtype=torch.long)
        pick = lambda t: None if t is None else t.index_select(0, indices.to(t.device))  # noqa: E731
        return XSamImageFeatures(
            vision_tokens=pick(self.vision_tokens),
            segmentation_tokens=pick(self.segmentation_tokens),
            segmentation_grid=self.segmentation_grid,
            feature_pyramid=None if self.feature_pyramid is None else tuple(pick(t) for t in self.feature_pyramid),
        )


@dataclass
class XSamSegmentationOutput(ModelOutput):
    """Output of [`XSamForSegmentation`].

    N is the number of decoder instances: one per `<SEG>` token (a sample with one `<SEG>` classifies all its
    conditions; a sample with K `<SEG>` tokens, as in multi-expression referring, gives K instances).

    Args:
        loss: `lm_loss_weight * lm_loss + seg_loss_weight * seg_loss` (whichever parts have targets).
        lm_loss: causal-LM cross-entropy over tokens whose label is not -100.
        seg_loss: weighted sum of the Mask2Former terms (class 2, mask 5, dice 5; every decoder layer).
        loss_dict: the unweighted Mask2Former terms (`loss_cross_entropy`, `loss_mask`, `loss_dice`, with `_{i}`
            suffixes for the auxiliary layers).
        logits: `(B, T, vocab)` LM logits over the expanded sequence (image tokens inserted).
        past_key_values: the LLM cache, when `use_cache=True`.
        class_queries_logits: `(N, Q, C_max + 1)`; the last column is the background ("no object"); padded classes
            are very negative. In the S1 form: `(B, Q, num_closed_set_classes + 1)`.
        masks_queries_logits: `(N, Q, h, w)` mask logits at 1/8 of the SAM canvas (last decoder layer).
        auxiliary_logits: for every earlier decoder layer, a dict with the two entries above.
        instance_sample_index: `(N,)` the batch sample of each instance.
        instance_condition_index: `(N,)` for multi-`<SEG>` samples the condition (class) the instance targets,
            -1 for single-`<SEG>` samples.
        condition_mask: `(N, C_max + 1)` bool, True for the classes the prompt named (and the background).
        attention_mask: `(B, T)` the expanded attention mask (right padded).
        last_hidden_state: `(B, T, D_llm)` the LLM's last (post-norm) hidden states.
    """

    loss: torch.FloatTensor | None = None
    lm_loss: torch.FloatTensor | None = None
    seg_loss: torch.FloatTensor | None = None
    loss_dict: dict[str, torch.Tensor] | None = None
    logits: torch.FloatTensor | None = None
    past_key_values: object | None = None
    class_queries_logits: torch.FloatTensor | None = None
    masks_queries_logits: torch.FloatTensor | None = None
    auxiliary_logits: list[dict[str, torch.FloatTensor]] | None = None
    instance_sample_index: torch.LongTensor | None = None
    instance_condition_index: torch.LongTensor | None = None
    condition_mask: torch.BoolTensor | None = None
    attention_mask: torch.LongTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None


@dataclass
class _MergedInputs:
    """The LLM input after placeholders are expanded, with per-position labels and span ids."""

    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor | None
    condition_ids: torch.Tensor
    seg_ids: torch.Tensor


@dataclass
class _Instances:
    """Decoder instances gathered from the projected LLM states."""

    seg_embeddings: torch.Tensor  # (N, 1, D)
    conditions: torch.Tensor  # (N, C_max + 1, D), background last
    condition_mask: torch.Tensor  # (N, C_max + 1)
    sample_index: torch.Tensor  # (N,)
    condition_index: torch.Tensor  # (N,)
    label_offset: torch.Tensor  # (N,) added to an instance's local class labels (cross-batch packing)


def _splice(sequence: torch.Tensor, position: int, insert: torch.Tensor) -> torch.Tensor:
    """Replace the element at `position` (a placeholder) with the rows of `insert`."""
    return torch.cat([sequence[:position], insert, sequence[position + 1 :]])


def _splice_fill(sequence: torch.Tensor, position: int, count: int, value: int) -> torch.Tensor:
    """Replace the element at `position` with `count` copies of `value`."""
    return _splice(sequence, position, sequence.new_full((count,), value))


def _pad_right(sequence: torch.Tensor, length: int, value: float) -> torch.Tensor:
    """Pad along the first dimension to `length` with `value`."""
    return torch.cat([sequence, sequence.new_full((length - sequence.shape[0], *sequence.shape[1:]), value)])


class XSamPreTrainedModel(PreTrainedModel):
    config: XSamConfig
    config_class = XSamConfig
    base_model_prefix = ""
    main_input_name = "input_ids"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _no_split_modules = ["XSamConnectorLevel", "XSamSegmentationDecoder"]
    _skip_keys_device_placement = ["past_key_values"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module):
        # Sub-models (SigLIP, SAM, the LLM, the Mask2Former decoder) initialise themselves; these are X-SAM's own.
        std = getattr(self.config.text_config, "initializer_range", 0.02)
        if isinstance(module, XSamCosineClassHead):
            init.constant_(module.logit_scale, module.logit_scale_init)
        elif isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Conv2d):
            init.kaiming_uniform_(module.weight, a=1)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)


class XSamForSegmentation(XSamPreTrainedModel):
    """X-SAM: segment anything a prompt asks for, with one multimodal LLM. See the module docstring for the flow.

    The parts built depend on `config.stage`: `"s3"` everything; `"s1"` the segmentor (SAM encoder, connector,
    decoder, closed-set head); `"s2"` the encoders, projectors and LLM.
    """

    def __init__(self, config: XSamConfig):
        super().__init__(config)
        stage = config.stage
        sam_width = config.segmentation_encoder_config.hidden_size
        self.segmentation_encoder = AutoModel.from_config(config.segmentation_encoder_config)
        if stage in ("s2", "s3"):
            text_width = config.text_config.hidden_size
            self.vision_tower = AutoModel.from_config(config.vision_config)
            self.vision_projector = XSamProjector(
                config.vision_config.hidden_size, text_width, config.projector_hidden_act
            )
            unshuffled_width = int(round(sam_width / config.segmentation_downsample_ratio**2))
            self.seg_projector = XSamProjector(unshuffled_width, text_width, config.projector_hidden_act)
            self.language_model = AutoModelForCausalLM.from_config(config.text_config)
        if stage in ("s1", "s3"):
            decoder_width = config.decoder_config.hidden_dim
            self.connector = XSamConnector(sam_width, config.connector_hidden_size, config.connector_scale_factors)
            self.segmentation_decoder = XSamSegmentationDecoder(config.decoder_config)
        if stage == "s3":
            self.llm_projector = XSamProjector(text_width, decoder_width, config.projector_hidden_act)
            self.background_embedding = nn.Embedding(1, decoder_width)
            self.class_head = XSamCosineClassHead(config.logit_scale_init, config.class_logit_clamp)
        if stage == "s1":
            self.closed_set_head = nn.Linear(decoder_width, config.num_closed_set_classes + 1)
        self.post_init()

    # ----------------------------------------------------------------------------------------------------------
    # Embedding accessors (so resize_token_embeddings, peft and generate work through the LLM).
    def get_input_embeddings(self):
        return self.language_model.get_input_embeddings() if hasattr(self, "language_model") else None

    def set_input_embeddings(self, value):
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self):
        return self.language_model.get_output_embeddings() if hasattr(self, "language_model") else None

    def set_output_embeddings(self, value):
        self.language_model.set_output_embeddings(value)

    def load_stage_weights(
        self,
        source,
        from_stage: str | None = None,
        prefixes: list[str] | None = None,
    ) -> StageLoadReport:
        """Load an earlier stage's weights non-strictly and report what was loaded and what stayed at init.

        Args:
            source: a directory saved with `save_pretrained`, a weights file, or a state dict (this package's names;
                convert official checkpoints with `xsam_hf.modeling.conversion` first).
            from_stage: `"s1"` or `"s2"`: take the parts the paper's chaining takes from that stage (S2 <- S1's SAM;
                S3 <- S1's SAM, connector and decoder, and S2's projectors). Ignored if `prefixes` is given.
            prefixes: explicit parameter-name prefixes to load.
        """
        if prefixes is None and from_stage is not None:
            key = (from_stage, self.config.stage)
            if key not in STAGE_CHAINING:
                raise ValueError(f"No chaining from stage {from_stage!r} into a {self.config.stage!r} model.")
            prefixes = list(STAGE_CHAINING[key])
        report = load_stage_weights(self, source, prefixes)
        logger.info("Stage weights: %s", report.summary())
        return report

    # ----------------------------------------------------------------------------------------------------------
    # Image features
    def get_image_features(
        self, pixel_values: torch.Tensor | None = None, extra_pixel_values: torch.Tensor | None = None
    ) -> XSamImageFeatures:
        """Run the encoders once.

        Args:
            pixel_values: `(B, 3, S, S)` SigLIP input (ignored by the S1 form).
            extra_pixel_values: `(B, 3, C, C)` SAM canvas.
        """
        vision_tokens = None
        if pixel_values is not None and hasattr(self, "vision_tower"):
            vision_out = self.vision_tower(
                pixel_values=pixel_values.to(self.vision_tower.dtype), output_hidden_states=True
            )
            vision_tokens = self.vision_projector(vision_out.hidden_states[self.config.vision_feature_layer])
        segmentation_tokens, grid, pyramid = None, None, None
        if extra_pixel_values is not None:
            sam_out = self.segmentation_encoder(
                pixel_values=extra_pixel_values.to(self.segmentation_encoder.dtype), output_hidden_states=True
            )
            hidden_states = sam_out.hidden_states  # channels-last, index 0 = patch + position embedding
            if hasattr(self, "seg_projector"):
                unshuffled = pixel_shuffle(
                    hidden_states[self.config.segmentation_feature_layer], self.config.segmentation_downsample_ratio
                )
                grid = tuple(unshuffled.shape[1:3])
                segmentation_tokens = self.seg_projector(unshuffled.flatten(1, 2))
            if hasattr(self, "connector"):
                pyramid = tuple(self.connector([hidden_states[i] for i in self.config.connector_feature_layers]))
        return XSamImageFeatures(
            vision_tokens=vision_tokens,
            segmentation_tokens=segmentation_tokens,
            segmentation_grid=grid,
            feature_pyramid=pyramid,
        )

    def _region_tokens(
        self,
        image_features: XSamImageFeatures,
        region_masks: list[torch.Tensor | None],
        region_image_indices: list[torch.Tensor] | None,
        region_pixel_values: torch.Tensor | None,
    ) -> list[torch.Tensor]:
        """One pooled token per visual prompt, per sample: `[(R_i, D_llm)]`."""
        tokens_map = image_features.segmentation_tokens
        batch_size = tokens_map.shape[0]
        if region_pixel_values is not None:
            extra = self.get_image_features(extra_pixel_values=region_pixel_values).segmentation_tokens
            tokens_map = torch.cat([tokens_map, extra.to(tokens_map.dtype)], dim=0)
        height, width = image_features.segmentation_grid
        grid_maps = tokens_map.transpose(1, 2).reshape(tokens_map.shape[0], -1, height, width)
        per_sample = []
        for b, masks in enumerate(region_masks):
            if masks is None or masks.shape[0] == 0:
                per_sample.append(tokens_map.new_zeros(0, tokens_map.shape[-1]))
                continue
            if region_image_indices is not None and region_image_indices[b] is not None:
                sources = torch.as_tensor(region_image_indices[b], dtype=torch.long).flatten()
            else:
                sources = torch.full((masks.shape[0],), b, dtype=torch.long)
            if sources.numel() != masks.shape[0]:
                raise ValueError(
                    f"Sample {b}: {masks.shape[0]} region masks but {sources.numel()} region_image_indices."
                )
            if sources.min() < 0 or sources.max() >= grid_maps.shape[0]:
                raise ValueError(
                    f"Sample {b}: region_image_indices {sources.tolist()} must lie in [0, {grid_maps.shape[0]}): "
                    f"{batch_size} batch images then {grid_maps.shape[0] - batch_size} region_pixel_values images."
                )
            borrowed = (sources < batch_size) & (sources != b)
            if not self.training and borrowed.any():
                raise ValueError(
                    f"Sample {b} takes a visual prompt from batch image {sources[borrowed].tolist()}: at inference each "
                    "sample is independent; pass the prompt's image in region_pixel_values instead (cross-image VGD)."
                )
            per_sample.append(
                region_features(
                    grid_maps.index_select(0, sources.to(grid_maps.device)),
                    masks.to(grid_maps.device),
                    self.config.region_num_points,
                    deterministic=not self.training,
                )
            )
        return per_sample

    # ----------------------------------------------------------------------------------------------------------
    # Merging image and region tokens into the LLM input
    def _merge_inputs(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor | None,
        image_features: XSamImageFeatures | None,
        region_tokens: list[torch.Tensor] | None,
    ) -> _MergedInputs:
        config = self.config
        image_id, region_id = config.image_token_index, config.region_token_index
        conds = condition_ids(input_ids, config.phrase_start_token_id, config.phrase_end_token_id)
        segs = seg_ids(input_ids, config.seg_token_id)
        is_placeholder = (input_ids == image_id) | (input_ids == region_id)
        text_embeds = self.get_input_embeddings()(input_ids.masked_fill(is_placeholder, 0))

        visual = None
        if image_features is not None and image_features.vision_tokens is not None:
            parts = [image_features.vision_tokens, image_features.segmentation_tokens]
            visual = torch.cat([p for p in parts if p is not None], dim=1).to(text_embeds.dtype)

        rows = []
        for b in range(input_ids.shape[0]):
            keep = attention_mask[b].bool()
            ids, embeds = input_ids[b][keep], text_embeds[b][keep]
            row_labels = labels[b][keep] if labels is not None else None
            row_conds, row_segs = conds[b][keep], segs[b][keep]

            region_positions = (ids == region_id).nonzero().flatten()
            supplied = 0 if region_tokens is None else region_tokens[b].shape[0]
            if region_positions.numel() != supplied:
                raise ValueError(
                    f"Sample {b} has {region_positions.numel()} <region> tokens but {supplied} visual prompts were "
                    "given (region_masks): each <region> needs exactly one prompt, in order."
                )
            if supplied:
                embeds = embeds.index_put((region_positions,), region_tokens[b].to(embeds.dtype))

            image_positions = (ids == image_id).nonzero().flatten()
            if visual is None:
                if image_positions.numel():
                    raise ValueError(f"Sample {b} has an <image> token but no image was given (pixel_values).")
            else:
                if image_positions.numel() != 1:
                    raise ValueError(
                        f"Sample {b} has {image_positions.numel()} <image> tokens; X-SAM takes exactly one image "
                        "per sample, marked by one <image> token in the prompt."
                    )
                position = int(image_positions[0])
                embeds = _splice(embeds, position, visual[b])
                row_conds = _splice_fill(row_conds, position, visual.shape[1], -1)
                row_segs = _splice_fill(row_segs, position, visual.shape[1], -1)
                if row_labels is not None:
                    row_labels = _splice_fill(row_labels, position, visual.shape[1], -100)
            rows.append((embeds, row_labels, row_conds, row_segs))

        length = max(r[0].shape[0] for r in rows)
        ones = [torch.ones(r[0].shape[0], dtype=attention_mask.dtype, device=r[0].device) for r in rows]
        return _MergedInputs(
            inputs_embeds=torch.stack([_pad_right(r[0], length, 0) for r in rows]),
            attention_mask=torch.stack([_pad_right(o, length, 0) for o in ones]),
            labels=torch.stack([_pad_right(r[1], length, -100) for r in rows]) if labels is not None else None,
            condition_ids=torch.stack([_pad_right(r[2], length, -1) for r in rows]),
            seg_ids=torch.stack([_pad_right(r[3], length, -1) for r in rows]),
        )

    # ----------------------------------------------------------------------------------------------------------
    # Decoder instances from the LLM states
    def _gather_instances(
        self, projected: torch.Tensor, cond_ids: torch.Tensor, seg_positions: torch.Tensor, pack_across_batch: bool
    ) -> _Instances | None:
        """Build one decoder instance per `<SEG>`.

        A sample with one `<SEG>` classifies all its conditions. A sample with K > 1 `<SEG>` tokens must have K
        conditions; instance k targets condition k (multi-expression referring). With `pack_across_batch` (referring
        training), every instance classifies against all expressions of the batch, so its class labels are offset.
        """
        seg_list, cond_list, sample_idx, cond_idx = [], [], [], []
        for b in range(projected.shape[0]):
            n_cond = int(cond_ids[b].max()) + 1 if (cond_ids[b] >= 0).any() else 0
            seg_pos = (seg_positions[b] >= 0).nonzero().flatten()
            n_seg = seg_pos.numel()
            if n_seg == 0:
                if n_cond:
                    raise ValueError(
                        f"Sample {b} names {n_cond} classes with <p>...</p> but has no <SEG> token: a segmentation "
                        "answer needs one (for example 'Sure, it is <SEG>.')."
                    )
                continue
            if n_cond == 0:
                raise ValueError(f"Sample {b} has a <SEG> token but no <p>...</p> condition to segment.")
            if n_seg > 1 and n_seg != n_cond:
                raise ValueError(
                    f"Sample {b} has {n_seg} <SEG> tokens and {n_cond} conditions: with several <SEG> tokens each "
                    "one segments its own condition, so the counts must match."
                )
            span = (cond_ids[b][None, :] == torch.arange(n_cond, device=cond_ids.device)[:, None]).to(projected.dtype)
            conditions = (span @ projected[b]) / span.sum(dim=1, keepdim=True)
            for k, pos in enumerate(seg_pos.tolist()):
                seg_list.append(projected[b, pos])
                cond_list.append(conditions)
                sample_idx.append(b)
                cond_idx.append(k if n_seg > 1 else -1)
        if not seg_list:
            return None

        device = projected.device
        num = len(seg_list)
        if pack_across_batch:
            # Each sample's expressions appear once, in batch order; instances of the same sample share them.
            firsts = sorted({s: c for s, c in zip(sample_idx, cond_list)}.items())
            offsets, start = {}, 0
            for s, c in firsts:
                offsets[s] = start
                start += c.shape[0]
            all_conditions = torch.cat([c for _, c in firsts])
            cond_list = [all_conditions] * num
            label_offset = torch.tensor([offsets[s] for s in sample_idx], device=device)
        else:
            label_offset = torch.zeros(num, dtype=torch.long, device=device)
        c_max = max(c.shape[0] for c in cond_list)
        width = projected.shape[-1]
        conditions = projected.new_zeros(num, c_max + 1, width)
        mask = torch.zeros(num, c_max + 1, dtype=torch.bool, device=device)
        for i, c in enumerate(cond_list):
            conditions[i, : c.shape[0]] = c
            mask[i, : c.shape[0]] = True
        conditions[:, -1] = self.background_embedding.weight[0].to(projected.dtype)
        mask[:, -1] = True
        return _Instances(
            seg_embeddings=torch.stack(seg_list)[:, None, :],
            conditions=conditions,
            condition_mask=mask,
            sample_index=torch.tensor(sample_idx, device=device),
            # A multi-<SEG> instance's target class, in the (possibly batch-packed) class list.
            condition_index=torch.tensor(
                [k + int(o) if k >= 0 else -1 for k, o in zip(cond_idx, label_offset)], device=device
            ),
            label_offset=label_offset,
        )

    def _decode(
        self, pyramid: tuple[torch.Tensor, ...], sample_index: torch.Tensor, seg_embeddings: torch.Tensor | None
    ):
        """Pixel decoder once per image, then the masked-attention decoder once per instance."""
        decoder = self.segmentation_decoder
        pixel_out = decoder.pixel_decoder(list(pyramid), return_dict=True)
        pick = lambda t: t.index_select(0, sample_index)  # noqa: E731
        multi_scale = [pick(t) for t in pixel_out.multi_scale_features]
        return decoder.transformer_module(multi_scale, pick(pixel_out.mask_features), seg_embeddings=seg_embeddings)

    # ----------------------------------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        extra_pixel_values: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        region_masks: list[torch.Tensor | None] | None = None,
        region_image_indices: list[torch.Tensor | None] | None = None,
        region_pixel_values: torch.FloatTensor | None = None,
        image_features: XSamImageFeatures | None = None,
        mask_labels: list[torch.Tensor] | None = None,
        class_labels: list[torch.LongTensor] | None = None,
        pack_across_batch: bool = False,
        past_key_values=None,
        use_cache: bool | None = None,
        original_sizes: torch.Tensor | None = None,
        reshaped_input_sizes: torch.Tensor | None = None,
        **kwargs,
    ) -> XSamSegmentationOutput:
        r"""
        Args:
            input_ids: `(B, L)` prompt and answer ids, right padded, NOT expanded: one `config.image_token_index`
                (-200) where the image goes and one `config.region_token_index` (-300) per visual prompt.
            attention_mask: `(B, L)`; defaults to all ones.
            pixel_values: `(B, 3, S, S)` SigLIP input.
            extra_pixel_values: `(B, 3, C, C)` SAM canvas (image padded bottom/right to a square).
            labels: `(B, L)` LM targets, -100 where no loss is taken.
            region_masks: per sample, `(R_i, C, C)` bool visual-prompt masks on the SAM canvas, in the order of that
                sample's `<region>` tokens.
            region_image_indices: per sample, `(R_i,)` source image of each prompt: `i < B` is batch image i
                (default: the sample's own image); `B + j` is `region_pixel_values[j]` (cross-image prompts). Other
                samples' images may be borrowed in training only (cross-image packing); at inference a sample uses
                its own image or `region_pixel_values`.
            region_pixel_values: `(P, 3, C, C)` SAM canvases of images used only as prompt sources.
            image_features: encoder outputs from `get_image_features` (encode once, prompt many); replaces
                `pixel_values` / `extra_pixel_values`.
            mask_labels, class_labels: segmentation targets per decoder instance (instances in sample order, then
                `<SEG>` order): `(n_j, C, C)` masks on the SAM canvas and `(n_j,)` class indices into that
                instance's sample's conditions (for the S1 form: per image, closed-set class ids).
            pack_across_batch: classify each instance against the conditions of the whole batch (referring training,
                architecture spec §1.10). Training only; each sample is independent otherwise.
            original_sizes, reshaped_input_sizes: accepted and ignored, so that `model(**processor_outputs)` works;
                post-processing reads them from the processor's output.
            kwargs: passed to the language model (e.g. `num_items_in_batch` from the Trainer, `cache_position`).
        """
        if self.config.stage == "s1":
            return self._forward_segmentor(extra_pixel_values, image_features, mask_labels, class_labels)
        if input_ids is None:
            raise ValueError("input_ids are required by the S2 and S3 forms.")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)

        if image_features is None and (pixel_values is not None or extra_pixel_values is not None):
            image_features = self.get_image_features(pixel_values, extra_pixel_values)
        region_tokens = None
        if region_masks is not None:
            if image_features is None or image_features.segmentation_tokens is None:
                raise ValueError("Visual prompts (region_masks) need the image (extra_pixel_values).")
            if len(region_masks) != input_ids.shape[0]:
                raise ValueError(f"region_masks has {len(region_masks)} entries for a batch of {input_ids.shape[0]}.")
            region_tokens = self._region_tokens(image_features, region_masks, region_image_indices, region_pixel_values)

        merged = self._merge_inputs(input_ids, attention_mask, labels, image_features, region_tokens)

        # The LLM's own forward computes logits and loss (whatever its head does); a hook keeps its decoder's last
        # (post-norm) hidden state, so no per-layer hidden states are ever requested.
        captured = {}
        hook = self.language_model.get_decoder().register_forward_hook(
            lambda module, args, output: captured.__setitem__("hidden", output[0])
        )
        try:
            lm_out = self.language_model(
                inputs_embeds=merged.inputs_embeds,
                attention_mask=merged.attention_mask,
                labels=merged.labels,
                past_key_values=past_key_values,
                use_cache=use_cache,
                return_dict=True,
                **kwargs,
            )
        finally:
            hook.remove()
        hidden = captured["hidden"]
        output = XSamSegmentationOutput(
            logits=lm_out.logits,
            lm_loss=lm_out.loss,
            past_key_values=lm_out.past_key_values,
            attention_mask=merged.attention_mask,
            last_hidden_state=hidden,
        )

        instances = None
        if self.config.stage == "s3" and image_features is not None and image_features.feature_pyramid is not None:
            instances = self._gather_instances(
                self.llm_projector(hidden), merged.condition_ids, merged.seg_ids, pack_across_batch and self.training
            )
        if instances is not None:
            decoded = self._decode(image_features.feature_pyramid, instances.sample_index, instances.seg_embeddings)
            layers = [
                {
                    "class_queries_logits": self.class_head(
                        state.transpose(0, 1), instances.conditions, instances.condition_mask
                    ),
                    "masks_queries_logits": masks,
                }
                for state, masks in zip(decoded.intermediate_hidden_states, decoded.masks_queries_logits)
            ]
            output.class_queries_logits = layers[-1]["class_queries_logits"]
            output.masks_queries_logits = layers[-1]["masks_queries_logits"]
            output.auxiliary_logits = layers[:-1]
            output.instance_sample_index = instances.sample_index
            output.instance_condition_index = instances.condition_index
            output.condition_mask = instances.condition_mask
            if mask_labels is not None:
                if class_labels is None or len(mask_labels) != len(class_labels):
                    raise ValueError("mask_labels and class_labels must be given together, one entry per instance.")
                if len(mask_labels) != instances.sample_index.numel():
                    raise ValueError(
                        f"{len(mask_labels)} target entries for {instances.sample_index.numel()} decoder instances "
                        "(one per <SEG> token in the batch)."
                    )
                offset_labels = [c.to(instances.label_offset.device) + o for c, o in zip(class_labels, instances.label_offset)]
                self._add_seg_loss(output, layers, mask_labels, offset_labels)
        elif mask_labels is not None and any(m.shape[0] for m in mask_labels):
            raise ValueError("Segmentation targets were given but the prompts contain no <SEG> token.")

        output.loss = self._total_loss(output)
        return output

    def _forward_segmentor(self, extra_pixel_values, image_features, mask_labels, class_labels):
        """The S1 form: SAM + connector + decoder with a closed-set class head, no LLM."""
        if image_features is None:
            if extra_pixel_values is None:
                raise ValueError("The S1 segmentor needs extra_pixel_values (the SAM canvas).")
            image_features = self.get_image_features(extra_pixel_values=extra_pixel_values)
        pyramid = image_features.feature_pyramid
        sample_index = torch.arange(pyramid[0].shape[0], device=pyramid[0].device)
        decoded = self._decode(pyramid, sample_index, seg_embeddings=None)
        layers = [
            {"class_queries_logits": self.closed_set_head(state.transpose(0, 1)), "masks_queries_logits": masks}
            for state, masks in zip(decoded.intermediate_hidden_states, decoded.masks_queries_logits)
        ]
        output = XSamSegmentationOutput(
            class_queries_logits=layers[-1]["class_queries_logits"],
            masks_queries_logits=layers[-1]["masks_queries_logits"],
            auxiliary_logits=layers[:-1],
            instance_sample_index=sample_index,
        )
        if mask_labels is not None:
            self._add_seg_loss(output, layers, mask_labels, class_labels)
        output.loss = self._total_loss(output)
        return output

    def _add_seg_loss(self, output, layers, mask_labels, class_labels):
        criterion = XSamSegmentationLoss(self.config.decoder_config)
        terms = criterion(
            masks_queries_logits=layers[-1]["masks_queries_logits"],
            class_queries_logits=layers[-1]["class_queries_logits"],
            mask_labels=list(mask_labels),
            class_labels=list(class_labels),
            auxiliary_predictions=layers[:-1],
        )
        output.loss_dict = terms
        output.seg_loss = criterion.weighted_sum(terms)

    def _total_loss(self, output: XSamSegmentationOutput) -> torch.Tensor | None:
        parts = []
        if output.lm_loss is not None:
            parts.append(self.config.lm_loss_weight * output.lm_loss)
        if output.seg_loss is not None:
            parts.append(self.config.seg_loss_weight * output.seg_loss)
        return sum(parts) if parts else None

    # ----------------------------------------------------------------------------------------------------------
    # Generate-then-segment and building from pretrained parts (implemented in generation.py and
    # from_components.py; imported lazily so those modules can use this one's classes).
    def generate(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None, **kwargs):
        """Generate each sample's answer with the KV cache, then segment its `<SEG>` tokens with its `<p>...</p>`
        phrases as classes, in one forward over prompt + answer (last-layer states only). Takes the forward's image
        and region inputs, `tokenizer=` (or the processor) to decode and stop at `<|end|>`, and generation settings
        (`max_new_tokens=512`, greedy, by default). Returns an `XSamGenerationOutput`; see
        `xsam_hf.modeling.generation.generate_with_masks`."""
        from .generation import generate_with_masks

        return generate_with_masks(self, input_ids, attention_mask, **kwargs)

    @classmethod
    def from_components(cls, vision_model, segmentation_model, language_model, tokenizer=None, **kwargs):
        """Build the model from separately pretrained SigLIP, SAM and causal-LM checkpoints (directories, Hub ids or
        loaded models): adds `<SEG>`, `<p>`, `</p>` to the tokenizer, resizes the LLM embeddings to it, and
        initialises the new parts. See `xsam_hf.modeling.from_components.build_from_components`."""
        from .from_components import build_from_components

        return build_from_components(cls, vision_model, segmentation_model, language_model, tokenizer, **kwargs)


__all__ = ["XSamForSegmentation", "XSamPreTrainedModel", "XSamSegmentationOutput", "XSamImageFeatures"]
