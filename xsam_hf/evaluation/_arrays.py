"""Input conversion shared by the metrics: tensors or arrays in, checked NumPy arrays out."""

from __future__ import annotations

from typing import Any

import numpy as np


def to_numpy(value: Any) -> np.ndarray:
    """Return ``value`` as a NumPy array.

    torch tensors (any device, any dtype) are detached and copied to the CPU; torch is not imported here so that
    the metrics work without it.
    """
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        tensor = value.detach().cpu()
        if str(tensor.dtype) == "torch.bfloat16":  # NumPy has no bfloat16
            tensor = tensor.float()
        return tensor.numpy()
    return np.asarray(value)


def as_binary_mask(value: Any, name: str) -> np.ndarray:
    """Return a ``(H, W)`` bool mask; accept bool or 0/1 numeric input, reject anything else by name."""
    array = to_numpy(value)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (H, W) mask, got an array of shape {tuple(array.shape)}")
    if array.dtype == bool:
        return array
    if not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"{name} must be bool or numeric 0/1, got dtype {array.dtype}")
    foreground = array == 1
    if not np.all(foreground | (array == 0)):
        raise ValueError(
            f"{name} must contain only 0 and 1 (threshold probabilities or logits first), "
            f"found values such as {np.unique(array[~(foreground | (array == 0))])[:5].tolist()}"
        )
    return foreground


def as_label_map(value: Any, name: str) -> np.ndarray:
    """Return a ``(H, W)`` int64 map of ids; reject non-integer or non-2-D input by name."""
    array = to_numpy(value)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (H, W) id map, got an array of shape {tuple(array.shape)}")
    if array.dtype == bool or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must hold integer ids, got dtype {array.dtype}")
    return array.astype(np.int64, copy=False)


def check_same_shape(prediction: np.ndarray, reference: np.ndarray, what: str) -> None:
    """Raise a ``ValueError`` naming ``what`` when the prediction and reference sizes differ."""
    if prediction.shape != reference.shape:
        raise ValueError(
            f"{what}: the prediction has size {tuple(prediction.shape)} but the reference has size "
            f"{tuple(reference.shape)}; resize predictions to the original image size first"
        )
