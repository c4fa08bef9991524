"""`xsam convert`: an official X-SAM `pytorch_model.bin` -> a sharded safetensors checkpoint of this package.

The official checkpoints (architecture spec §7) are flat `torch.save` state dicts of the whole `XSamModel`: S3 holds
every module, S1 the segmentor (SAM encoder, pixel decoder, masked-attention decoder, the closed-set head
`segmentor.class_predictor` [134, 256]) and the connector, S2 only the two image projectors. Keys are renamed with
the one official key map (`xsam_hf.modeling.conversion`); nothing else about a tensor changes.

Memory: the released S3 file is ~10-20 GB, so no model is instantiated and no state dict is materialised. The file
is opened with `torch.load(mmap=True, weights_only=True)`, the expected names and shapes come from a model built on
the meta device, and every tensor is copied straight from the mapping into a safetensors shard, one at a time. Pages
of a file mapping that have been read count as resident memory until the kernel reclaims them; the converter hands
them back (`madvise(MADV_DONTNEED)`, Linux) as soon as a tensor is written, so the resident set stays near one
tensor. Everything is validated (names, shapes, duplicates) before the first byte is written.

Output (what `XSamForSegmentation.save_pretrained` + `XSamProcessor.save_pretrained` would write):
`config.json` (with the checkpoint's `stage`), `model.safetensors` or `model-0000k-of-0000n.safetensors` +
`model.safetensors.index.json`, the processor and tokenizer files when a tokenizer is given, and a model card.

Command line (wired as `xsam convert`):

    xsam convert s3_mixed_finetune/.../pytorch_model.bin --output X-SAM-Phi3-mini \
        --tokenizer microsoft/Phi-3-mini-4k-instruct            # released sizes come from the default preset

    xsam convert official_state_dict.pt --output out --text-config llm_config.json --vision-config siglip.json \
        --segmentation-config sam.json --decoder-config mask2former.json --xsam-kwargs xsam_model_kwargs.json \
        --tokenizer tokenizer/
"""

from __future__ import annotations

import argparse
import ctypes
import json
import mmap
import os
import re
import struct
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .modeling.configuration_xsam import XSamConfig
from .modeling.conversion import convert_official_key

SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
DEFAULT_MAX_SHARD_SIZE = "5GB"

# Official key prefixes that tell the stages apart (spec §7.2): S2 saves only the two image projectors, S1 only the
# segmentor and the connector, S3 everything.
_LANGUAGE_SIDE = ("llm.", "visual_projector.", "seg_projector.", "llm_projector.", "visual_encoder.", "vision_encoder.")
_SEGMENTATION_SIDE = ("segmentor.pixel_decoder.", "segmentor.decoder.", "seg_connector.")

# safetensors dtype names (little-endian raw buffers).
_SAFETENSORS_DTYPES: dict[torch.dtype, str] = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
    torch.float8_e4m3fn: "F8_E4M3",
    torch.float8_e5m2: "F8_E5M2",
}

# Fields of the official component configs (transformers 4.x) that are bookkeeping or training-time switches, not
# architecture: the converted checkpoint is for inference, so the target classes' defaults apply (e.g. Phi-3's
# `use_cache=True`, not the training run's False), the dtype is the converted weights', and `auto_map` would point
# the HF-native Phi-3 at remote code the official model never used (`trust_remote_code=False`).
_DROPPED_COMPONENT_FIELDS = ("_name_or_path", "transformers_version", "architectures", "auto_map", "use_cache",
                             "dtype", "torch_dtype")


class ShapeMismatchError(ValueError):
    """A checkpoint tensor whose shape differs from what the target configuration expects."""


