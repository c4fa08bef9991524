"""A data set of examples built lazily from cheap per-record annotations.

Loaders parse the annotation file once into small records; the costly part (decoding a panoptic PNG, filling
LabelMe polygons, converting polygons to RLE) runs only when an example is accessed. Iteration skips and counts
records that fail to build; indexing raises :class:`~.skips.CorruptRecordError` so that a caller can decide.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Generic, TypeVar

from .schema import XSamExample
from .skips import CorruptRecordError, SkipCounter

RecordT = TypeVar("RecordT")


class ExampleSource(Sequence[XSamExample], Generic[RecordT]):
    """``Sequence[XSamExample]`` over one data set (one ``source`` name, one ``task``)."""

    def __init__(self, name: str, task: str, records: Sequence[RecordT],
                 build: Callable[[RecordT], XSamExample], counter: SkipCounter | None = None) -> None:
        self.name = name
        self.task = task
        self.records = records
        self._build = build
        self.counter = counter if counter is not None else SkipCounter()

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> XSamExample:  # type: ignore[override]
        if isinstance(index, slice):
            raise TypeError("ExampleSource does not support slicing; use .subset(indices)")
        record = self.records[index]
        try:
            return self._build(record)
        except CorruptRecordError:
            raise
        except Exception as error:  # noqa: BLE001 - any failure inside one record is that record's corruption
            raise CorruptRecordError(f"{self.name}[{index}]: {type(error).__name__}: {error}") from error

    def __iter__(self) -> Iterator[XSamExample]:
        for index in range(len(self)):
            try:
                yield self[index]
            except CorruptRecordError as error:
                self.counter.record(self.name, "build_failed", str(index), error)

    def subset(self, indices: Sequence[int]) -> ExampleSource[RecordT]:
        return ExampleSource(self.name, self.task, [self.records[i] for i in indices], self._build, self.counter)

    def __repr__(self) -> str:
        return f"ExampleSource(name={self.name!r}, task={self.task!r}, records={len(self)})"
