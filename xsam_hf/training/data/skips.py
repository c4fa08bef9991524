"""Counting records that are skipped because their image or annotation is broken.

A long training run must not die on one bad file: loaders and datasets catch the error, record it here and move on.
The counter logs the first few occurrences of each reason in full and then only counts.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)


class CorruptRecordError(ValueError):
    """A record that cannot be turned into an example (bad annotation, unreadable image, missing file)."""


@dataclass
class SkipCounter:
    """Thread-safe tally of skipped records, keyed by ``(source, reason)``.

    A record is counted once however often it is met again (an annotation is rebuilt every epoch), so the counts
    are numbers of distinct broken records. In DataLoader workers each process holds its own copy.
    """

    log_first: int = 5
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    examples: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    _seen: set[tuple[str, str, str]] = field(default_factory=set, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def __getstate__(self) -> dict[str, object]:
        # Locks cannot be pickled (DataLoader workers started by spawn/forkserver pickle the dataset).
        state = dict(self.__dict__)
        state.pop("_lock")
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def record(self, source: str, reason: str, record_id: str = "", error: BaseException | None = None) -> None:
        key = (source, reason)
        with self._lock:
            if record_id:
                if (source, reason, record_id) in self._seen:
                    return
                self._seen.add((source, reason, record_id))
            self.counts[key] += 1
            seen = self.examples.setdefault(key, [])
            if len(seen) < self.log_first:
                seen.append(record_id)
                logger.warning("skipped %s record %r (%s)%s", source, record_id, reason,
                               f": {type(error).__name__}: {error}" if error is not None else "")

    def skipper(self, source: str, reason: str = "not_a_json_object") -> Callable[[int, object], None]:
        """A callback for :func:`~.json_io.iter_json_objects` that records skipped positions here."""
        return lambda position, _value: self.record(source, reason, f"#{position}")

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def count(self, source: str | None = None, reason: str | None = None) -> int:
        return sum(n for (s, r), n in self.counts.items()
                   if (source is None or s == source) and (reason is None or r == reason))

    def report(self) -> dict[str, dict[str, int]]:
        """``{source: {reason: count}}``, e.g. for a training-start log or a JSON run summary."""
        out: dict[str, dict[str, int]] = {}
        for (source, reason), n in sorted(self.counts.items()):
            out.setdefault(source, {})[reason] = n
        return out

    def summary_line(self) -> str:
        if not self.counts:
            return "skipped records: none"
        parts = [f"{source}/{reason}={n}" for (source, reason), n in sorted(self.counts.items())]
        return f"skipped records: {self.total} ({', '.join(parts)})"

    def log_summary(self, level: int = logging.INFO) -> None:
        logger.log(level, self.summary_line())
