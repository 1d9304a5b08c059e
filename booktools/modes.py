"""How strictly nbval compares a chapter's outputs on this machine (``make test``, stage 3).

- **strict**: this machine's arithmetic fingerprint (:mod:`booktools.arith`) equals the one recorded when the
  committed outputs were made, so it computes the same bits: every output is compared (cells tagged
  ``nbval-ignore-output`` aside: timings, benchmarks, progress).
- **portable**: the fingerprints differ (another CPU kind, another library build, a reader's own settings),
  so printed numbers that went through float arithmetic may differ in their last digit: only the cells
  tagged ``nbval-check-output`` are compared, the ones whose text cannot depend on rounding (sizes, data
  checks on integer data, exact kernel checks). Every cell still runs, and every Reproduction check still
  asserts every claim with its tolerance.

Either way one line says which mode ran and why.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import nbformat

from booktools import arith

CHECK_TAG = "nbval-check-output"
IGNORE_TAG = "nbval-ignore-output"


@dataclass(frozen=True)
class Mode:
    chapter: str
    strict: bool
    differs_in: tuple[str, ...]
    compared: int  # code cells whose output is compared in this mode
    code_cells: int

    @property
    def name(self) -> str:
        return "strict" if self.strict else "portable"


def committed_record(nb: nbformat.NotebookNode) -> dict | None:
    return nb.metadata.get(arith.METADATA_KEY, {}).get("arith")


def compared_in(cell: nbformat.NotebookNode, strict: bool) -> bool:
    tags = cell.metadata.get("tags", [])
    if strict:
        return IGNORE_TAG not in tags
    return CHECK_TAG in tags


def decide(chapter: str | Path, nb: nbformat.NotebookNode, here: Mapping) -> Mode:
    """The mode for one notebook given this machine's fingerprint record ``here``."""
    committed = committed_record(nb)
    strict = bool(committed) and committed.get("fingerprint") == here.get("fingerprint")
    code = [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]
    return Mode(str(chapter), strict, () if strict else tuple(arith.difference(here, committed)),
                sum(compared_in(c, strict) for c in code), len(code))


def to_record(m: Mode) -> dict:
    return {"chapter": m.chapter, "mode": m.name, "differs_in": list(m.differs_in), "compared_cells": m.compared,
            "code_cells": m.code_cells}


def from_record(r: Mapping) -> Mode:
    return Mode(r["chapter"], r["mode"] == "strict", tuple(r["differs_in"]), r["compared_cells"], r["code_cells"])


def summary(modes: list[Mode], here: Mapping) -> str:
    """The one line ``make test`` prints about the comparison mode."""
    if not modes:
        return "nbval: no notebooks"
    fp = here.get("fingerprint", "?")
    strict = [m for m in modes if m.strict]
    portable = [m for m in modes if not m.strict]
    if not portable:
        return (f"nbval mode: strict for {len(modes)} of {len(modes)} notebooks: this machine's arithmetic "
                f"fingerprint {fp} equals the one their outputs were made with, so every output is compared")
    reasons = sorted({r for m in portable for r in m.differs_in})
    compared = sum(m.compared for m in portable)
    cells = sum(m.code_cells for m in portable)
    head = (f"nbval mode: portable for {len(portable)} of {len(modes)} notebooks "
            f"({', '.join(Path(m.chapter).stem for m in portable)}): this machine's arithmetic fingerprint {fp} "
            f"differs from the committed one in {', '.join(reasons)}; compared only the {compared} of {cells} "
            f"code cells whose text cannot depend on rounding (tag {CHECK_TAG}); every claim is still asserted")
    return head + (f"; strict for {len(strict)}" if strict else "")
