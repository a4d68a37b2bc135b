"""The one Markdown table renderer of the benchmark reports.

A table is declared as columns (header, how to get the cell's value from a row, how to format
it), so each report states what it shows and all reports format missing values alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

NA = "–"  # a missing or non-finite number


def fmt(value: Any, spec: str = ".2f") -> str:
    """``value`` formatted with ``spec`` if it is a float; other values as they print.

    Integers and strings are not passed through ``spec`` so that a count stays a count.
    """
    if value is None:
        return NA
    if isinstance(value, float | np.floating):
        return format(value, spec) if np.isfinite(value) else NA
    return str(value)


@dataclass(frozen=True)
class Column:
    """One column: ``value(row)`` gives the cell, ``fmt`` a format spec or a function."""

    header: str
    value: Callable[[Any], Any]
    fmt: str | Callable[[Any], str] = ""

    def cell(self, row: Any) -> str:
        value = self.value(row)
        text = self.fmt(value) if callable(self.fmt) else fmt(value, self.fmt)
        return text.replace("|", "\\|").replace("\n", " ")  # a cell must stay one cell


def render_table(rows: Iterable[Any], columns: Sequence[Column]) -> str:
    """A Markdown table with one line per row."""
    lines = [
        "| " + " | ".join(c.header for c in columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    lines += ["| " + " | ".join(c.cell(row) for c in columns) + " |" for row in rows]
    return "\n".join(lines)
