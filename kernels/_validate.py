"""Argument validation shared by the kernels: one message format, naming the argument, what was expected
and what was received (the house rule for every public kernel function)."""

from __future__ import annotations

from typing import Any


def check_int(name: str, value: Any, lo: int) -> int:
    """Return ``value`` if it is an int (not a bool) >= ``lo``; else raise ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValueError(f"{name}: expected an int >= {lo}, received {value!r}")
    return value
