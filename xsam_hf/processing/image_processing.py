"""Image inputs for X-SAM: any user image to RGB, the SigLIP square and the SAM canvas.

The two image processors are the stock transformers PIL-backend classes (`SiglipImageProcessorPil`,
`SamImageProcessorPil`): with the settings below they reproduce the official preprocessing bit for bit. The only
X-SAM addition on the SigLIP side, padding to a square with the mean colour, is done here on the PIL image before the
SigLIP processor sees it.
"""

from __future__ import annotations

import os
from typing import Any, Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from transformers.image_processing_utils import BaseImageProcessor
from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil
from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

ImageLike = Union[Image.Image, np.ndarray, torch.Tensor, str, os.PathLike]

SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Modes whose pixels are not 8-bit: PIL's own convert("RGB") would clip them instead of rescaling.
_HIGH_BIT_DEPTH_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}


def build_siglip_image_processor(size: int) -> SiglipImageProcessorPil:
    """The SigLIP processor of the released model at `size` px: square resize (bicubic), mean = std = 0.5."""
    return SiglipImageProcessorPil(
        size={"height": size, "width": size},
        resample=Image.Resampling.BICUBIC,
        image_mean=list(SIGLIP_MEAN),
        image_std=list(SIGLIP_STD),
    )


def build_sam_image_processor(canvas_size: int) -> SamImageProcessorPil:
    """The SAM processor on a `canvas_size` square canvas: longest side resized (bilinear), ImageNet
    normalisation, zero padding at the bottom/right."""
    return SamImageProcessorPil(
        size={"longest_edge": canvas_size},
        pad_size={"height": canvas_size, "width": canvas_size},
        resample=Image.Resampling.BILINEAR,
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
    )


def as_pil_backend(image_processor: BaseImageProcessor) -> BaseImageProcessor:
    """Return the PIL-backend twin of a SigLIP or SAM image processor.

    On a machine with torchvision, `from_pretrained` picks the torchvision backend, whose resize kernels differ from
    PIL's by up to a few grey levels; the official preprocessing (and the golden fixture) is PIL's, so the processor
    pins the PIL backend. Other image processors are returned unchanged.
    """
    if getattr(image_processor, "backend", "pil") == "pil":
        return image_processor
    for pil_class in (SiglipImageProcessorPil, SamImageProcessorPil):
        if type(image_processor).__name__ == pil_class.__name__.removesuffix("Pil"):
            config = {k: v for k, v in image_processor.to_dict().items() if k != "image_processor_type"}
            return pil_class(**config)
    return image_processor


def canvas_size_of(seg_image_processor: BaseImageProcessor) -> int:
    """Side of the square SAM canvas that `seg_image_processor` pads to."""
    pad_size = seg_image_processor.pad_size
    height = pad_size["height"] if isinstance(pad_size, dict) else pad_size.height
    width = pad_size["width"] if isinstance(pad_size, dict) else pad_size.width
    if height != width:
        raise ValueError(f"X-SAM needs a square SAM canvas, got pad_size {height}x{width}.")
    return int(height)


