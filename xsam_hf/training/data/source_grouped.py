"""Batches that never mix sources: at every step, every rank's micro-batch comes from the same data set (task).

Per epoch (seeded with ``(seed, epoch)``):

1. each source's indices are shuffled and cut into groups of ``G = mega_batch_mult × per_device_batch_size ×
   world_size``; a source's last, short group is filled with samples of its previous group (or, for a source
   smaller than G, by cycling its own indices);
2. the groups of all sources are shuffled together;
3. a group is ``mega_batch_mult`` global steps; at each step rank ``r`` takes the step's slice ``[r::world_size]``.

Every rank therefore yields the same number of batches, each of exactly ``per_device_batch_size`` indices.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np


class SourceGroupedBatchSampler:
    """Batch sampler over a concatenation of sources given by their lengths (in concatenation order).

    ``rank=None`` yields, per step, the micro-batches of rank 0, 1, ..., W-1 one after the other; a launcher that
    deals batch ``k`` to rank ``k % W`` (accelerate's batch-sampler sharding) then gives each rank exactly what
    ``rank=r`` would. With an explicit ``rank`` only that rank's batches are yielded (plain DDP, no re-sharding).
    """

    def __init__(self, source_lengths: Sequence[int], per_device_batch_size: int, *, world_size: int = 1,
                 rank: int | None = 0, seed: int = 0, mega_batch_mult: int = 1) -> None:
        if per_device_batch_size < 1 or world_size < 1 or mega_batch_mult < 1:
            raise ValueError("batch size, world size and mega_batch_mult must be positive")
        if rank is not None and not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.source_lengths = [int(n) for n in source_lengths]
        self.per_device_batch_size = per_device_batch_size
        self.world_size = world_size
        self.rank = rank
        self.seed = seed
        self.mega_batch_mult = mega_batch_mult
        self.epoch = 0

    @classmethod
    def for_dataset(cls, dataset: object, per_device_batch_size: int, **kwargs: object) -> SourceGroupedBatchSampler:
        """For a :class:`~.balance.BalancedConcatDataset` (uses its resampled ``lengths``)."""
        return cls(dataset.lengths, per_device_batch_size, **kwargs)  # type: ignore[attr-defined,arg-type]

    @property
    def global_batch_size(self) -> int:
        return self.per_device_batch_size * self.world_size

    @property
    def group_size(self) -> int:
        return self.mega_batch_mult * self.global_batch_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def groups(self) -> list[np.ndarray]:
        """This epoch's groups, in the order they are consumed; each holds ``group_size`` global indices."""
        rng = np.random.default_rng([self.seed, self.epoch])
        size = self.group_size
        groups: list[np.ndarray] = []
        offset = 0
        for length in self.source_lengths:
            order = offset + rng.permutation(length)
            offset += length
            if length == 0:
                continue
            source_groups = [order[start:start + size] for start in range(0, length, size)]
            short = source_groups[-1]
            if len(short) < size:
                donor = source_groups[-2] if len(source_groups) > 1 else order
                filler = np.resize(donor, size - len(short))  # np.resize cycles when the donor is too small
                source_groups[-1] = np.concatenate([short, filler])
            groups.extend(source_groups)
        return [groups[i] for i in rng.permutation(len(groups))]

    def global_batches(self) -> Iterator[list[list[int]]]:
        """Per step: the list of every rank's micro-batch (rank order)."""
        step_size = self.global_batch_size
        for group in self.groups():
            for start in range(0, len(group), step_size):
                step = group[start:start + step_size]
                yield [[int(i) for i in step[rank::self.world_size]] for rank in range(self.world_size)]

    def __iter__(self) -> Iterator[list[int]]:
        for per_rank in self.global_batches():
            if self.rank is None:
                yield from per_rank
            else:
                yield per_rank[self.rank]

    def __len__(self) -> int:
        steps = sum(-(-n // self.group_size) for n in self.source_lengths if n) * self.mega_batch_mult
        return steps * (self.world_size if self.rank is None else 1)
