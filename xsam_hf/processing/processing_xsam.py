"""`XSamProcessor`: one call from images and a task request to the model's inputs, and back to masks."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from importlib import resources
from typing import Any

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_processing_utils import BaseImageProcessor
from transformers.processing_utils import ProcessorMixin

from ..modeling.spans import condition_ids, seg_ids
from ..modeling.presets import get_preset
from .chat_template import (
    ADDED_TOKENS,
    IGNORE_INDEX,
    PHI3_CHAT_TEMPLATE,
    PHRASE_END_TOKEN,
    PHRASE_START_TOKEN,
    REGION_TOKEN_INDEX,
    SEG_TOKEN,
    encode_conversation,
    tokenize_with_placeholders,
)
from .image_processing import (
    ImageLike,
    as_pil_backend,
    build_sam_image_processor,
    build_siglip_image_processor,
    canvas_size_of,
    expand_to_square,
    load_image,
    mean_fill_colour,
    resized_size,
)
from .post_processing import (
    InstanceOutput,
    SampleInfo,
    grounded_caption,
    instance_segmentation,
    interactive_segmentation,
    panoptic_segmentation,
    referring_segmentation,
    resolve_thresholds,
    semantic_segmentation,
    split_instances,
)
from .prompts import GENERIC_TASKS, TaskPrompt, TaskRequest, request_for_task
from .visual_prompts import bounding_box, mask_to_canvas, rasterize

# The released model's tokenizer (not shipped: pass it to `from_preset` when offline).
PHI3_TOKENIZER_ID = "microsoft/Phi-3-mini-4k-instruct"
SHIPPED_TOKENIZERS_DIR = "assets/tokenizers"  # "tiny" (the golden case's) and "world" (the synthetic world's)

# Arguments that are lists for ONE sample (a flat list of names is shared by the whole batch).
_LIST_VALUED = {"categories", "stuff_categories", "phrases", "prompt_names"}


class XSamBatchFeature(BatchFeature):
    """The processor's output: the model inputs (a `BatchFeature`) plus, as attributes, what post-processing needs.

    Attributes:
        sample_info: one `SampleInfo` per sample (task, class names, sizes, visual-prompt boxes).
        prompts: the `TaskPrompt` of each sample.
        texts: each sample's prompt as the model reads it (placeholders shown as `<image>` / `<region>`).
    """

    def __init__(
        self,
        data: dict[str, Any] | None = None,
        sample_info: Sequence[SampleInfo] = (),
        prompts: Sequence[TaskPrompt] = (),
        texts: Sequence[str] = (),
    ) -> None:
        super().__init__(data=data, tensor_type=None)
        self.sample_info = list(sample_info)
        self.prompts = list(prompts)
        self.texts = list(texts)

    def __getstate__(self) -> dict[str, Any]:
        return {"data": self.data, "sample_info": self.sample_info, "prompts": self.prompts, "texts": self.texts}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.data = state["data"]
        self.sample_info = state.get("sample_info", [])
        self.prompts = state.get("prompts", [])
        self.texts = state.get("texts", [])


class XSamProcessor(ProcessorMixin):
    r"""Processor of X-SAM: a Phi-3 tokenizer, a SigLIP image processor and a SAM image processor.

    Calling it turns images and a task request into `XSamForSegmentation` inputs; its `post_process_*` methods turn
    the model's outputs into masks on the original images.

    Args:
        image_processor: SigLIP processor (square resize; 384 px for the released model).
        seg_image_processor: SAM processor (longest side and square padded canvas; 1024 px released).
        tokenizer: the LLM tokenizer; `<SEG>`, `<p>`, `</p>` are added (as special tokens, in that order) if missing.
        pad_to_square: pad images to a square with the SigLIP mean colour before SigLIP resizing (how the released
            model was evaluated). The SAM canvas is always padded at the bottom/right.

    Example:
        ```python
        >>> processor = XSamProcessor.from_preset("tiny")
        >>> inputs = processor(images=image, task="panoptic", categories=["person", "dog", "sky"])
        >>> outputs = model(**inputs)
        >>> result = processor.post_process_panoptic_segmentation(outputs, inputs)[0]
        ```
    """

    def __init__(
        self,
        image_processor: BaseImageProcessor,
        seg_image_processor: BaseImageProcessor,
        tokenizer: PreTrainedTokenizerBase,
        pad_to_square: bool = True,
        **kwargs: Any,
    ) -> None:
        self.pad_to_square = pad_to_square
        super().__init__(as_pil_backend(image_processor), as_pil_backend(seg_image_processor), tokenizer, **kwargs)
        missing = [t for t in ADDED_TOKENS if t not in self.tokenizer.get_vocab()]
        if missing:
            self.tokenizer.add_tokens(missing, special_tokens=True)
        self.seg_token_id = self.tokenizer.convert_tokens_to_ids(SEG_TOKEN)
        self.phrase_start_token_id = self.tokenizer.convert_tokens_to_ids(PHRASE_START_TOKEN)
        self.phrase_end_token_id = self.tokenizer.convert_tokens_to_ids(PHRASE_END_TOKEN)

    # ------------------------------------------------------------------------------------------------------------
    @classmethod
    def from_preset(
        cls, name: str, tokenizer: PreTrainedTokenizerBase | str | os.PathLike | None = None, **kwargs: Any
    ) -> XSamProcessor:
        """Build the processor of a named variant without the Hub.

        "tiny" uses the small byte-level BPE tokenizer shipped in the package. "x-sam-phi3-mini" (the released
        model) needs Phi-3-mini's tokenizer: pass it (an object or a local path); without it the processor tries
        `microsoft/Phi-3-mini-4k-instruct`, which only works online or from the local Hub cache.
        """
        sizes = get_preset(name)["processor"]
        if tokenizer is None:
            tokenizer = _default_tokenizer(name, sizes.get("tokenizer"))
        elif isinstance(tokenizer, (str, os.PathLike)):
            tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        return cls(
            image_processor=build_siglip_image_processor(sizes["vision_image_size"]),
            seg_image_processor=build_sam_image_processor(sizes["segmentation_image_size"]),
            tokenizer=tokenizer,
            **kwargs,
        )

    @property
    def canvas_size(self) -> int:
        """Side of the SAM canvas."""
        return canvas_size_of(self.seg_image_processor)

    @property
    def model_input_names(self) -> list[str]:
        return [
            "input_ids",
            "attention_mask",
            "pixel_values",
            "extra_pixel_values",
            "region_masks",
            "region_image_indices",
            "region_pixel_values",
        ]

    # ------------------------------------------------------------------------------------------------------------
    def __call__(
        self,
        images: ImageLike | Sequence[ImageLike] | None = None,
        text: str | Sequence[str] | None = None,
        *,
        task: str | Sequence[str] | None = None,
        requests: TaskRequest | Sequence[TaskRequest] | None = None,
        categories: Any = None,
        stuff_categories: Any = None,
        expressions: Any = None,
        queries: Any = None,
        visual_prompts: Any = None,
        prompt_names: Any = None,
        conversation: Any = None,
        caption: Any = None,
        phrases: Any = None,
        training: bool = False,
        rng: Any = None,
        return_labels: bool | None = None,
        return_condition_ids: bool = False,
        padding_side: str = "right",
        return_tensors: str | None = "pt",
        **kwargs: Any,
    ) -> XSamBatchFeature:
        """Prepare one image or a batch of images with their task prompts.

        Describe the task either with `task=` and its keywords, or with request objects (`requests=`, which may
        mix tasks in a batch), or with free `text` (a chat question; the answer is generated):

        * panoptic / semantic / instance / open_vocabulary: `categories` (names, in the order you want the label
          ids), optional `stuff_categories`;
        * referring: `expressions` (one string or several: one `<SEG>` turn each); reasoning: `queries`;
        * gcg: nothing (the caption is generated); training: `caption`, `phrases`;
        * interactive: `visual_prompts` (one `VisualPrompt` or dict such as `{"point": (x, y)}`);
        * vgd: `visual_prompts` (several; give a prompt an `image` for cross-image VGD), optional `prompt_names`;
        * conversation: `conversation` = `[{"role": "user", "content": ...}, ...]`.

        With a list of images, every task keyword is a list with one entry per image (a flat list of category names
        is shared by all images).

        Args:
            training: draw question / answer templates at random (with `rng`) instead of the fixed inference ones,
                and return `labels`.
            return_labels: return LM `labels` (-100 outside the answers); defaults to `training`.
            return_condition_ids: also return `cond_ids` / `seg_ids` (the official span tensors).
            padding_side: "right" (the model's convention) or "left".
            return_tensors: only "pt" is supported.

        Returns:
            `XSamBatchFeature` with `input_ids` (-200 for the image, -300 per `<region>`), `attention_mask`,
            `pixel_values`, `extra_pixel_values`, `original_sizes`, `reshaped_input_sizes`, [`labels`],
            [`region_masks`, `region_image_indices`, `region_pixel_values`], [`cond_ids`, `seg_ids`].
        """
        if kwargs:
            raise TypeError(f"Unexpected arguments: {sorted(kwargs)}.")
        if return_tensors not in (None, "pt"):
            raise ValueError(f"Only return_tensors='pt' is supported, got {return_tensors!r}.")
        if padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}.")
        if images is None:
            raise ValueError("X-SAM needs an image for every sample: pass `images`.")
        batched = isinstance(images, (list, tuple))
        image_list = list(images) if batched else [images]
        if not image_list:
            raise ValueError("`images` is an empty list.")
        batch_size = len(image_list)
        task_arguments = {
            "categories": categories,
            "stuff_categories": stuff_categories,
            "expressions": expressions,
            "queries": queries,
            "visual_prompts": visual_prompts,
            "prompt_names": prompt_names,
            "conversation": conversation,
            "caption": caption,
            "phrases": phrases,
        }
        request_list = self._requests(batch_size, batched, text, task, requests, task_arguments)
        prompts = [request.to_prompt(training=training, rng=rng) for request in request_list]
        return self.encode_prompts(
            image_list,
            prompts,
            return_labels=training if return_labels is None else return_labels,
            return_condition_ids=return_condition_ids,
            padding_side=padding_side,
        )

    def _requests(
        self,
        batch_size: int,
        batched: bool,
        text: Any,
        task: Any,
        requests: Any,
        task_arguments: dict[str, Any],
    ) -> list[TaskRequest]:
        given = [name for name, value in task_arguments.items() if value is not None]
        if requests is not None:
            if task is not None or text is not None or given:
                raise ValueError("Pass either `requests` or `task` / `text` with task keywords, not both.")
            request_list = list(requests) if isinstance(requests, (list, tuple)) else [requests]
            if len(request_list) != batch_size:
                raise ValueError(f"Got {len(request_list)} requests for {batch_size} images.")
            return request_list
        if task is None:
            if text is None:
                raise ValueError("Describe the task: pass `task=` with its keywords, `requests=`, or `text=`.")
            if given and given != ["visual_prompts"]:
                raise ValueError(f"{given} need `task=`; free `text` is a conversation.")
            task = "conversation"
        tasks = _per_sample(task, batch_size, batched, "task", list_valued=False)
        texts = _per_sample(text, batch_size, batched, "text", list_valued=False)
        per_sample = {
            name: _per_sample(value, batch_size, batched, name, list_valued=name in _LIST_VALUED)
            for name, value in task_arguments.items()
        }
        request_list = []
        for b in range(batch_size):
            arguments = {name: values[b] for name, values in per_sample.items()}
            if tasks[b] == "conversation":
                arguments["text"] = texts[b]
            elif texts[b] is not None:
                raise ValueError(f"Free `text` only goes with the conversation task, not {tasks[b]!r}.")
            request_list.append(request_for_task(tasks[b], **arguments))
        return request_list

    def encode_prompts(
        self,
        images: Sequence[ImageLike],
        prompts: Sequence[TaskPrompt],
        return_labels: bool = False,
        return_condition_ids: bool = False,
        padding_side: str = "right",
    ) -> XSamBatchFeature:
        """Encode already-built `TaskPrompt`s with their images (the core of `__call__`)."""
        if len(images) != len(prompts):
            raise ValueError(f"Got {len(prompts)} prompts for {len(images)} images.")
        rgb_images = [load_image(image) for image in images]
        data: dict[str, Any] = {}
        data.update(self._encode_text(prompts, return_labels, padding_side))
        data["pixel_values"] = self._siglip_pixels(rgb_images)
        sam = self.seg_image_processor(images=rgb_images, return_tensors="pt")
        data["extra_pixel_values"] = sam["pixel_values"]
        data["original_sizes"] = torch.as_tensor(sam["original_sizes"], dtype=torch.long)
        data["reshaped_input_sizes"] = torch.as_tensor(sam["reshaped_input_sizes"], dtype=torch.long)
        region_data, prompt_boxes = self._encode_visual_prompts(images, rgb_images, prompts, data)
        data.update(region_data)
        if return_condition_ids:
            data["cond_ids"] = condition_ids(data["input_ids"], self.phrase_start_token_id, self.phrase_end_token_id)
            data["seg_ids"] = seg_ids(data["input_ids"], self.seg_token_id)
        sample_info = [
            SampleInfo(
                task=prompt.task,
                original_size=tuple(data["original_sizes"][b].tolist()),
                reshaped_size=tuple(data["reshaped_input_sizes"][b].tolist()),
                class_names=prompt.class_names,
                label_ids_to_fuse=prompt.label_ids_to_fuse,
                prompt_boxes=prompt_boxes[b],
                generate=prompt.generate,
            )
            for b, prompt in enumerate(prompts)
        ]
        texts = data.pop("_texts")
        return XSamBatchFeature(data, sample_info=sample_info, prompts=prompts, texts=texts)

    def _encode_text(self, prompts: Sequence[TaskPrompt], return_labels: bool, padding_side: str) -> dict[str, Any]:
        encoded = [encode_conversation(self.tokenizer, prompt.turns) for prompt in prompts]
        for prompt, sample in zip(prompts, encoded):
            regions = sample.input_ids.count(REGION_TOKEN_INDEX)
            if regions != len(prompt.visual_prompts):
                raise ValueError(
                    f"The {prompt.task} prompt has {regions} <region> placeholders but {len(prompt.visual_prompts)} "
                    "visual prompts."
                )
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            pad_id = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else 0
        length = max(len(sample.input_ids) for sample in encoded)
        input_ids = torch.full((len(encoded), length), pad_id, dtype=torch.long)
        labels = torch.full((len(encoded), length), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(encoded), length), dtype=torch.long)
        for b, sample in enumerate(encoded):
            n = len(sample.input_ids)
            span = slice(0, n) if padding_side == "right" else slice(length - n, length)
            input_ids[b, span] = torch.tensor(sample.input_ids)
            labels[b, span] = torch.tensor(sample.labels)
            attention_mask[b, span] = 1
        data: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
        data["_texts"] = [sample.text for sample in encoded]
        if return_labels:
            data["labels"] = labels
        return data

    def _siglip_pixels(self, images: Sequence[Any]) -> torch.Tensor:
        if self.pad_to_square:
            fill = mean_fill_colour(self.image_processor.image_mean)
            images = [expand_to_square(image, fill) for image in images]
        return self.image_processor(images=list(images), return_tensors="pt")["pixel_values"]

    def _encode_visual_prompts(
        self,
        raw_images: Sequence[Any],
        rgb_images: Sequence[Any],
        prompts: Sequence[TaskPrompt],
        data: Mapping[str, Any],
    ) -> tuple[dict[str, Any], list[tuple[tuple[int, int, int, int], ...]]]:
        """Rasterise every sample's visual prompts on the SAM canvas of the image they are drawn on."""
        batch_size = len(prompts)
        boxes: list[tuple[tuple[int, int, int, int], ...]] = [() for _ in prompts]
        if not any(prompt.visual_prompts for prompt in prompts):
            return {}, boxes
        canvas = self.canvas_size
        extra_images: list[Any] = []  # prompt-only images (cross-image VGD), first-seen order
        extra_sizes: list[tuple[tuple[int, int], tuple[int, int]]] = []
        region_masks, region_indices = [], []
        for b, prompt in enumerate(prompts):
            masks, indices, sample_boxes = [], [], []
            for visual_prompt in prompt.visual_prompts:
                source = visual_prompt.image
                if source is None:
                    index = b
                else:
                    index = next((i for i, image in enumerate(raw_images) if image is source), None)
                    if index is None:
                        position = next((j for j, image in enumerate(extra_images) if image is source), None)
                        if position is None:
                            extra_images.append(source)
                            height, width = load_image(source).size[::-1]
                            extra_sizes.append(((height, width), resized_size(height, width, canvas)))
                            position = len(extra_images) - 1
                        index = batch_size + position
                if index < batch_size:
                    original = tuple(data["original_sizes"][index].tolist())
                    reshaped = tuple(data["reshaped_input_sizes"][index].tolist())
                else:
                    original, reshaped = extra_sizes[index - batch_size]
                mask = rasterize(visual_prompt, *original)
                sample_boxes.append(bounding_box(mask))
                masks.append(mask_to_canvas(mask, reshaped, canvas))
                indices.append(index)
            region_masks.append(torch.stack(masks) if masks else torch.zeros((0, canvas, canvas), dtype=torch.bool))
            region_indices.append(torch.tensor(indices, dtype=torch.long))
            boxes[b] = tuple(sample_boxes)
        result: dict[str, Any] = {"region_masks": region_masks, "region_image_indices": region_indices}
        if extra_images:
            rgb = [load_image(image) for image in extra_images]
            result["region_pixel_values"] = self.seg_image_processor(images=rgb, return_tensors="pt")["pixel_values"]
        return result, boxes

    def append_generated(
        self, inputs: XSamBatchFeature, generated: Sequence[str] | Sequence[Sequence[int]] | torch.Tensor
    ) -> XSamBatchFeature:
        """Append each sample's generated answer to its prompt, for the forward pass that reads the answer's
        `<SEG>` and `<p>...</p>` states (GCG and chat: generate, then segment).

        `generated` holds the new tokens only (ids, or text); each answer is cut after its first stop word
        (`<|end|>`), which is added if generation stopped early. Returns a new batch (right padded) with the same
        images, visual prompts and sample info.
        """
        stop_id = self.tokenizer.convert_tokens_to_ids(PHI3_CHAT_TEMPLATE.suffix)
        if isinstance(generated, torch.Tensor):
            generated = generated.tolist() if generated.ndim == 2 else [generated.tolist()]
        answers = []
        for item in generated:
            ids = tokenize_with_placeholders(self.tokenizer, item) if isinstance(item, str) else [int(i) for i in item]
            if stop_id in ids:
                ids = ids[: ids.index(stop_id) + 1]
            else:
                ids = [i for i in ids if i != self.tokenizer.pad_token_id] + [stop_id]
            answers.append(ids)
        if len(answers) != inputs["input_ids"].shape[0]:
            raise ValueError(f"Got {len(answers)} generated answers for a batch of {inputs['input_ids'].shape[0]}.")
        prompts = [row[mask.bool()].tolist() for row, mask in zip(inputs["input_ids"], inputs["attention_mask"])]
        sequences = [prompt + answer for prompt, answer in zip(prompts, answers)]
        length = max(len(s) for s in sequences)
        pad_id = inputs["input_ids"][inputs["attention_mask"] == 0]
        pad_id = int(pad_id[0]) if pad_id.numel() else (self.tokenizer.pad_token_id or 0)
        input_ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(sequences), length), dtype=torch.long)
        for b, sequence in enumerate(sequences):
            input_ids[b, : len(sequence)] = torch.tensor(sequence)
            attention_mask[b, : len(sequence)] = 1
        replaced = ("input_ids", "attention_mask", "labels", "cond_ids", "seg_ids")
        data = {k: v for k, v in inputs.items() if k not in replaced}
        device = inputs["input_ids"].device
        data.update(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device))
        texts = [text + self.tokenizer.decode(answer) for text, answer in zip(inputs.texts, answers)]
        infos = [replace(info, generate=False) for info in inputs.sample_info]
        return XSamBatchFeature(data, sample_info=infos, prompts=inputs.prompts, texts=texts)

    # ------------------------------------------------------------------------------------------------------------
    # Post-processing. `inputs` is what this processor returned for the batch (sizes, class names, prompt boxes);
    # without it, `target_sizes` must give the original image sizes (the canvas crop is derived from them).
    def _sample_info(
        self, outputs: Any, inputs: Any, target_sizes: Sequence[Sequence[int]] | None, task: str
    ) -> list[SampleInfo]:
        infos = getattr(inputs, "sample_info", None) if inputs is not None else None
        if infos:
            infos = list(infos)
        elif inputs is not None and "original_sizes" in inputs:
            infos = [
                SampleInfo(task=task, original_size=tuple(o.tolist()), reshaped_size=tuple(r.tolist()))
                for o, r in zip(inputs["original_sizes"], inputs["reshaped_input_sizes"])
            ]
        elif target_sizes is not None:
            infos = [
                SampleInfo(
                    task=task,
                    original_size=(int(h), int(w)),
                    reshaped_size=resized_size(int(h), int(w), self.canvas_size),
                )
                for h, w in target_sizes
            ]
        else:
            raise ValueError("Pass the processor `inputs` of the batch, or `target_sizes` (original image sizes).")
        if target_sizes is not None:
            if len(target_sizes) != len(infos):
                raise ValueError(f"Got {len(target_sizes)} target sizes for {len(infos)} samples.")
            infos = [_with_target_size(info, size) for info, size in zip(infos, target_sizes)]
        return infos

    def _single_instances(self, outputs: Any, infos: Sequence[SampleInfo]) -> list[InstanceOutput | None]:
        grouped = split_instances(outputs, len(infos))
        singles = []
        for b, instances in enumerate(grouped):
            if len(instances) > 1:
                raise ValueError(f"Sample {b} has {len(instances)} decoder instances; this task expects one.")
            singles.append(instances[0] if instances else None)
        return singles

    def post_process_semantic_segmentation(
        self, outputs: Any, inputs: Any = None, *, target_sizes: Sequence[Sequence[int]] | None = None
    ) -> list[torch.Tensor | None]:
        """Semantic label maps `(H, W)` (label ids index the sample's categories); `None` for a sample without a
        `<SEG>` instance."""
        infos = self._sample_info(outputs, inputs, target_sizes, "semantic")
        instances = self._single_instances(outputs, infos)
        return [
            None if instance is None else semantic_segmentation(instance, self.canvas_size, info)
            for instance, info in zip(instances, infos)
        ]

    def post_process_instance_segmentation(
        self,
        outputs: Any,
        inputs: Any = None,
        *,
        threshold: float | None = None,
        mask_threshold: float | None = None,
        thresholds: str | Mapping[str, Mapping[str, float]] = "default",
        target_sizes: Sequence[Sequence[int]] | None = None,
        return_coco_annotation: bool = False,
        return_binary_maps: bool = False,
        _task: str = "instance",
    ) -> list[dict]:
        """Instances per image: `{"segmentation": (H, W) ids (-1 none), "segments_info": [{"id", "label_id",
        "label", "score", "was_fused"[, "rle"]}]}`. `thresholds="official"` keeps everything (threshold 0.0) as the
        official evaluation; the default drops instances scoring below 0.5."""
        infos = self._sample_info(outputs, inputs, target_sizes, _task)
        values = resolve_thresholds(_task, thresholds, threshold=threshold, mask_threshold=mask_threshold)
        return [
            _empty_instances(info)
            if instance is None
            else instance_segmentation(
                instance,
                self.canvas_size,
                info,
                threshold=values["threshold"],
                mask_threshold=values["mask_threshold"],
                return_coco_annotation=return_coco_annotation,
                return_binary_maps=return_binary_maps,
            )
            for instance, info in zip(self._single_instances(outputs, infos), infos)
        ]

    def post_process_panoptic_segmentation(
        self,
        outputs: Any,
        inputs: Any = None,
        *,
        threshold: float | None = None,
        mask_threshold: float | None = None,
        overlap_mask_area_threshold: float | None = None,
        label_ids_to_fuse: set[int] | None = None,
        thresholds: str | Mapping[str, Mapping[str, float]] = "default",
        target_sizes: Sequence[Sequence[int]] | None = None,
        return_coco_annotation: bool = False,
    ) -> list[dict]:
        """Panoptic maps: `{"segmentation": (H, W) segment ids from 1 (-1 none), "segments_info": [...]}`. Stuff
        classes (the request's `stuff_categories`, or `label_ids_to_fuse`) are merged into one segment each."""
        infos = self._sample_info(outputs, inputs, target_sizes, "panoptic")
        values = resolve_thresholds(
            "panoptic",
            thresholds,
            threshold=threshold,
            mask_threshold=mask_threshold,
            overlap_mask_area_threshold=overlap_mask_area_threshold,
        )
        return [
            _empty_instances(info)
            if instance is None
            else panoptic_segmentation(
                instance,
                self.canvas_size,
                info,
                threshold=values["threshold"],
                mask_threshold=values["mask_threshold"],
                overlap_mask_area_threshold=values["overlap_mask_area_threshold"],
                label_ids_to_fuse=label_ids_to_fuse,
                return_coco_annotation=return_coco_annotation,
            )
            for instance, info in zip(self._single_instances(outputs, infos), infos)
        ]

    def post_process_referring_segmentation(
        self,
        outputs: Any,
        inputs: Any = None,
        *,
        mask_threshold: float | None = None,
        thresholds: str | Mapping[str, Mapping[str, float]] = "default",
        target_sizes: Sequence[Sequence[int]] | None = None,
        return_coco_annotation: bool = False,
    ) -> list[dict]:
        """One mask per expression (or reasoning query): `{"masks": (K, H, W) bool, "scores": (K,), "label_ids",
        "labels"[, "rle"]}`."""
        infos = self._sample_info(outputs, inputs, target_sizes, "referring")
        values = resolve_thresholds("referring", thresholds, mask_threshold=mask_threshold)
        return [
            referring_segmentation(
                instances, self.canvas_size, info, values["mask_threshold"], return_coco_annotation
            )
            for instances, info in zip(split_instances(outputs, len(infos)), infos)
        ]

    post_process_reasoning_segmentation = post_process_referring_segmentation

    def post_process_interactive_segmentation(
        self,
        outputs: Any,
        inputs: Any,
        *,
        threshold: float | None = None,
        mask_threshold: float | None = None,
        thresholds: str | Mapping[str, Mapping[str, float]] = "default",
        target_sizes: Sequence[Sequence[int]] | None = None,
        return_coco_annotation: bool = False,
    ) -> list[dict | None]:
        """The object of each visual prompt: the referring schema with one mask, plus `box_iou` (IoU of the mask's
        box with the prompt's box, the selection criterion). `inputs` is required: it carries the prompt boxes."""
        infos = self._sample_info(outputs, inputs, target_sizes, "interactive")
        values = resolve_thresholds("interactive", thresholds, threshold=threshold, mask_threshold=mask_threshold)
        return [
            None
            if instance is None
            else interactive_segmentation(
                instance,
                self.canvas_size,
                info,
                threshold=values["threshold"],
                mask_threshold=values["mask_threshold"],
                return_coco_annotation=return_coco_annotation,
            )
            for instance, info in zip(self._single_instances(outputs, infos), infos)
        ]

    def post_process_vgd_segmentation(
        self,
        outputs: Any,
        inputs: Any = None,
        *,
        threshold: float | None = None,
        mask_threshold: float | None = None,
        thresholds: str | Mapping[str, Mapping[str, float]] = "default",
        target_sizes: Sequence[Sequence[int]] | None = None,
        return_coco_annotation: bool = False,
        return_binary_maps: bool = False,
    ) -> list[dict]:
        """Visual grounded detection: every object like each prompt, in the instance schema (label k = prompt k)."""
        return self.post_process_instance_segmentation(
            outputs,
            inputs,
            threshold=threshold,
            mask_threshold=mask_threshold,
            thresholds=thresholds,
            target_sizes=target_sizes,
            return_coco_annotation=return_coco_annotation,
            return_binary_maps=return_binary_maps,
            _task="vgd",
        )

    def post_process_generation(
        self,
        generated: str | Sequence[str] | torch.Tensor | Sequence[Sequence[int]],
        outputs: Any = None,
        inputs: Any = None,
        *,
        mask_threshold: float | None = None,
        thresholds: str | Mapping[str, Mapping[str, float]] = "default",
        target_sizes: Sequence[Sequence[int]] | None = None,
    ) -> list[dict]:
        """Grounded captions (GCG), Kosmos-2 style: per sample `{"caption", "entities": [(phrase, (start, end),
        mask)], "scores", "segmentation"}`. `generated` is the generated text (or token ids) of each sample; pass the
        segmentation `outputs` of the same batch to get the masks (phrase k = condition k)."""
        texts = self._generated_texts(generated)
        values = resolve_thresholds("gcg", thresholds, mask_threshold=mask_threshold)
        if outputs is None:
            special = self._special_tokens()
            return [grounded_caption(text, None, self.canvas_size, None, special_tokens=special) for text in texts]
        infos = self._sample_info(outputs, inputs, target_sizes, "gcg")
        if len(infos) != len(texts):
            raise ValueError(f"Got {len(texts)} generated texts for {len(infos)} samples.")
        instances = self._single_instances(outputs, infos)
        return [
            grounded_caption(text, instance, self.canvas_size, info, values["mask_threshold"], self._special_tokens())
            for text, instance, info in zip(texts, instances, infos)
        ]

    def post_process(
        self,
        outputs: Any,
        inputs: Any,
        *,
        generated: Sequence[str] | torch.Tensor | None = None,
        thresholds: str | Mapping[str, Mapping[str, float]] = "default",
    ) -> list[Any]:
        """Post-process a batch whose samples may have different tasks, each with its own rule
        (open-vocabulary -> panoptic; gcg / conversation -> `post_process_generation`, needs `generated`)."""
        infos = self._sample_info(outputs, inputs, None, "panoptic")
        grouped = split_instances(outputs, len(infos))
        texts = self._generated_texts(generated) if generated is not None else None
        canvas = self.canvas_size
        results: list[Any] = []
        for b, (instances, info) in enumerate(zip(grouped, infos)):
            task = info.task
            single = instances[0] if len(instances) == 1 else None
            if task in ("gcg", "conversation"):
                if texts is None:
                    raise ValueError(f"Sample {b} ({task}) needs the `generated` text.")
                values = resolve_thresholds("gcg", thresholds)
                special = self._special_tokens()
                results.append(grounded_caption(texts[b], single, canvas, info, values["mask_threshold"], special))
            elif task in ("referring", "reasoning"):
                values = resolve_thresholds("referring", thresholds)
                results.append(referring_segmentation(instances, canvas, info, values["mask_threshold"]))
            elif single is None:
                results.append(None if task in ("semantic", "interactive") else _empty_instances(info))
            elif task == "semantic":
                results.append(semantic_segmentation(single, canvas, info))
            elif task == "instance" or task == "vgd":
                values = resolve_thresholds(task, thresholds)
                results.append(instance_segmentation(single, canvas, info, **values))
            elif task == "interactive":
                values = resolve_thresholds(task, thresholds)
                results.append(interactive_segmentation(single, canvas, info, **values))
            elif task in GENERIC_TASKS:  # panoptic, open_vocabulary
                values = resolve_thresholds("panoptic", thresholds)
                results.append(panoptic_segmentation(single, canvas, info, **values))
            else:
                raise ValueError(f"No post-processing for task {task!r}.")
        return results

    def _generated_texts(self, generated: Any) -> list[str]:
        if isinstance(generated, str):
            return [generated]
        if isinstance(generated, torch.Tensor):
            generated = generated.tolist() if generated.ndim == 2 else [generated.tolist()]
        items = list(generated)
        if items and not isinstance(items[0], str):
            # Keep special tokens: <p>, </p> and <SEG> carry the grounding.
            items = [self.tokenizer.decode([t for t in ids if t >= 0], skip_special_tokens=False) for ids in items]
        return items

    def _special_tokens(self) -> list[str]:
        return list(self.tokenizer.all_special_tokens)