def resized_size(height: int, width: int, longest_edge: int) -> tuple[int, int]:
    """The (height, width) the SAM processor resizes an image to: longest side = `longest_edge`, `int(x + 0.5)`."""
    scale = longest_edge / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def expand_to_square(image: Image.Image, fill: tuple[int, ...]) -> Image.Image:
    """Pad an RGB image to a square with `fill`, the original centred (as LLaVA's `expand2square`)."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new(image.mode, (side, side), fill)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def mean_fill_colour(image_mean: Any) -> tuple[int, int, int]:
    """The padding colour used with `expand_to_square`: the processor mean in 0-255, truncated (0.5 -> 127)."""
    mean = list(image_mean) if isinstance(image_mean, (list, tuple)) else [float(image_mean)] * 3
    return tuple(int(m * 255) for m in mean)  # type: ignore[return-value]


def load_image(image: ImageLike) -> Image.Image:
    """Turn any supported image into an 8-bit RGB PIL image.

    Accepted: a PIL image of any mode (transparency is composited on white, 16-bit and float modes are rescaled to
    8 bits), a numpy array `(H, W)` or `(H, W, C)` with C in {1, 3, 4}, a torch tensor `(C, H, W)` or `(H, W)`, or a
    path to an image file. Integer arrays above 255 are read as 16-bit; float arrays must lie in [0, 1] or [0, 255].

    Raises:
        TypeError: for an unsupported type; ValueError: for an unreadable file or an array that is not an image.
    """
    if isinstance(image, (str, os.PathLike)):
        return _open_image_file(image)
    if isinstance(image, Image.Image):
        return _pil_to_rgb(image)
    if isinstance(image, torch.Tensor):
        return _array_to_rgb(_tensor_to_hwc(image))
    if isinstance(image, np.ndarray):
        return _array_to_rgb(_numpy_to_hwc(image))
    raise TypeError(
        f"Unsupported image type {type(image).__name__}: pass a PIL image, a numpy array (H, W[, C]), "
        "a torch tensor (C, H, W) or a path to an image file."
    )


def _open_image_file(path: str | os.PathLike) -> Image.Image:
    try:
        with Image.open(path) as opened:
            opened.load()
            return _pil_to_rgb(opened)
    except FileNotFoundError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ValueError(f"Could not read an image from {os.fspath(path)!r}: {error}") from error


def _pil_to_rgb(image: Image.Image) -> Image.Image:
    try:
        image.load()
    except (OSError, SyntaxError) as error:
        raise ValueError(f"The PIL image could not be decoded (corrupt or truncated data): {error}") from error
    if image.width == 0 or image.height == 0:
        raise ValueError(f"The image is empty ({image.width}x{image.height}).")
    if image.mode == "RGB":
        return image
    if image.mode in _HIGH_BIT_DEPTH_MODES:
        return _array_to_rgb(np.asarray(image))
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in _ALPHA_MODES:
        return _composite_on_white(image.convert("RGBA"))
    return image.convert("RGB")


def _composite_on_white(rgba: Image.Image) -> Image.Image:
    # Same choice as transformers' `convert_to_rgb`: transparent pixels become white, not black.
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    background.alpha_composite(rgba)
    return background.convert("RGB")


def _tensor_to_hwc(tensor: torch.Tensor) -> np.ndarray:
    array = tensor.detach().to("cpu")
    if array.dtype == torch.bfloat16 or array.dtype == torch.float16:
        array = array.float()
    array = array.numpy()
    if array.ndim == 2:
        return array
    if array.ndim == 3:
        if array.shape[0] in (1, 3, 4):
            return np.moveaxis(array, 0, -1)
        if array.shape[-1] in (1, 3, 4):
            return array
    raise ValueError(
        f"A torch image must be (C, H, W) with C in {{1, 3, 4}} or (H, W); got shape {tuple(tensor.shape)}. "
        "Pass a batch as a list of images."
    )


def _numpy_to_hwc(array: np.ndarray) -> np.ndarray:
    if array.ndim == 2:
        return array
    if array.ndim == 3:
        if array.shape[-1] in (1, 3, 4):
            return array
        if array.shape[0] in (1, 3, 4):
            return np.moveaxis(array, 0, -1)
    raise ValueError(
        f"A numpy image must be (H, W) or (H, W, C) with C in {{1, 3, 4}}; got shape {array.shape}. "
        "Pass a batch as a list of images."
    )


def _to_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.integer):
        low, high = int(array.min()), int(array.max())
        if low < 0:
            raise ValueError(f"Integer image values must be non-negative, got a minimum of {low}.")
        # 16-bit data (PIL "I;16", uint16 arrays) maps 0..65535 onto 0..255; small integers are already 8-bit.
        if array.dtype == np.uint16 or high > 255:
            if high > 65535:
                raise ValueError(f"Integer image values above 65535 are not supported (max {high}).")
            return np.round(array.astype(np.float64) / 257.0).astype(np.uint8)
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ValueError("The image contains NaN or infinite values.")
        low, high = float(array.min()), float(array.max())
        if low >= 0.0 and high <= 1.0:
            return np.round(array * 255.0).astype(np.uint8)
        if low >= 0.0 and high <= 255.0:
            return np.round(array).astype(np.uint8)
        raise ValueError(f"Float images must lie in [0, 1] or [0, 255]; got values in [{low:g}, {high:g}].")
    raise ValueError(f"Unsupported image dtype {array.dtype}.")


def _array_to_rgb(array: np.ndarray) -> Image.Image:
    if array.size == 0:
        raise ValueError(f"The image is empty (shape {array.shape}).")
    pixels = _to_uint8(np.ascontiguousarray(array))
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    if pixels.ndim == 2:
        return Image.fromarray(pixels).convert("RGB")
    if pixels.shape[-1] == 4:
        return _composite_on_white(Image.fromarray(pixels))
    return Image.fromarray(pixels)
