"""Argument validation shared by the kernels: one message format, naming the argument, what was expected
and what was received (the house rule for every public kernel function)."""

from __future__ import annotations

from typing import Any

import torch


def check_int(name: str, value: Any, lo: int) -> int:
    """Return ``value`` if it is an int (not a bool) >= ``lo``; else raise ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValueError(f"{name}: expected an int >= {lo}, received {value!r}")
    return value


def describe(value: Any) -> str:
    """How a received value reads in an error message: dtype and shape for a tensor, else the type's name."""
    if isinstance(value, torch.Tensor):
        return f"{value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__
