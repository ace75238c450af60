"""Markdown tables of the generated pages: rows of raw values in, formatted text out.

A page builds its rows as dicts of numbers (and text, and None where there is nothing to say), sorts
them on those numbers, and only then renders them here: each cell through its column's format, a
missing value as "–", the whole table by pandas' `to_markdown` (tabulate's "pipe" format).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pandas as pd

NONE = "–"

Format = str | Callable[[Any], str]  # a format spec ("{:.2f}") or a function of the value


def missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def cell(value: Any, fmt: Format | None = None) -> str:
    """One cell's text: text as it is, "–" for a missing value, any other value through `fmt` (str()
    without one)."""
    if isinstance(value, str):
        return value
    if missing(value):
        return NONE
    if fmt is None:
        return str(value)
    return fmt.format(value) if isinstance(fmt, str) else fmt(value)


def markdown_table(
    rows: list[dict[str, Any]], formats: dict[str, Format] | None = None, *, compact: bool = False
) -> str:
    """`rows` (in the order given) as a markdown table; the columns are the rows' keys in order of first
    appearance, and a row without a column's key shows "–" there. `compact` leaves the cells unpadded
    (the index page's tables, whose rows other tests and tools match as `| 1 | 2 | quick |`)."""
    formats = formats or {}
    columns = list(dict.fromkeys(key for row in rows for key in row))
    text = [[cell(row.get(c), formats.get(c)) for c in columns] for row in rows]
    if compact:
        lines = ["| " + " | ".join(cells) + " |" for cells in [columns, *text]]
        return "\n".join([lines[0], "|" + "---|" * len(columns), *lines[1:]])
    return pd.DataFrame(text, columns=columns).to_markdown(index=False, disable_numparse=True)