# ----------------------------------------------------------------------------------------------------------------
# Reading the official checkpoint
def load_official_state_dict(path: str | os.PathLike) -> Mapping[str, torch.Tensor]:
    """The official state dict, memory-mapped: tensors are views of the file, nothing is read until used.

    Accepts a flat state dict or one wrapped as `{"state_dict": ...}` / `{"module": ...}` (the forms the official
    `guess_load_checkpoint` accepts). Only zip-format files (`torch.save`'s default since torch 1.6) can be mapped.
    """
    try:
        loaded = torch.load(os.fspath(path), mmap=True, weights_only=True, map_location="cpu")
    except RuntimeError as error:
        if "mmap" in str(error):
            raise ValueError(
                f"{path} is not a zip-format torch checkpoint, so it cannot be memory-mapped. Re-save it with "
                "torch.save(torch.load(path), new_path) on a machine with enough memory."
            ) from error
        raise
    if not isinstance(loaded, Mapping):
        raise ValueError(f"{path} holds a {type(loaded).__name__}, not a state dict.")
    for wrapper in ("state_dict", "module"):
        if not any(isinstance(v, torch.Tensor) for v in loaded.values()) and isinstance(loaded.get(wrapper), Mapping):
            loaded = loaded[wrapper]
    not_tensors = [k for k, v in loaded.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise ValueError(f"{path}: entries that are not tensors: {not_tensors[:5]}.")
    return loaded


def detect_stage(official_keys: Iterable[str]) -> str:
    """The training stage an official checkpoint comes from, by which modules it holds (spec §7.2)."""
    keys = list(official_keys)
    language = any(k.startswith(_LANGUAGE_SIDE) for k in keys)
    segmentation = any(k.startswith(_SEGMENTATION_SIDE) for k in keys)
    if language and segmentation:
        return "s3"
    if segmentation:
        return "s1"
    if language:
        return "s2"
    raise ValueError(
        "Not an X-SAM checkpoint: none of its keys belongs to the LLM side "
        f"({', '.join(_LANGUAGE_SIDE)}) or the segmentation side ({', '.join(_SEGMENTATION_SIDE)})."
    )


# ----------------------------------------------------------------------------------------------------------------
# What the target model expects
def expected_state_shapes(config: XSamConfig) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """`{name: (shape, dtype)}` of every tensor `XSamForSegmentation(config)` saves, from a meta-device build (no
    memory, so the released 4.6B-parameter model costs nothing). Tied parameters are listed once."""
    from .modeling.modeling_xsam import XSamForSegmentation

    with torch.device("meta"):
        model = XSamForSegmentation(config)
    seen: set[int] = set()
    shapes = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        shapes[name] = (tuple(tensor.shape), tensor.dtype)
    return shapes


# ----------------------------------------------------------------------------------------------------------------
# Planning: names and shapes only
@dataclass
class ConversionPlan:
    """What a conversion will do, computed from names and shapes alone.

    Attributes:
        renamed: `(new name, official name)` of every tensor that will be written, in the target model's order.
        dropped: official keys with no counterpart on purpose (SAM's prompt-encoder positional buffer).
        unknown: official keys no rule of the key map knows.
        not_in_model: official keys that map to a module the target stage does not build (e.g. S1's closed-set
            head in an S3 model).
        missing: tensors the target model expects that the checkpoint lacks (they keep their initialisation when
            loaded; for S1 and S2 checkpoints that is most of the model).
    """

    renamed: list[tuple[str, str]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    not_in_model: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def unused(self) -> list[str]:
        """Every official key that is not written: dropped, unknown or not in the model."""
        return sorted(self.dropped + self.unknown + self.not_in_model)


def _shape_of(value: Any) -> tuple[int, ...]:
    return tuple(value.shape) if hasattr(value, "shape") else tuple(int(d) for d in value)


def plan_conversion(official: Mapping[str, Any], expected: Mapping[str, Any]) -> ConversionPlan:
    """Match official tensors to the target model's tensors by name and shape.

    Args:
        official: official key -> tensor (any device, meta included) or shape.
        expected: target key -> shape, or `(shape, dtype)` as `expected_state_shapes` returns.

    Raises:
        ShapeMismatchError: listing every tensor whose shape differs, with both names and both shapes.
        ValueError: when two official keys map to the same name (the [A] and [M] spellings of one tensor).
    """
    expected_shapes = {
        key: _shape_of(value[0] if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], torch.dtype)
                       else value)
        for key, value in expected.items()
    }
    plan = ConversionPlan()
    sources: dict[str, str] = {}
    mismatches = []
    for official_key, value in official.items():
        try:
            key = convert_official_key(official_key)
        except KeyError:
            plan.unknown.append(official_key)
            continue
        if key is None:
            plan.dropped.append(official_key)
            continue
        if key not in expected_shapes:
            plan.not_in_model.append(official_key)
            continue
        if key in sources:
            raise ValueError(f"Official keys {sources[key]!r} and {official_key!r} both map to {key!r}.")
        sources[key] = official_key
        shape = _shape_of(value)
        if shape != expected_shapes[key]:
            mismatches.append((official_key, key, shape, expected_shapes[key]))
    if mismatches:
        lines = [
            f"{old!r} -> {new!r}: checkpoint {tuple(have)} vs model {tuple(want)}"
            for old, new, have, want in mismatches
        ]
        hint = ""
        if any(new.endswith(("embed_tokens.weight", "lm_head.weight")) for _, new, _, _ in mismatches):
            hint = (
                "\nThe official model resized the LLM vocabulary to len(tokenizer) after adding <SEG>, <p>, </p> "
                "(Phi-3: 32064 -> 32014 rows): pass the tokenizer it was trained with (--tokenizer), or set the "
                "text config's vocab_size to the checkpoint's rows."
            )
        raise ShapeMismatchError(
            f"Shape mismatch for {len(mismatches)} tensor(s); the checkpoint does not fit the target configuration:\n  "
            + "\n  ".join(lines)
            + hint
        )
    plan.renamed = [(key, sources[key]) for key in expected_shapes if key in sources]
    plan.missing = [key for key in expected_shapes if key not in sources]
    return plan


