"""X-SAM processing: prompts, images, visual prompts in; masks, captions out."""

from .chat_template import (
    IGNORE_INDEX,
    IMAGE_TOKEN,
    IMAGE_TOKEN_INDEX,
    PHI3_CHAT_TEMPLATE,
    REGION_TOKEN,
    REGION_TOKEN_INDEX,
    Turn,
    encode_conversation,
    tokenize_with_placeholders,
)
from .image_processing import load_image
from .post_processing import DEFAULT_THRESHOLDS, OFFICIAL_THRESHOLDS, SampleInfo, parse_grounded_text
from .processing_xsam import XSamBatchFeature, XSamProcessor
from .prompts import (
    TASKS,
    ConversationRequest,
    GCGRequest,
    GenericSegmentationRequest,
    InteractiveRequest,
    ReasoningRequest,
    ReferringRequest,
    TaskPrompt,
    VGDRequest,
    clean_category_name,
    parse_category_prompt,
)
from .visual_prompts import VisualPrompt

__all__ = [
    "DEFAULT_THRESHOLDS",
    "IGNORE_INDEX",
    "IMAGE_TOKEN",
    "IMAGE_TOKEN_INDEX",
    "OFFICIAL_THRESHOLDS",
    "PHI3_CHAT_TEMPLATE",
    "REGION_TOKEN",
    "REGION_TOKEN_INDEX",
    "TASKS",
    "ConversationRequest",
    "GCGRequest",
    "GenericSegmentationRequest",
    "InteractiveRequest",
    "ReasoningRequest",
    "ReferringRequest",
    "SampleInfo",
    "TaskPrompt",
    "Turn",
    "VGDRequest",
    "VisualPrompt",
    "XSamBatchFeature",
    "XSamProcessor",
    "clean_category_name",
    "encode_conversation",
    "load_image",
    "parse_category_prompt",
    "parse_grounded_text",
    "tokenize_with_placeholders",
]
