"""Time limits for executing a chapter: one per cell and one per notebook, so that a hung chapter fails with
a message naming the chapter and the cell instead of holding CI until its own limit.

The same limits apply to ``make execute`` (nbclient), the papermill runs (``make test``'s smoke stage and
``make run``) and nbval (set from ``conftest.py``). Defaults by scale, in seconds:

=========  =========  =============
SCALE      per cell   per notebook
=========  =========  =============
smoke      300        600
book       900        1200
paper      none       none
=========  =========  =============

A book-scale chapter must finish in 180 s on the slowest machine of the reference kind; the limits leave
room for a foreign CPU, a busy machine and the first import of every library. ``BOOK_CELL_TIMEOUT_S`` and
``BOOK_NOTEBOOK_TIMEOUT_S`` override them (for a slow machine, or for the tests of this module).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import nbformat

DEFAULTS = {"smoke": (300, 600), "book": (900, 1200), "paper": (None, None)}


class ChapterTimeout(RuntimeError):
    """A chapter ran past a cell or notebook limit."""


def _env_seconds(name: str) -> float | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"{name}: expected a number of seconds, received {value!r}") from None
    if not seconds > 0:
        raise ValueError(f"{name}: expected a positive number of seconds, received {value!r}")
    return seconds


@dataclass
class Limits:
    """Per-cell and per-notebook limits (None: unlimited) and the clock of one execution."""

    cell_s: float | None
    notebook_s: float | None
    started: float = field(default_factory=time.monotonic)
    current: tuple[int, str] | None = None  # (code cell number, first line) being executed

    @classmethod
    def for_scale(cls, scale: str) -> "Limits":
        if scale not in DEFAULTS:
            raise ValueError(f"scale: expected one of {list(DEFAULTS)}, received {scale!r}")
        cell, notebook = DEFAULTS[scale]
        env_cell, env_nb = _env_seconds("BOOK_CELL_TIMEOUT_S"), _env_seconds("BOOK_NOTEBOOK_TIMEOUT_S")
        return cls(env_cell if env_cell is not None else cell, env_nb if env_nb is not None else notebook)

    def remaining(self) -> float | None:
        if self.notebook_s is None:
            return None
        return self.notebook_s - (time.monotonic() - self.started)

    def next_timeout(self) -> float | None:
        """Seconds the next cell may run: the cell limit, or less if the notebook's time is running out."""
        left = self.remaining()
        options = [x for x in (self.cell_s, left) if x is not None]
        return max(1.0, min(options)) if options else None

    def timeout_func(self, nb: nbformat.NotebookNode) -> Callable[[nbformat.NotebookNode], int | None]:
        """An nbclient ``timeout_func``: records which cell runs and returns its time limit."""
        code = [c for c in nb.cells if c.cell_type == "code"]

        def func(cell: nbformat.NotebookNode) -> int | None:
            number = next((i + 1 for i, c in enumerate(code) if c is cell), 0)
            first = next((ln for ln in cell.source.splitlines() if ln.strip()), "")
            self.current = (number, first[:80])
            t = self.next_timeout()
            return None if t is None else int(round(t))

        return func

    def describe(self, chapter: Path | str) -> str:
        """The failure message after a timeout: which chapter, which cell, which limit."""
        number, first = self.current or (0, "")
        elapsed = time.monotonic() - self.started
        left = self.remaining()
        which = (f"the notebook limit of {self.notebook_s:.0f} s" if left is not None and left <= 1.0
                 else f"the cell limit of {self.cell_s:.0f} s" if self.cell_s is not None else "a limit")
        return (f"{chapter}: code cell {number} ({first!r}) ran past {which} "
                f"({elapsed:.0f} s into the notebook); a hung or far too slow chapter")


def is_timeout(exc: BaseException) -> bool:
    """Whether an exception from nbclient/papermill is a cell timeout."""
    from nbclient.exceptions import CellTimeoutError

    return isinstance(exc, (CellTimeoutError, TimeoutError))
