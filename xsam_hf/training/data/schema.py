"""The one example schema that every X-SAM data loader produces.

A loader turns an official on-disk format into :class:`XSamExample` objects; the training processor turns an
example into model inputs (prompt text, token ids, pixel values, mask targets). This module is the contract
between the two, so every field is described here.

Coordinates and masks
---------------------
* Masks are COCO run-length encodings at the **original image resolution**: ``{"size": [height, width],
  "counts": str}`` (compressed counts, decoded to text so that they survive JSON and Arrow).
  :func:`xsam_hf.training.data.masks.decode_rle` turns one into a ``bool`` array of shape ``(height, width)``.
* Points are ``[x, y]`` pixels and boxes are ``[x0, y0, x1, y1]`` (XYXY) pixels of the original image; ``bbox`` of an
  object is COCO ``[x, y, width, height]``.

Fields of :class:`XSamExample`
------------------------------
``record_id``
    Unique inside its source, e.g. ``"coco_panoptic_train2017/139"``.
``task``
    One of :data:`TASKS`: ``genseg`` (generic: panoptic / semantic / instance), ``ovseg`` (open vocabulary, same
    layout as genseg), ``refseg`` (referring), ``reaseg`` (reasoning), ``gcgseg`` (grounded caption), ``intseg``
    (interactive), ``vgdseg`` (visual-grounded) or ``chat`` (LLaVA conversation).
``source``
    Name of the data set the example came from; the source-grouped sampler keeps a batch to one source.
``image_path`` / ``image_size``
    Absolute image path (``None`` for a pure-text chat) and ``(height, width)`` (``None`` when the annotation does
    not state it and the loader did not open the image, which only happens for chat).
``class_names`` / ``class_ids``
    The conditions that the prompt names, in prompt order; ``class_ids`` is parallel and holds the source category
    id (COCO ``category_id``) or ``-1`` where a condition is not a category.

    * genseg / ovseg / vgdseg / intseg: category names cleaned with :func:`~.categories.clean_category_name`.
      Straight from a loader this is the **full category list** of the data set; the training sampler
      (:mod:`.sampling`) replaces it by the sampled list, whose order is the class label.
    * refseg / reaseg: one referring expression or question per turn, turn ``k`` asks about ``class_names[k]`` and
      its answer holds one ``<SEG>``. Straight from a loader it is empty and the sentences sit on the objects
      (``SegObject.texts``); :mod:`.sampling` builds the turns.
    * gcgseg: the grounded phrases, in caption order (``class_names[k] == phrases[k].text``).
    * chat: empty.
``objects``
    Ground-truth objects (:class:`SegObject`). ``class_index`` points into ``class_names`` (``-1``: no class,
    e.g. GCG evaluation masks whose phrases are unknown). An example with no objects is valid (an image with no
    annotation still trains the "no object" class).
``conversation``
    LLaVA turns (:class:`Turn`, role ``user`` or ``assistant``) with the ``<image>`` placeholder removed: the
    processor puts it in front of the first user turn (``image_path is not None`` says whether there is one).
``caption`` / ``phrases``
    GCG caption and its grounded phrases (:class:`PhraseSpan`): ``caption[start:end] == text``, character offsets.
``is_sentence``
    ReasonSeg: the queries are full sentences (long-question templates) rather than phrases.
``explanation``
    ReasonSeg explanatory answer, when the explanatory file has one for the image.
``ignore_mask``
    Pixels that count neither as object nor as background (ReasonSeg "ignore" polygons); ``None`` if none.
``meta``
    JSON-serialisable source details that evaluation needs (``image_id``, panoptic PNG path, COCO file name, ...).

Fields of :class:`SegObject`: ``mask``, ``class_index``, ``isthing``, ``iscrowd``, ``object_id`` (annotation or
segment id, as text), ``bbox`` (COCO XYWH or ``None``), ``texts`` (referring sentences / questions about this object)
and ``visual_prompts`` (:class:`VisualPrompt`, at most one per type before sampling, exactly one after VGD sampling).

Fields of :class:`VisualPrompt`: ``type`` (one of :data:`PROMPT_TYPES`), ``mask`` (the prompt drawn on the image
canvas: dilated point disc, dilated scribble, filled box, or a mask), ``points`` (raw ``[x, y]`` clicks where known)
and ``box`` (raw XYXY where known).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

Rle = dict[str, Any]
"""A COCO RLE: ``{"size": [height, width], "counts": str}``."""

TASKS: tuple[str, ...] = ("genseg", "ovseg", "refseg", "reaseg", "gcgseg", "intseg", "vgdseg", "chat")
PROMPT_TYPES: tuple[str, ...] = ("point", "scribble", "box", "mask")
ROLES: tuple[str, ...] = ("user", "assistant")


@dataclass
class VisualPrompt:
    type: str
    mask: Rle | None = None
    points: list[list[float]] | None = None
    box: list[float] | None = None

    def __post_init__(self) -> None:
        if self.type not in PROMPT_TYPES:
            raise ValueError(f"visual prompt type {self.type!r} is not one of {PROMPT_TYPES}")


@dataclass
class SegObject:
    mask: Rle
    class_index: int = -1
    isthing: bool = True
    iscrowd: bool = False
    object_id: str = ""
    bbox: list[float] | None = None
    texts: list[str] = field(default_factory=list)
    visual_prompts: list[VisualPrompt] = field(default_factory=list)

    def prompt(self, prompt_type: str) -> VisualPrompt | None:
        return next((p for p in self.visual_prompts if p.type == prompt_type), None)


@dataclass
class Turn:
    role: str
    text: str

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"turn role {self.role!r} is not one of {ROLES}")


@dataclass
class PhraseSpan:
    text: str
    start: int
    end: int


@dataclass
class XSamExample:
    record_id: str
    task: str
    source: str
    image_path: str | None = None
    image_size: tuple[int, int] | None = None
    class_names: list[str] = field(default_factory=list)
    class_ids: list[int] = field(default_factory=list)
    objects: list[SegObject] = field(default_factory=list)
    conversation: list[Turn] = field(default_factory=list)
    caption: str | None = None
    phrases: list[PhraseSpan] = field(default_factory=list)
    is_sentence: bool | None = None
    explanation: str | None = None
    ignore_mask: Rle | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task {self.task!r} is not one of {TASKS}")
        if self.image_size is not None:
            self.image_size = (int(self.image_size[0]), int(self.image_size[1]))
        if len(self.class_ids) != len(self.class_names):
            raise ValueError("class_ids must be parallel to class_names")
        for obj in self.objects:
            if obj.class_index >= len(self.class_names):
                raise ValueError(f"object {obj.object_id} has class_index {obj.class_index} "
                                 f"but there are {len(self.class_names)} classes")

    def evolve(self, **changes: Any) -> XSamExample:
        """A copy with some fields replaced (examples are treated as values)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-ready; ``meta`` stays a dict)."""
        out = asdict(self)
        out["image_size"] = list(self.image_size) if self.image_size is not None else None
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> XSamExample:
        """Inverse of :meth:`to_dict`; also accepts ``meta`` as a JSON string (the Arrow storage form)."""
        meta = data.get("meta") or {}
        if isinstance(meta, str):
            meta = json.loads(meta)
        objects = [
            SegObject(
                mask=o["mask"], class_index=o["class_index"], isthing=o["isthing"], iscrowd=o["iscrowd"],
                object_id=o["object_id"], bbox=o.get("bbox"), texts=list(o.get("texts") or []),
                visual_prompts=[VisualPrompt(**p) for p in o.get("visual_prompts") or []],
            )
            for o in data.get("objects") or []
        ]
        return cls(
            record_id=data["record_id"], task=data["task"], source=data["source"],
            image_path=data.get("image_path"),
            image_size=tuple(data["image_size"]) if data.get("image_size") else None,
            class_names=list(data.get("class_names") or []), class_ids=list(data.get("class_ids") or []),
            objects=objects,
            conversation=[Turn(**t) for t in data.get("conversation") or []],
            caption=data.get("caption"),
            phrases=[PhraseSpan(**p) for p in data.get("phrases") or []],
            is_sentence=data.get("is_sentence"), explanation=data.get("explanation"),
            ignore_mask=data.get("ignore_mask"), meta=meta,
        )
