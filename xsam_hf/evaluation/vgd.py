"""Visual grounded detection (COCO-VGD): mask AP and AP50 per visual-prompt type.

For each image the evaluation prompts every reference category present (one instance prompt each), and the model
labels its masks by their index in that prompted list. Those indices are mapped back to data-set category ids
here, and each prompt type (point, scribble, box, mask) gets its own COCOeval run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._arrays import to_numpy
from .interactive import PROMPT_TYPES
from .mask_ap import MaskAPAccumulator


class VGDMaskAPAccumulator:
    """Streaming per-prompt-type COCO mask AP for visual grounded detection.

    Args:
        category_ids: the data set's category ids.
        prompt_types: the prompt types evaluated (each image is added once per type).
    """

    def __init__(self, category_ids: Sequence[int], prompt_types: Sequence[str] = PROMPT_TYPES) -> None:
        self.prompt_types = tuple(prompt_types)
        self.accumulators = {prompt_type: MaskAPAccumulator(category_ids) for prompt_type in self.prompt_types}

    def add(
        self,
        image_id: int,
        prompt_type: str,
        prompted_category_ids: Sequence[int],
        reference_masks: Any,
        reference_category_ids: Any,
        prediction_masks: Any,
        prediction_scores: Any,
        prediction_labels: Any,
        reference_iscrowd: Any = None,
        image_size: tuple[int, int] | None = None,
    ) -> None:
        """Add one image evaluated with one prompt type.

        Args:
            prompted_category_ids: data-set category id of each prompt, in prompt order (``sampled_labels``).
            prediction_labels: ``(M,)`` index of each predicted mask's prompt in ``prompted_category_ids``.
            Others: as :meth:`MaskAPAccumulator.add`.
        """
        if prompt_type not in self.accumulators:
            raise ValueError(f"unknown prompt type {prompt_type!r}; expected one of {list(self.prompt_types)}")
        prompted = [int(c) for c in prompted_category_ids]
        references = [int(c) for c in to_numpy(reference_category_ids).reshape(-1).tolist()]
        unprompted = sorted(set(references) - set(prompted))
        if unprompted:
            # every reference category is prompted at evaluation; a missing one means mismatched inputs
            raise ValueError(f"image {image_id} ({prompt_type}): reference categories {unprompted} were not prompted")
        labels = [int(v) for v in to_numpy(prediction_labels).reshape(-1).tolist()]
        out_of_range = sorted({v for v in labels if not 0 <= v < len(prompted)})
        if out_of_range:
            raise ValueError(
                f"image {image_id} ({prompt_type}): prediction labels {out_of_range} index no prompt "
                f"(there are {len(prompted)} prompts)"
            )
        self.accumulators[prompt_type].add(
            image_id,
            reference_masks,
            references,
            prediction_masks,
            prediction_scores,
            [prompted[v] for v in labels],
            reference_iscrowd=reference_iscrowd,
            image_size=image_size,
        )

    def compute(self) -> dict[str, dict[str, float]]:
        """Return ``{prompt_type: {"AP", "AP50", ...}}`` (fractions; NaN for a type never added)."""
        return {prompt_type: accumulator.compute() for prompt_type, accumulator in self.accumulators.items()}