# ----------------------------------------------------------------------------------------------------------------
# Writing safetensors shards, one tensor at a time
def parse_size(size: int | str) -> int:
    """Bytes in `size` (an int, or "5GB", "500MB", "2GiB", ... as transformers' `max_shard_size`)."""
    if isinstance(size, int):
        return size
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*", size, flags=re.IGNORECASE)
    if not match:
        raise ValueError(f"Cannot read the size {size!r}; use e.g. '5GB', '500MB' or a number of bytes.")
    number, unit = float(match.group(1)), (match.group(2) or "B").upper()
    scale = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30,
             "TIB": 2**40}[unit]
    return int(number * scale)


def shard_names(sizes: Sequence[tuple[str, int]], max_shard_size: int) -> dict[str, str]:
    """Tensor name -> shard file name, greedily in order (as transformers does): a shard is closed when the next
    tensor would push it past `max_shard_size`; a larger tensor gets a shard of its own."""
    shards: list[list[str]] = [[]]
    used = 0
    for name, nbytes in sizes:
        if shards[-1] and used + nbytes > max_shard_size:
            shards.append([])
            used = 0
        shards[-1].append(name)
        used += nbytes
    if len(shards) == 1:
        return {name: SAFE_WEIGHTS_NAME for name in shards[0]}
    total = len(shards)
    return {
        name: f"model-{index + 1:05d}-of-{total:05d}.safetensors"
        for index, shard in enumerate(shards)
        for name in shard
    }


