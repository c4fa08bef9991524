"""LLaVA conversation files (``blip_laion_cc_sbu_558k.json``, ``llava_v1_5_mix665k.json``) -> chat examples.

A list of ``{id, image?, conversations: [{from: human|gpt, value}]}``. The ``<image>`` placeholder is removed from
the text (with the newline that joins it to the question); the processor re-inserts it in front of the first user
turn. The file is streamed; each record is validated while reading, so a broken one is counted and dropped then,
and kept as compact JSON text until it is accessed.
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path
from typing import Any

from .json_io import CompactJsonList, iter_json_objects
from .schema import Turn, XSamExample
from .skips import SkipCounter
from .source import ExampleSource

ROLE_OF: dict[str, str] = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}
_IMAGE_PLACEHOLDER = re.compile(r"\s*<image>\s*")


def strip_image_placeholder(text: str) -> str:
    return _IMAGE_PLACEHOLDER.sub(" ", text).strip() if "<image>" in text else text.strip()


def check_llava_record(item: dict[str, Any]) -> None:
    """Raise ``ValueError`` unless the conversation starts with a user turn and has an assistant turn."""
    roles = [ROLE_OF.get(str(turn.get("from", "")).lower()) for turn in item.get("conversations") or []]
    if not roles or None in roles or roles[0] != "user" or "assistant" not in roles:
        raise ValueError(f"unusable conversation roles {roles}")
    if not all(isinstance(turn.get("value"), str) for turn in item["conversations"]):
        raise ValueError("a turn has no text value")


def llava_record_to_example(item: dict[str, Any], image_dir: str | Path, source: str) -> XSamExample:
    check_llava_record(item)
    turns = [Turn(role=ROLE_OF[str(t["from"]).lower()], text=strip_image_placeholder(t["value"]))
             for t in item["conversations"]]
    image = item.get("image")
    return XSamExample(record_id=f"{source}/{item.get('id', '')}", task="chat", source=source,
                       image_path=str(Path(image_dir) / image) if image else None, conversation=turns,
                       meta={"id": item.get("id"), "file_name": image})


def load_llava(json_path: str | Path, image_dir: str | Path, *, exclude_text_only: bool = True,
               source: str | None = None, counter: SkipCounter | None = None) -> ExampleSource[dict[str, Any]]:
    """``exclude_text_only=True`` (the S3 setting) drops conversations without an image."""
    counter = counter if counter is not None else SkipCounter()
    source = source or Path(json_path).stem
    records = CompactJsonList()
    for position, item in enumerate(iter_json_objects(json_path, counter.skipper(source))):
        if exclude_text_only and not item.get("image"):
            continue
        try:
            check_llava_record(item)  # validate now, so broken records never enter
        except Exception as error:  # noqa: BLE001
            counter.record(source, "bad_conversation", str(item.get("id", position)), error)
            continue
        records.append(item)
    builder = partial(llava_record_to_example, image_dir=image_dir, source=source)
    return ExampleSource(source, "chat", records, builder, counter)
