"""Concatenating sources with balance resampling: small sources are repeated so that they are seen more often.

With ``f_d = N_d / Σ N`` a source gets the repeat factor ``r_d = max(1, sqrt(t / f_d))`` (``t = 0.1``) and the length
``floor(N_d · r_d)``; its indices wrap modulo ``N_d``. A source's ``repeat`` in a recipe multiplies ``r_d`` further.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from typing import Any, Protocol

DEFAULT_THRESHOLD = 0.1


class SizedIndexable(Protocol):
    def __len__(self) -> int: ...
    def __getitem__(self, index: int) -> Any: ...


def repeat_factors(lengths: Sequence[int], threshold: float = DEFAULT_THRESHOLD) -> list[float]:
    total = sum(lengths)
    return [max(1.0, math.sqrt(threshold / (n / total))) if n else 0.0 for n in lengths]


class BalancedConcatDataset:
    """``ConcatDataset`` whose parts are resampled by :func:`repeat_factors` (``threshold=0`` disables it)."""

    def __init__(self, datasets: Sequence[SizedIndexable], threshold: float = DEFAULT_THRESHOLD,
                 names: Sequence[str] | None = None, weights: Sequence[float] | None = None) -> None:
        """``weights``: one more factor per source, on top of the balance factor (a recipe's ``repeat``)."""
        self.datasets = list(datasets)
        self.names = list(names) if names is not None else [getattr(d, "name", str(i)) for i, d in enumerate(datasets)]
        self.original_lengths = [len(d) for d in self.datasets]
        weights = [1.0] * len(self.datasets) if weights is None else [float(w) for w in weights]
        if len(weights) != len(self.datasets) or any(not w > 0 for w in weights):
            raise ValueError(f"Need one positive weight per source ({len(self.datasets)}), got {weights}.")
        balance = repeat_factors(self.original_lengths, threshold) if threshold > 0 else \
            [1.0 if n else 0.0 for n in self.original_lengths]
        self.factors = [factor * weight for factor, weight in zip(balance, weights)]
        self.lengths = [math.floor(n * r + 1e-9) for n, r in zip(self.original_lengths, self.factors)]
        self.offsets = [0]
        for length in self.lengths:
            self.offsets.append(self.offsets[-1] + length)

    def __len__(self) -> int:
        return self.offsets[-1]

    def locate(self, index: int) -> tuple[int, int]:
        """Global index -> (source number, index inside that source)."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        source = bisect.bisect_right(self.offsets, index) - 1
        return source, (index - self.offsets[source]) % self.original_lengths[source]

    def source_of(self, index: int) -> int:
        return self.locate(index)[0]

    def __getitem__(self, index: int) -> Any:
        source, local = self.locate(index)
        return self.datasets[source][local]
