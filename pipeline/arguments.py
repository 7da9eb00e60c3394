"""argparse types for numbers: a value out of range is refused at once, naming the option and why,
before anything runs (``run.py`` and the scripts under ``bench/``)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import datetime
from typing import Literal


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``minimum``, refused with the reason otherwise."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is less than {minimum}")
        return value

    return parse


def port_number(text: str) -> int:
    value = at_least(0)(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port (0-65535; 0: any free one)")
    return value


def positive_float(text: str) -> float:
    value = _number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not above 0")
    return value


def not_negative_float(text: str) -> float:
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is below 0")
    return value


def clock_time(text: str) -> datetime | Literal["auto"]:
    """A date and time as ``2026-11-28 21:59:40`` (or ISO 8601, with or without an offset), or
    ``auto`` (read from the file)."""
    if text == "auto":
        return "auto"
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date and time (for example '2026-11-28 21:59:40' or '2026-11-28T21:59:40+01:00')"
        ) from None
