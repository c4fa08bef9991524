"""Markdown table of results in the style of the X-SAM paper's Table 2 (one row per benchmark, percentages)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from numbers import Real
from typing import Any

# bookkeeping entries of the result dicts that are not scores
_NOT_SCORES = ("n", "n_th", "n_st", "per_category", "per_class_iou", "per_class_acc")


def _is_bookkeeping(name: str) -> bool:
    return name in _NOT_SCORES or name.startswith("num_")


def _flatten(scores: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    flat: dict[str, float] = {}
    for name, value in scores.items():
        if _is_bookkeeping(str(name)):
            continue
        key = f"{prefix}{name}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{key}/"))
        elif isinstance(value, Real) and not isinstance(value, bool):
            flat[key] = float(value)
    return flat


def format_results_table(results: Mapping[str, Mapping[str, Any]], digits: int = 1) -> str:
    """Render ``{benchmark: {metric: fraction or nested dict}}`` as a Markdown table.

    Rows are benchmarks in the given order, columns the metric names in first-seen order (nested dicts such as
    per-prompt-type results become ``"point/mIoU"``); values are shown as percentages with ``digits`` decimals,
    and a missing or NaN value as "-". Counts (``num_*``, ``n``) and per-class arrays are left out.
    """
    rows = {benchmark: _flatten(scores) for benchmark, scores in results.items()}
    columns: list[str] = []
    for flat in rows.values():
        columns.extend(name for name in flat if name not in columns)
    return percent_table("Benchmark", columns, rows, columns, digits)


def percent_table(
    row_header: str,
    column_names: list[str],
    rows: Mapping[str, Mapping[Any, float | None]],
    column_keys: list[Any],
    digits: int = 1,
) -> str:
    """A Markdown table of fractions shown as percentages; a missing or NaN value is "-".

    ``rows`` maps a row label to ``{column key: value}``; ``column_keys[i]`` is the key of ``column_names[i]``.
    """
    lines = [
        f"| {row_header} | " + " | ".join(column_names) + " |",
        "|---|" + "---:|" * len(column_names),
    ]
    for label, values in rows.items():
        cells = []
        for key in column_keys:
            value = values.get(key)
            cells.append("-" if value is None or math.isnan(value) else f"{100 * value:.{digits}f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