class _MappedPageReleaser:
    """Returns the pages of a memory-mapped checkpoint to the kernel once a tensor has been written.

    Only ranges of a read-only-in-practice private file mapping of `path` are released (checked against
    `/proc/self/maps`): dropping such pages loses nothing, a later read faults them in from the file again. Anywhere
    else (another OS, an in-memory state dict) this is a no-op.
    """

    def __init__(self, path: str | os.PathLike | None):
        self._ranges: list[tuple[int, int]] = []
        self._madvise = None
        if path is None or not sys.platform.startswith("linux") or not hasattr(mmap, "MADV_DONTNEED"):
            return
        target = os.path.realpath(path)
        try:
            with open("/proc/self/maps") as maps:
                for line in maps:
                    parts = line.split(maxsplit=5)
                    if len(parts) == 6 and parts[5].strip() == target:
                        low, high = (int(x, 16) for x in parts[0].split("-"))
                        self._ranges.append((low, high))
            libc = ctypes.CDLL(None, use_errno=True)
            libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
            self._madvise = libc.madvise
        except (OSError, AttributeError):
            self._ranges = []

    def release(self, tensor: torch.Tensor) -> None:
        if self._madvise is None or not self._ranges or tensor.device.type != "cpu":
            return
        storage = tensor.untyped_storage()
        start, size = storage.data_ptr(), storage.nbytes()
        for low, high in self._ranges:
            if low <= start and start + size <= high:
                page = mmap.PAGESIZE
                first = start - start % page
                last = min(high, -(-(start + size) // page) * page)
                self._madvise(first, last - first, mmap.MADV_DONTNEED)
                return


def write_safetensors_file(
    path: str | os.PathLike,
    entries: Sequence[tuple[str, tuple[int, ...], torch.dtype]],
    fetch: Callable[[str], torch.Tensor],
    after_write: Callable[[torch.Tensor], None] | None = None,
) -> int:
    """Write one safetensors file, streaming: the header is built from shapes and dtypes alone, then each tensor is
    fetched, cast to its entry's dtype if needed, written, and released. Returns the number of data bytes.

    The layout is the safetensors format: an 8-byte little-endian header length, a JSON header (tensor name ->
    dtype, shape, byte offsets; `__metadata__ = {"format": "pt"}` as transformers requires) padded with spaces to a
    multiple of 8, then the raw little-endian buffers back to back in header order.
    """
    if sys.byteorder != "little":
        raise RuntimeError("safetensors buffers are little-endian; converting on a big-endian machine is unsupported.")
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape, dtype in entries:
        if dtype not in _SAFETENSORS_DTYPES:
            raise ValueError(f"{name}: dtype {dtype} has no safetensors equivalent.")
        nbytes = torch.Size(shape).numel() * dtype.itemsize
        header[name] = {
            "dtype": _SAFETENSORS_DTYPES[dtype],
            "shape": list(shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(encoded)))
        handle.write(encoded)
        for name, shape, dtype in entries:
            source = fetch(name)
            tensor = source.to(dtype) if source.dtype != dtype else source
            tensor = tensor.contiguous()
            if tuple(tensor.shape) != tuple(shape):
                raise ShapeMismatchError(f"{name}: tensor {tuple(tensor.shape)} vs header {tuple(shape)}.")
            if tensor.numel():
                handle.write(memoryview(tensor.reshape(-1).view(torch.uint8).numpy()))
            del tensor
            if after_write is not None:
                after_write(source)
    return offset


def _remove_stale_weights(output_dir: Path) -> None:
    """Delete weight files of an earlier conversion into the same folder (as `save_pretrained` does), so a stale
    shard can never be mixed with new ones."""
    pattern = re.compile(r"^model(-\d{5}-of-\d{5})?\.safetensors$")
    for path in output_dir.iterdir():
        if path.is_file() and (pattern.match(path.name) or path.name == SAFE_WEIGHTS_INDEX_NAME):
            path.unlink()


# ----------------------------------------------------------------------------------------------------------------
# Configuration from the official component configs
def read_json_config(source: str | os.PathLike | Mapping[str, Any]) -> dict[str, Any]:
    """A config as a dict: a mapping, a JSON file, or a checkpoint directory holding `config.json`."""
    if isinstance(source, Mapping):
        return dict(source)
    path = Path(source)
    if path.is_dir():
        path = path / "config.json"
    return json.loads(path.read_text())


def _component(source: str | os.PathLike | Mapping[str, Any], model_type: str | None, nested: str | None) -> dict:
    config = read_json_config(source)
    # Full SigLIP / SAM configs (what `google/siglip2-so400m-patch14-384` and `facebook/sam-vit-large` ship) nest
    # the image encoder's config; X-SAM only uses that part.
    if nested and isinstance(config.get(nested), Mapping):
        config = dict(config[nested])
    for key in _DROPPED_COMPONENT_FIELDS:
        config.pop(key, None)
    if model_type is not None:
        config["model_type"] = model_type
    return config


def xsam_kwargs_to_config(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """`XSamConfig` fields from the official `XSamModel` arguments.

    Accepts the flat arguments of the official config (`seg_select_layers`, `connector_hidden_dim`,
    `connector_scale_factor`, `visual_select_layer`, `downsample_ratio`, ...), or a JSON object that nests them
    under `"xsam_kwargs"` next to `"special_token_ids"` (`{"<SEG>": id, "<p>": id, "</p>": id}`) and
    `"resized_llm_vocab"` (the LLM's vocabulary after the resize).
    """
    flat = dict(kwargs.get("xsam_kwargs", kwargs))
    fields: dict[str, Any] = {}
    unsupported = {
        "connector_type": ("conv", flat.get("connector_type", "conv")),
        "cond_type": ("phrase", flat.get("cond_type", "phrase")),
        "use_dual_encoder": (True, flat.get("use_dual_encoder", True)),
    }
    for name, (supported, value) in unsupported.items():
        if value != supported:
            raise ValueError(f"Official argument {name}={value!r} is not supported (only {supported!r}).")
    if "seg_select_layers" in flat:
        fields["connector_feature_layers"] = list(flat["seg_select_layers"])[-3:]
    if "connector_scale_factor" in flat:
        fields["connector_scale_factors"] = [float(s) for s in list(flat["connector_scale_factor"])[-3:]]
    for official, ours in (
        ("connector_hidden_dim", "connector_hidden_size"),
        ("visual_select_layer", "vision_feature_layer"),
        ("downsample_ratio", "segmentation_downsample_ratio"),
        ("llm_loss_weight", "lm_loss_weight"),
        ("seg_loss_weight", "seg_loss_weight"),
    ):
        if official in flat:
            fields[ours] = flat[official]
    token_ids = kwargs.get("special_token_ids") or {}
    for token, ours in (("<SEG>", "seg_token_id"), ("<p>", "phrase_start_token_id"), ("</p>", "phrase_end_token_id")):
        if token in token_ids:
            fields[ours] = int(token_ids[token])
    return fields


def build_config(
    stage: str,
    preset: str | None = "x-sam-phi3-mini",
    vision_config: str | os.PathLike | Mapping | None = None,
    segmentation_config: str | os.PathLike | Mapping | None = None,
    text_config: str | os.PathLike | Mapping | None = None,
    decoder_config: str | os.PathLike | Mapping | None = None,
    xsam_kwargs: str | os.PathLike | Mapping | None = None,
    **overrides: Any,
) -> XSamConfig:
    """The target `XSamConfig`: a preset (default: the released sizes), with any official component config
    replacing its sub-config wholesale, then the official `XSamModel` arguments, then `overrides`.

    `xsam_kwargs` may carry `resized_llm_vocab`, which becomes the text config's `vocab_size`.
    """
    from .presets import get_preset

    fields: dict[str, Any] = dict(get_preset(preset)["config"]) if preset else {}
    if vision_config is not None:
        fields["vision_config"] = _component(vision_config, "siglip_vision_model", "vision_config")
    if segmentation_config is not None:
        fields["segmentation_encoder_config"] = _component(segmentation_config, "sam_vision_model", "vision_config")
    if text_config is not None:
        fields["text_config"] = _component(text_config, None, None)
    if decoder_config is not None:
        fields["decoder_config"] = _component(decoder_config, "mask2former", None)
    resized_vocab = None
    if xsam_kwargs is not None:
        official = read_json_config(xsam_kwargs)
        fields.update(xsam_kwargs_to_config(official))
        resized_vocab = official.get("resized_llm_vocab")
    fields.update(overrides)
    fields["stage"] = stage
    config = XSamConfig(**fields)
    if resized_vocab is not None:
        config.text_config.vocab_size = int(resized_vocab)
    return config


# ----------------------------------------------------------------------------------------------------------------
# The conversion
@dataclass
class ConversionReport:
    """Result of `convert_checkpoint`."""

    output_dir: str
    stage: str
    plan: ConversionPlan
    weight_map: dict[str, str]
    total_size: int
    dtype: str
    processor_saved: bool
    written: bool = True

    @property
    def shards(self) -> list[str]:
        return sorted(set(self.weight_map.values()))

    def summary(self) -> str:
        plan = self.plan
        done = "Converted" if self.written else "Dry run (nothing written): would convert"
        lines = [
            f"{done} an official {self.stage.upper()} checkpoint into {self.output_dir}: {len(plan.renamed)} "
            f"tensors ({self.total_size / 1e9:.3f} GB, {self.dtype}) in {len(self.shards)} shard(s)"
            + ("; processor and tokenizer saved." if self.processor_saved else "; no processor saved."),
            f"Unused checkpoint keys: {len(plan.unused)} ({len(plan.dropped)} dropped on purpose, "
            f"{len(plan.unknown)} unknown, {len(plan.not_in_model)} not in a {self.stage} model).",
        ]
        lines += [f"  unused: {key}" for key in plan.unused]
        lines.append(f"Missing model keys (left at initialisation when loaded): {len(plan.missing)}.")
        lines += [f"  missing: {key}" for key in _collapse_layers(plan.missing)]
        return "\n".join(lines)


def _collapse_layers(keys: Sequence[str]) -> list[str]:
    """Shorten long key lists for display: `...layers.{0..31}.x` instead of 32 lines."""
    groups: dict[str, list[int]] = {}
    order: list[str] = []
    for key in keys:
        match = re.search(r"\.(\d+)\.", key)
        pattern = key if match is None else key[: match.start()] + ".{}." + key[match.end():]
        if pattern not in groups:
            groups[pattern] = []
            order.append(pattern)
        if match is not None:
            groups[pattern].append(int(match.group(1)))
    out = []
    for pattern in order:
        indices = sorted(set(groups[pattern]))
        if not indices:
            out.append(pattern)
        elif len(indices) == 1:
            out.append(pattern.replace("{}", str(indices[0]), 1))
        else:
            out.append(pattern.replace("{}", "{" + f"{indices[0]}..{indices[-1]}" + "}", 1))
    return out


def _resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or dtype == "auto":
        return None
    if isinstance(dtype, torch.dtype):
        return dtype
    resolved = getattr(torch, str(dtype), None)
    if not isinstance(resolved, torch.dtype) or not resolved.is_floating_point:
        raise ValueError(f"dtype must be 'auto' or a floating dtype such as 'bfloat16', got {dtype!r}.")
    return resolved


def convert_checkpoint(
    checkpoint: str | os.PathLike,
    output_dir: str | os.PathLike,
    config: XSamConfig | None = None,
    *,
    stage: str | None = None,
    preset: str | None = "x-sam-phi3-mini",
    vision_config: str | os.PathLike | Mapping | None = None,
    segmentation_config: str | os.PathLike | Mapping | None = None,
    text_config: str | os.PathLike | Mapping | None = None,
    decoder_config: str | os.PathLike | Mapping | None = None,
    xsam_kwargs: str | os.PathLike | Mapping | None = None,
    tokenizer: Any = None,
    vision_image_processor: str | os.PathLike | Mapping | None = None,
    segmentation_image_processor: str | os.PathLike | Mapping | None = None,
    dtype: str | torch.dtype | None = None,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    strict: bool = False,
    model_card: bool = True,
    repo_id: str | None = None,
    dry_run: bool = False,
) -> ConversionReport:
    """Convert an official `pytorch_model.bin` into a checkpoint folder that `AutoModel.from_pretrained` loads.

    Args:
        checkpoint: the official file (S1, S2 or S3 layout).
        output_dir: folder to write (created; earlier weight files in it are replaced).
        config: the target configuration. When None it is built by `build_config` from `preset` and the official
            component configs (`vision_config`: SigLIP, `segmentation_config`: SAM, `text_config`: the LLM,
            `decoder_config`: Mask2Former, each a JSON file, checkpoint folder or dict; `xsam_kwargs`: the official
            `XSamModel` arguments).
        stage: "s1", "s2" or "s3"; default: detected from the checkpoint's keys.
        tokenizer: the LLM tokenizer (object, folder or Hub id). `<SEG>`, `<p>`, `</p>` are added if missing and the
            vocabulary size becomes `len(tokenizer)` (the official resize, spec §2.1); the token ids come from it.
            With a tokenizer, an `XSamProcessor` is saved next to the weights.
        vision_image_processor, segmentation_image_processor: the official image-processor JSONs; only their sizes
            are read (default: the encoders' input sizes).
        dtype: cast floating tensors ("bfloat16", "float32", ...); default "auto" keeps the checkpoint's dtypes.
        max_shard_size: largest shard ("5GB"); a single shard is named `model.safetensors` with no index.
        strict: fail if a checkpoint key is unknown or a model key is missing (expected for S1/S2 checkpoints,
            which hold part of the model).
        model_card: write a README.md model card (`xsam_hf.hub.build_model_card`).
        repo_id: the Hub id the card's usage snippet names (default `xsam_hf.hub.RELEASED_MODEL_ID`).
        dry_run: check names and shapes and plan the shards, but write nothing (a checkpoint of meta tensors works).
    """
    official = load_official_state_dict(checkpoint)
    stage = stage or detect_stage(official)
    built_here = config is None
    if config is None:
        config = build_config(
            stage,
            preset=preset,
            vision_config=vision_config,
            segmentation_config=segmentation_config,
            text_config=text_config,
            decoder_config=decoder_config,
            xsam_kwargs=xsam_kwargs,
        )
    else:
        config = XSamConfig.from_dict(config.to_dict())
        config.stage = stage

    tokenizer = _prepare_tokenizer(tokenizer, config) if tokenizer is not None else None
    if stage == "s1" and built_here:
        # The closed-set head's size is a property of the checkpoint (COCO panoptic: 133 classes + no-object).
        for key, value in official.items():
            if _new_name(key) == "closed_set_head.weight":
                config.num_closed_set_classes = int(value.shape[0]) - 1

    expected = expected_state_shapes(config)
    plan = plan_conversion(official, expected)
    if not plan.renamed:
        raise ValueError(f"None of the checkpoint's {len(official)} tensors belongs to a {stage} model.")
    if strict and (plan.unknown or plan.missing):
        raise ValueError(
            f"--strict: {len(plan.unknown)} unknown checkpoint keys {plan.unknown[:5]} and {len(plan.missing)} "
            f"missing model keys {_collapse_layers(plan.missing)[:5]}."
        )

    cast = _resolve_dtype(dtype)
    target_dtype = {
        key: (cast if cast is not None and official[source].is_floating_point() else official[source].dtype)
        for key, source in plan.renamed
    }
    floating = Counter(d for d in target_dtype.values() if d.is_floating_point)
    config_dtype = floating.most_common(1)[0][0] if floating else torch.float32

    sizes = [(key, torch.Size(expected[key][0]).numel() * target_dtype[key].itemsize) for key, _ in plan.renamed]
    weight_map = shard_names(sizes, parse_size(max_shard_size))
    report = ConversionReport(
        output_dir=os.fspath(output_dir),
        stage=stage,
        plan=plan,
        weight_map=weight_map,
        total_size=sum(size for _, size in sizes),
        dtype=str(config_dtype).removeprefix("torch."),
        processor_saved=tokenizer is not None and not dry_run,
        written=not dry_run,
    )
    if dry_run:
        return report

    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    _remove_stale_weights(output)
    releaser = _MappedPageReleaser(checkpoint)
    source_of = dict(plan.renamed)
    files: dict[str, list[str]] = {}
    for key, file_name in weight_map.items():
        files.setdefault(file_name, []).append(key)
    total_size = 0
    for file_name, keys in files.items():
        total_size += write_safetensors_file(
            output / file_name,
            [(key, expected[key][0], target_dtype[key]) for key in keys],
            fetch=lambda key: official[source_of[key]],
            after_write=releaser.release,
        )
    if len(files) > 1:
        index = {
            "metadata": {
                "total_parameters": sum(torch.Size(expected[key][0]).numel() for key, _ in plan.renamed),
                "total_size": total_size,
            },
            "weight_map": dict(sorted(weight_map.items())),
        }
        (output / SAFE_WEIGHTS_INDEX_NAME).write_text(json.dumps(index, indent=2, sort_keys=False) + "\n")

    config.architectures = ["XSamForSegmentation"]
    config.dtype = config_dtype
    config.save_pretrained(output)
    if tokenizer is not None:
        _save_processor(output, config, tokenizer, vision_image_processor, segmentation_image_processor)
    if model_card:
        from .hub import RELEASED_MODEL_ID, build_model_card

        card = build_model_card(
            repo_id or RELEASED_MODEL_ID,
            kind="converted",
            stage=stage,
            source=Path(checkpoint).name,
            with_processor=tokenizer is not None,
        )
        card.save(output / "README.md")
    if total_size != report.total_size:
        raise RuntimeError(f"Wrote {total_size} bytes of tensors where {report.total_size} were planned.")
    return report


def _new_name(key: str) -> str | None:
    """The key's name in this package (None if dropped or unknown)."""
    try:
        return convert_official_key(key)
    except KeyError:
        return None


def _prepare_tokenizer(tokenizer: Any, config: XSamConfig):
    """Load the tokenizer, add the X-SAM tokens, and make the config's vocabulary and token ids follow it."""
    from transformers import AutoTokenizer

    from .modeling.from_components import add_special_tokens

    if isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = AutoTokenizer.from_pretrained(os.fspath(tokenizer))
    ids = add_special_tokens(tokenizer)
    wanted = {"seg_token_id": ids["<SEG>"], "phrase_start_token_id": ids["<p>"], "phrase_end_token_id": ids["</p>"]}
    config.text_config.vocab_size = len(tokenizer)
    for name, value in wanted.items():
        setattr(config, name, value)
    return tokenizer


def _image_size(source: str | os.PathLike | Mapping | None, default: int, keys: Sequence[str]) -> int:
    """A side length from an image-processor JSON: the first of `keys` (e.g. `size`, `pad_size`) that is there."""
    if source is None:
        return default
    processor = read_json_config(source)
    for key in keys:
        value = processor.get(key)
        if isinstance(value, Mapping):
            value = value.get("height", value.get("longest_edge", value.get("shortest_edge")))
        if value is not None:
            return int(value)
    return default


def _save_processor(output: Path, config: XSamConfig, tokenizer: Any, vision_source: Any, seg_source: Any) -> None:
    from .processing import XSamProcessor
    from .processing.image_processing import build_sam_image_processor, build_siglip_image_processor

    vision_size = _image_size(vision_source, config.vision_config.image_size, ("size", "crop_size"))
    canvas = _image_size(seg_source, config.segmentation_encoder_config.image_size, ("pad_size", "size"))
    processor = XSamProcessor(
        image_processor=build_siglip_image_processor(vision_size),
        seg_image_processor=build_sam_image_processor(canvas),
        tokenizer=tokenizer,
        pad_to_square=config.vision_pad_to_square,
    )
    processor.save_pretrained(output)


# ----------------------------------------------------------------------------------------------------------------
# Command line
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xsam convert",
        description="Convert an official X-SAM pytorch_model.bin (S1, S2 or S3) into a sharded safetensors "
        "checkpoint that AutoModel.from_pretrained loads. Streams the tensors: memory stays near one tensor.",
    )
    parser.add_argument("checkpoint", help="the official pytorch_model.bin")
    parser.add_argument("--output", "-o", required=True, help="output folder")
    parser.add_argument("--stage", choices=("auto", "s1", "s2", "s3"), default="auto",
                        help="training stage of the checkpoint (default: detected from its keys)")
    parser.add_argument("--preset", default="x-sam-phi3-mini",
                        help="sizes to start from (default: the released x-sam-phi3-mini); component configs "
                        "below replace its parts")
    parser.add_argument("--vision-config", help="SigLIP config JSON or checkpoint folder")
    parser.add_argument("--segmentation-config", help="SAM config JSON or checkpoint folder")
    parser.add_argument("--text-config", help="LLM config JSON or checkpoint folder")
    parser.add_argument("--decoder-config", help="Mask2Former config JSON")
    parser.add_argument("--xsam-kwargs", help="JSON of the official XSamModel arguments")
    parser.add_argument("--tokenizer", help="LLM tokenizer (folder or Hub id); also saves the processor")
    parser.add_argument("--vision-image-processor", help="official SigLIP image-processor JSON (size)")
    parser.add_argument("--segmentation-image-processor", help="official SAM image-processor JSON (canvas size)")
    parser.add_argument("--dtype", default="auto", help="auto (keep), bfloat16, float16 or float32")
    parser.add_argument("--max-shard-size", default=DEFAULT_MAX_SHARD_SIZE, help="largest shard, e.g. 5GB")
    parser.add_argument("--strict", action="store_true", help="fail on unknown checkpoint keys or missing model keys")
    parser.add_argument("--no-model-card", action="store_true", help="do not write README.md")
    parser.add_argument("--repo-id", help="Hub id the model card's usage snippet names")
    parser.add_argument("--dry-run", action="store_true", help="check names and shapes only; write nothing")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """`xsam convert ...`; returns the exit status (0 done, 1 the checkpoint cannot be converted)."""
    args = build_parser().parse_args(argv)
    try:
        report = convert_checkpoint(
            args.checkpoint,
            args.output,
            stage=None if args.stage == "auto" else args.stage,
            preset=args.preset,
            vision_config=args.vision_config,
            segmentation_config=args.segmentation_config,
            text_config=args.text_config,
            decoder_config=args.decoder_config,
            xsam_kwargs=args.xsam_kwargs,
            tokenizer=args.tokenizer,
            vision_image_processor=args.vision_image_processor,
            segmentation_image_processor=args.segmentation_image_processor,
            dtype=args.dtype,
            max_shard_size=args.max_shard_size,
            strict=args.strict,
            model_card=not args.no_model_card,
            repo_id=args.repo_id,
            dry_run=args.dry_run,
        )
    except (ValueError, FileNotFoundError) as error:
        print(f"xsam convert: error: {error}", file=sys.stderr)
        return 1
    print(report.summary())
    return 0


__all__ = [
    "ConversionPlan",
    "ConversionReport",
    "ShapeMismatchError",
    "build_config",
    "build_parser",
    "convert_checkpoint",
    "detect_stage",
    "expected_state_shapes",
    "load_official_state_dict",
    "main",
    "plan_conversion",
    "shard_names",
    "write_safetensors_file",
    "xsam_kwargs_to_config",
]

if __name__ == "__main__":
    sys.exit(main())
