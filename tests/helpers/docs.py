"""Reading the documentation's tables, for the tests that hold them against the code."""

from __future__ import annotations

import re


def first_column_names(text: str, marker: str) -> set[str]:
    """The `NAME`s in the first column of the first table after `marker` in `text`."""
    table = text.split(marker, 1)[1].split("\n|", 1)[1].split("\n\n", 1)[0]
    rows = table.splitlines()[2:]  # past the header and its rule
    return {name for row in rows for name in re.findall(r"`([A-Z_]+)`", row.split("|")[1])}
