"""The Phi-3 chat format of X-SAM and its chunked tokenization.

X-SAM's released weights were trained on text encoded in a particular way (architecture notes §2.1-2.2), and the
ids must be reproduced exactly, not merely the text:

* `<image>` and `<region>` are not vocabulary tokens. The text is split on them, each piece is tokenized on its own
  (no special tokens added), and the placeholders become the ids -200 and -300. With a SentencePiece tokenizer the
  chunk boundaries change the ids (a prefix space appears at the start of every chunk), so a whole-string
  tokenization is not equivalent.
* Each turn is three separately tokenized pieces: the instruction (label -100), the answer followed by `<|end|>`
  (labelled), and the separator `\\n` (label -100). BOS comes first (label -100); no EOS is added.
* Only the first user turn carries the image, as `<image>\\n` in front of the question.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

IMAGE_TOKEN = "<image>"
REGION_TOKEN = "<region>"
IMAGE_TOKEN_INDEX = -200
REGION_TOKEN_INDEX = -300
IGNORE_INDEX = -100

SEG_TOKEN = "<SEG>"
PHRASE_START_TOKEN = "<p>"
PHRASE_END_TOKEN = "</p>"
# Added to the tokenizer in this order (so the released ids are <SEG>=32011, <p>=32012, </p>=32013).
ADDED_TOKENS = (SEG_TOKEN, PHRASE_START_TOKEN, PHRASE_END_TOKEN)

_PLACEHOLDER_SPLIT = re.compile(f"({re.escape(IMAGE_TOKEN)}|{re.escape(REGION_TOKEN)})")
_PLACEHOLDER_IDS = {IMAGE_TOKEN: IMAGE_TOKEN_INDEX, REGION_TOKEN: REGION_TOKEN_INDEX}


@dataclass(frozen=True)
class ChatTemplate:
    """A prompt template in the xtuner style the official code uses (the fields are format strings)."""

    instruction: str
    suffix: str
    separator: str
    system: str = ""
    stop_words: tuple[str, ...] = ()


PHI3_CHAT_TEMPLATE = ChatTemplate(
    system="<|system|>\n{system}<|end|>\n",
    instruction="<|user|>\n{input}<|end|>\n<|assistant|>\n",
    suffix="<|end|>",
    separator="\n",
    stop_words=("<|end|>",),
)


@dataclass(frozen=True)
class Turn:
    """One exchange: the user's text and the assistant's answer (`None` = the model is to generate it)."""

    user: str
    assistant: str | None = None


@dataclass(frozen=True)
class EncodedConversation:
    input_ids: list[int]
    labels: list[int]
    text: str


def tokenize_with_placeholders(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Tokenize `text` chunk by chunk around `<image>` / `<region>`, which become -200 / -300."""
    ids: list[int] = []
    for chunk in _PLACEHOLDER_SPLIT.split(text):
        if chunk in _PLACEHOLDER_IDS:
            ids.append(_PLACEHOLDER_IDS[chunk])
        elif chunk:
            ids.extend(tokenizer.encode(chunk, add_special_tokens=False))
    return ids


def with_image_first(text: str) -> str:
    """Move (or add) the image placeholder to the front of a user message, followed by a newline."""
    stripped = text.replace(IMAGE_TOKEN, "").strip()
    return f"{IMAGE_TOKEN}\n{stripped}"


def encode_conversation(
    tokenizer: PreTrainedTokenizerBase,
    turns: Sequence[Turn],
    template: ChatTemplate = PHI3_CHAT_TEMPLATE,
    system: str | None = None,
    with_image: bool = True,
) -> EncodedConversation:
    """Encode turns into ids and labels the way the released model was trained.

    Args:
        turns: at least one turn; only the last may leave `assistant` as `None`, and then the sequence ends right
            after the assistant header, ready for generation.
        system: optional system message (the released recipe uses none).
        with_image: put `<image>\\n` in front of the first user message (moving an `<image>` found elsewhere).
    """
    if not turns:
        raise ValueError("A conversation needs at least one turn.")
    if any(turn.assistant is None for turn in turns[:-1]):
        raise ValueError("Only the last turn may be left for the model to answer.")
    if tokenizer.bos_token_id is None:
        raise ValueError("The tokenizer has no BOS token; X-SAM's Phi-3 format starts with one.")

    input_ids = [tokenizer.bos_token_id]
    labels = [IGNORE_INDEX]
    text_parts = [tokenizer.bos_token]

    def add(piece: str, supervised: bool) -> None:
        piece_ids = tokenize_with_placeholders(tokenizer, piece)
        input_ids.extend(piece_ids)
        labels.extend(piece_ids if supervised else [IGNORE_INDEX] * len(piece_ids))
        text_parts.append(piece)

    for index, turn in enumerate(turns):
        user = turn.user
        if index == 0 and with_image:
            user = with_image_first(user)
        elif IMAGE_TOKEN in user:
            raise ValueError("Only the first user turn may carry the <image> placeholder.")
        instruction = template.instruction.format(input=user)
        if index == 0 and system:
            instruction = template.system.format(system=system) + instruction
        add(instruction, supervised=False)
        if turn.assistant is None:
            break
        add(turn.assistant + template.suffix, supervised=True)
        add(template.separator, supervised=False)
    return EncodedConversation(input_ids=input_ids, labels=labels, text="".join(text_parts))


def strip_generation(text: str, template: ChatTemplate = PHI3_CHAT_TEMPLATE) -> str:
    """Cut a decoded answer at the first stop word."""
    for stop in template.stop_words:
        position = text.find(stop)
        if position >= 0:
            text = text[:position]
    return text
