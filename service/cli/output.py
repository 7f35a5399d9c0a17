"""How the commands print: tables for people, one JSON document for scripts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson


def print_table(rows: Sequence[Sequence[str]]) -> None:
    """Left-aligned columns two spaces apart; the first row is the header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def print_json(value: Any) -> None:
    print(orjson.dumps(value).decode())
