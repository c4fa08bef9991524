"""Training data: loaders for the official X-SAM formats -> one example schema -> sampling -> balanced, source-grouped
batches. See :mod:`.schema` for the example contract. Nothing here imports model code."""

from .balance import BalancedConcatDataset, repeat_factors
from .categories import clean_category_name
from .coco_instances import load_coco_instances
from .coco_panoptic import load_ade20k_panoptic, load_coco_panoptic
from .gcg import load_flickr_gcg, load_gcg, load_gcg_eval, load_grandf_gcg, load_refcocog_gcg
from .interactive import load_coco_interactive
from .llava import load_llava
from .masks import decode_mask, decode_rle, encode_mask
from .reasonseg import load_reasonseg
from .refcoco import load_refcoco
from .sampling import (
    expand_interactive_eval,
    expand_per_expression,
    expand_refseg,
    sample_gcg,
    sample_genseg,
    sample_intseg,
    sample_reaseg,
    sample_vgd,
    training_samples,
)
from .schema import PROMPT_TYPES, TASKS, PhraseSpan, SegObject, Turn, VisualPrompt, XSamExample
from .semantic import IGNORE_ID, contiguous_category_ids, panoptic_to_semantic, write_semantic_pngs
from .skips import CorruptRecordError, SkipCounter
from .source import ExampleSource
from .source_grouped import SourceGroupedBatchSampler
from .training_dataset import TrainingSample, XSamTrainingDataset
from .vgd import generate_coco_vgd, load_coco_vgd
from .visual_prompt_generation import generate_visual_prompts

_LAZY_HF_NAMES = ("EXAMPLE_FEATURES", "source_from_hf_dataset", "to_hf_dataset")


def __getattr__(name: str) -> object:
    # `datasets` takes over a second to import and is an optional dependency: load it only when asked for.
    if name in _LAZY_HF_NAMES:
        from . import hf_dataset

        return getattr(hf_dataset, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "EXAMPLE_FEATURES", "IGNORE_ID", "PROMPT_TYPES", "TASKS",
    "BalancedConcatDataset", "CorruptRecordError", "ExampleSource", "PhraseSpan", "SegObject", "SkipCounter",
    "SourceGroupedBatchSampler", "TrainingSample", "Turn", "VisualPrompt", "XSamExample", "XSamTrainingDataset",
    "clean_category_name", "contiguous_category_ids", "decode_mask", "decode_rle", "encode_mask",
    "expand_interactive_eval", "expand_per_expression", "expand_refseg", "generate_coco_vgd",
    "generate_visual_prompts", "load_ade20k_panoptic", "load_coco_instances", "load_coco_interactive",
    "load_coco_panoptic", "load_coco_vgd", "load_flickr_gcg", "load_gcg", "load_gcg_eval", "load_grandf_gcg",
    "load_llava", "load_reasonseg", "load_refcoco", "load_refcocog_gcg", "panoptic_to_semantic", "repeat_factors",
    "sample_gcg", "sample_genseg", "sample_intseg", "sample_reaseg", "sample_vgd", "source_from_hf_dataset",
    "to_hf_dataset", "training_samples", "write_semantic_pngs",
]