def _with_target_size(info: SampleInfo, size: Sequence[int]) -> SampleInfo:
    return replace(info, original_size=(int(size[0]), int(size[1])))


def _empty_instances(info: SampleInfo) -> dict:
    return {"segmentation": torch.full(info.original_size, -1, dtype=torch.long), "segments_info": []}


def _per_sample(value: Any, batch_size: int, batched: bool, name: str, list_valued: bool) -> list[Any]:
    """Spread a `__call__` keyword over the samples: one value per image when batched."""
    if value is None:
        return [None] * batch_size
    if not batched:
        return [value]
    if isinstance(value, str) or isinstance(value, Mapping) or not isinstance(value, Sequence):
        if name in ("task", "text") or list_valued:
            return [value] * batch_size
        raise ValueError(f"With a list of images, `{name}` must be a list with one entry per image.")
    if list_valued and all(isinstance(v, (str, int)) for v in value):
        return [list(value)] * batch_size  # a flat list of names: the same for every image
    if len(value) != batch_size:
        raise ValueError(f"`{name}` has {len(value)} entries for {batch_size} images.")
    return list(value)


def _default_tokenizer(name: str, shipped: str | None) -> PreTrainedTokenizerBase:
    shipped_asset = resources.files("xsam_hf").joinpath(SHIPPED_TOKENIZERS_DIR, shipped) if shipped else None
    if shipped_asset is not None and shipped_asset.is_dir():
        with resources.as_file(shipped_asset) as path:
            return AutoTokenizer.from_pretrained(str(path))
    hub_id = shipped or PHI3_TOKENIZER_ID
    try:
        return AutoTokenizer.from_pretrained(hub_id)
    except (OSError, ValueError) as error:
        raise OSError(
            f"The {name!r} preset needs the tokenizer of {hub_id}, which could not be loaded ({error}). "
            "Without network access, pass it explicitly: XSamProcessor.from_preset(name, tokenizer=<tokenizer or "
            "local path>)."
        ) from error
