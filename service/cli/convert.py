"""The argparse types of the command line's options: numbers, ids, times."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from service import ids
from service.events import format_time
from service.settings import parse_duration


def number(parse: Callable[[str], float], *, what: str, finite: bool = True) -> Any:
    """An argparse type: `parse`d, zero or more (NaN refused), finite when asked."""

    def convert(text: str) -> float:
        try:
            value = parse(text)
        except ValueError:
            value = -1
        if not 0 <= value <= (sys.float_info.max if finite else float("inf")):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value

    return convert


count = number(int, what="a whole number, zero or more")


def whole_number(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number from `low` to `high`."""

    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"{text[:64]!r} is not a whole number from {low} to {high}"
            )
        return value

    return convert


seconds = number(float, what="a number of seconds, zero or more", finite=False)


def id_of(prefix: str, what: str) -> Callable[[str], str]:
    """An argparse type: an id with `prefix` (`whk`, `whd`), as `what` says it."""

    def convert(text: str) -> str:
        if not ids.looks_like(text, prefix):
            raise argparse.ArgumentTypeError(f"{text[:64]!r} is not {what} id ({prefix}_…)")
        return text

    return convert


def when(text: str) -> str:
    """An RFC 3339 time as given (checked where the API checks it), or a duration ago as one."""
    try:
        ago = parse_duration(text)
    except ValueError:
        return text
    try:
        return format_time(datetime.now(UTC) - timedelta(seconds=ago))
    except OverflowError:
        raise argparse.ArgumentTypeError(f"{text!r} is too long ago") from None
