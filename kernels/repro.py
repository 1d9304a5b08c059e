"""Reproducibility: seeding, a fixed thread count, the ``SCALE`` switch and the claims table.

Not a paper's method but the book's own contract (see the repository's contributing section): every
chapter calls :func:`setup` in its first code cell, derives its sizes with :func:`pick_scale`, and ends
with a Reproduction check built from :class:`Claims`. A claim is one inequality

    measured  <op>  threshold,      op in {>=, <=, >, <, ==},

between a number the chapter computed and a threshold frozen at about half the margin observed over
three seeds. At ``SCALE="book"`` (and ``"paper"``) a failed claim raises one ``AssertionError`` that
lists every failure; at ``SCALE="smoke"`` claims are computed and shown, never asserted, because smoke
sizes are too small for the paper's effects to appear.

Determinism: results are bitwise repeatable for the same seed, the same thread count and the same CPU
kind. Printed and glued numbers are rounded to a few significant digits so that last-bit differences
between CPU kinds do not show.
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass
from html import escape as html_escape
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

SCALES: tuple[str, ...] = ("smoke", "book", "paper")
OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
    "==": lambda a, b: a == b,
}
GLUE_DIGITS = 4  # significant digits kept in glued values


def setup(seed: int, threads: int = 1) -> np.random.Generator:
    """Seed Python, NumPy and torch, fix torch's intra-op thread count, and return a NumPy generator.

    Call it once, in a chapter's first code cell. ``threads=1`` is the book's default: results are then
    bitwise repeatable on the same CPU kind, and two notebooks can run side by side on two cores.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed: expected an int, received {type(seed).__name__} {seed!r}")
    if not 0 <= int(seed) < 2**32:
        raise ValueError(f"seed: expected 0 <= seed < 2**32, received {seed}")
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ValueError(f"threads: expected an int >= 1, received {threads!r}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(int(threads))
    os.environ["OMP_NUM_THREADS"] = str(int(threads))  # for subprocesses the chapter may start
    return np.random.default_rng(seed)


def pick_scale(scale: str, table: Mapping[str, Mapping[str, Any]], *, show: bool = True) -> dict[str, Any]:
    """Return the sizes for ``scale`` from ``table`` (one column per scale), printing the whole table.

    ``table`` maps each of ``"smoke"``, ``"book"``, ``"paper"`` to a dict of sizes; all three dicts must
    have the same keys, so that a reader sees every size at every scale in one place. An unknown
    ``scale`` fails at once, before any work is done.
    """
    if not isinstance(scale, str) or scale not in SCALES:
        raise ValueError(f"scale (the chapter's SCALE parameter): expected one of {', '.join(map(repr, SCALES))}; "
                         f"received {scale!r}")
    if not isinstance(table, Mapping) or set(table) != set(SCALES):
        got = sorted(table) if isinstance(table, Mapping) else type(table).__name__
        raise ValueError(f"table: expected a mapping with exactly the keys {list(SCALES)}; received {got}")
    keys = list(table["book"])
    for s in SCALES:
        if not isinstance(table[s], Mapping) or list(table[s]) != keys:
            got = list(table[s]) if isinstance(table[s], Mapping) else type(table[s]).__name__
            raise ValueError(f"table[{s!r}]: expected the keys {keys} (same order as 'book'); received {got}")
    if show:
        print(format_table(
            ["size"] + [f"{s}{' *' if s == scale else ''}" for s in SCALES],
            [[k] + [_short(table[s][k]) for s in SCALES] for k in keys],
        ))
    return dict(table[scale])


DEVICES = ("auto", "cpu", "cuda")


def pick_device(device: str, scale: str) -> torch.device:
    """The device a chapter computes on: its ``DEVICE`` parameter resolved against ``SCALE``.

    ``"auto"`` means the GPU at ``SCALE="paper"`` when one is available, and the CPU otherwise: smoke and
    book scale always run on the CPU, where the committed outputs were made and are bitwise repeatable.
    ``"cuda"`` without a GPU fails at once instead of silently running for hours on the CPU.
    """
    if device not in DEVICES:
        raise ValueError(f"device (the chapter's DEVICE parameter): expected one of {DEVICES}; received {device!r}")
    if scale not in SCALES:
        raise ValueError(f"scale: expected one of {SCALES}; received {scale!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: 'cuda' requested but torch.cuda.is_available() is False")
    if device == "auto":
        device = "cuda" if scale == "paper" and torch.cuda.is_available() else "cpu"
    return torch.device(device)


def versions(*modules: Any) -> str:
    """``"torch 2.13.0, faiss 1.15.1"``: each module's release version without a local build suffix.

    A reader's pip gives another build of the same release (``2.13.0`` from the package index,
    ``2.13.0+cpu`` from a CPU-only wheel, ``2.13.0+cu121`` with CUDA), so printed outputs name the release only.
    """
    out = []
    for m in modules:
        version = getattr(m, "__version__", None)
        if not isinstance(version, str):
            raise ValueError(f"modules: expected modules with a __version__ string, received {m!r}")
        out.append(f"{m.__name__.split('.')[0]} {version.split('+')[0]}")
    return ", ".join(out)


def _short(value: Any) -> str:
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= 28 else text[:25] + "..."


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Plain-text table with left-aligned columns (stable under nbval's exact text comparison)."""
    if any(len(r) != len(header) for r in rows):
        raise ValueError(f"rows: expected {len(header)} cells per row, received {sorted({len(r) for r in rows})}")
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def round_sig(x: float, digits: int = GLUE_DIGITS) -> float:
    """Round to ``digits`` significant digits (0, inf and nan pass through)."""
    if digits < 1:
        raise ValueError(f"digits: expected >= 1, received {digits}")
    x = float(x)
    if x == 0.0 or not math.isfinite(x):
        return x
    return float(f"{x:.{digits}g}")


@dataclass(frozen=True)
class Claim:
    """One claim: ``measured <op> threshold``.

    ``expected="fail"`` records a paper claim that this chapter found *not* to reproduce: it is shown in the
    table as such, and the check asserts that it still fails, so that a change which makes it reproduce
    (or a bug that hid the failure) is noticed and the chapter's text updated.

    ``kind="sanity"`` marks a check that holds by construction (a ``max`` that never lets a value decrease, a
    merge equal to a full sort): it is asserted like a claim, but shown as a sanity check and never counted
    as a reproduced claim of the paper. ``kind="stress"`` marks a test of this chapter's own that goes beyond
    what the paper claims (a regime its theorem does not cover): asserted as recorded (with ``expected``),
    shown as a stress test, and never counted for or against the paper.
    """

    name: str
    paper: str
    measured: float
    op: str
    threshold: float
    fmt: str = ".3g"
    expected: str = "hold"
    kind: str = "claim"

    @property
    def holds(self) -> bool:
        # NaN compares False with everything, so a NaN measurement never holds.
        return bool(OPS[self.op](self.measured, self.threshold))

    @property
    def as_expected(self) -> bool:
        # A NaN measurement is a broken computation: it is never "as expected", not even for a claim
        # reported as not reproducing (which a NaN would otherwise "confirm" by failing its comparison).
        if math.isnan(self.measured):
            return False
        return self.holds == (self.expected == "hold")

    @property
    def status(self) -> str:
        """One of "holds", "fails", "no-repro" (does not reproduce, as recorded), "sanity", "stress", "nan"."""
        if math.isnan(self.measured):
            return "nan"
        if not self.as_expected:
            return "fails"
        if self.kind in ("sanity", "stress"):
            return self.kind
        return "no-repro" if self.expected == "fail" else "holds"

    def record(self) -> dict[str, Any]:
        """The claim as plain data (the dashboard reads these from the committed notebooks)."""
        return {"name": self.name, "paper": self.paper, "measured": round_sig(self.measured), "op": self.op,
                "threshold": round_sig(self.threshold), "expected": self.expected, "kind": self.kind,
                "status": self.status}

    def describe(self) -> str:
        text = f"{self.name}: measured {self.measured:{self.fmt}}, needs {self.op} {self.threshold:{self.fmt}}"
        if math.isnan(self.measured):
            text += " -- the measurement is NaN: a computation broke"
        elif self.expected == "fail":
            text += " -- reported as NOT reproducing, but it now holds: update the chapter"
        return text


class Claims:
    """The Reproduction check: collect claims, print one table, glue every value, assert at book scale.

    >>> claims = Claims(SCALE)
    >>> claims.add("speedup", "5-30x faster", measured=7.2, op=">=", threshold=4.0)
    >>> claims.check()      # prints the table; raises AssertionError listing failures at "book"
    """

    def __init__(self, scale: str, *, assert_at: Sequence[str] = ("book", "paper"),
                 glue: Callable[..., Any] | None = None) -> None:
        if not isinstance(scale, str) or scale not in SCALES:
            raise ValueError(f"scale: expected one of {', '.join(map(repr, SCALES))}; received {scale!r}")
        bad = [s for s in assert_at if s not in SCALES]
        if bad:
            raise ValueError(f"assert_at: expected scales from {list(SCALES)}; received {bad}")
        self.scale = scale
        self.assert_at = tuple(assert_at)
        self._glue = glue
        self.claims: list[Claim] = []

    def add(self, name: str, paper: str, measured: float, op: str, threshold: float, fmt: str = ".3g",
            expected: str = "hold", kind: str = "claim") -> Claim:
        """Record one claim. ``name`` becomes the glue key, so it must be a Python identifier.

        ``expected="fail"`` marks a paper claim that does not reproduce here; ``kind="sanity"`` a check that
        holds by construction (see :class:`Claim`).
        """
        if expected not in ("hold", "fail"):
            raise ValueError(f"expected: expected 'hold' or 'fail', received {expected!r}")
        if kind not in ("claim", "sanity", "stress"):
            raise ValueError(f"kind: expected 'claim', 'sanity' or 'stress', received {kind!r}")
        if kind == "sanity" and expected == "fail":
            raise ValueError("expected: a sanity check is expected to hold, received 'fail'")
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"name: expected an identifier usable as a glue key, received {name!r}")
        if any(c.name == name for c in self.claims):
            raise ValueError(f"name: {name!r} was already added")
        if op not in OPS:
            raise ValueError(f"op: expected one of {list(OPS)}, received {op!r}")
        try:
            measured_f, threshold_f = float(measured), float(threshold)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"measured/threshold: expected real numbers, received {measured!r} and {threshold!r}") from exc
        if math.isnan(threshold_f):
            raise ValueError(f"threshold: expected a number, received nan for claim {name!r}")
        claim = Claim(name, str(paper), measured_f, op, threshold_f, fmt, expected, kind)
        self.claims.append(claim)
        return claim

    @staticmethod
    def verdict(c: Claim) -> str:
        if math.isnan(c.measured):
            return "NO (NaN)"
        if c.kind == "stress":
            ok = c.holds == (c.expected == "hold")
            return ("no (stress test)" if not c.holds else "yes (stress test)") if ok else "UNEXPECTED (stress test)"
        if c.expected == "fail":
            return "no (does not reproduce)" if not c.holds else "YES (reported as failing)"
        if c.kind == "sanity":
            return "yes (sanity)" if c.holds else "NO (sanity)"
        return "yes" if c.holds else "NO"

    def _rows(self) -> list[list[str]]:
        return [[c.name, c.paper, f"{c.measured:{c.fmt}}", f"{c.op} {c.threshold:{c.fmt}}", self.verdict(c)]
                for c in self.claims]

    def table(self) -> str:
        """The claims as a plain-text table (what nbval compares and a terminal shows)."""
        return format_table(["claim", "paper", "this chapter", "threshold", "holds"], self._rows())

    def html(self) -> str:
        """The same table as HTML that wraps to the text column of the rendered book."""
        cls = {"fails": "fail", "nan": "fail", "no-repro": "no-repro", "sanity": "sanity", "stress": "sanity",
               "holds": "holds"}
        head = "".join(f"<th>{h}</th>" for h in ("claim", "paper", "this chapter", "threshold", "holds"))
        body = []
        for c, row in zip(self.claims, self._rows()):
            cells = [f"<td><code>{html_escape(row[0])}</code></td>", f"<td>{html_escape(row[1])}</td>"]
            cells += [f'<td class="num">{html_escape(x)}</td>' for x in row[2:4]] + [f"<td>{html_escape(row[4])}</td>"]
            body.append(f'<tr class="{cls[c.status]}">' + "".join(cells) + "</tr>")
        return (f'<table class="book-claims"><thead><tr>{head}</tr></thead><tbody>' + "".join(body)
                + "</tbody></table>")

    def records(self) -> list[dict[str, Any]]:
        return [c.record() for c in self.claims]

    def _show(self) -> None:
        """In a notebook: one output with the text table, the HTML table and the claims as data (metadata);
        elsewhere: the text table."""
        try:
            from IPython import get_ipython
            from IPython.display import display
        except ImportError:  # pragma: no cover - IPython comes with the notebook stack
            get_ipython = None
        if get_ipython is None or get_ipython() is None:
            print(self.table())
            return
        display({"text/plain": self.table(), "text/html": self.html()}, raw=True,
                metadata={"book": {"claims": self.records()}})

    @property
    def failed(self) -> list[Claim]:
        """Claims whose outcome differs from the expected one."""
        return [c for c in self.claims if not c.as_expected]

    def values(self) -> dict[str, float]:
        """Measured values rounded as they are glued."""
        return {c.name: round_sig(c.measured) for c in self.claims}

    def check(self) -> list[Claim]:
        """Print the table, glue every measured value, and at an asserting scale raise on any failure.

        Returns the failed claims (empty when all hold) at scales that only report.
        """
        if not self.claims:
            raise ValueError("claims: nothing to check; add at least one claim first")
        print(f"Reproduction check at SCALE={self.scale!r} "
              f"({'asserted' if self.scale in self.assert_at else 'reported only, not asserted'})", flush=True)
        self._show()
        glue = self._glue
        if glue is None:
            from myst_nb import glue  # imported late: only notebooks need it
        for name, value in self.values().items():
            glue(name, value, display=False)
        failed = self.failed
        n_fail = sum(c.expected == "fail" for c in self.claims)
        n_fail = sum(c.expected == "fail" and c.kind == "claim" for c in self.claims)
        n_sanity = sum(c.kind == "sanity" for c in self.claims)
        n_stress = sum(c.kind == "stress" for c in self.claims)
        notes = ([f"{n_fail} reported as not reproducing"] * bool(n_fail) + [f"{n_sanity} sanity checks"] * bool(n_sanity)
                 + [f"{n_stress} stress tests of this chapter's own"] * bool(n_stress))
        print(f"{len(self.claims) - len(failed)} of {len(self.claims)} claims as expected"
              + (f" ({'; '.join(notes)})" if notes else ""))
        if failed and self.scale in self.assert_at:
            raise AssertionError(f"{len(failed)} claim(s) failed at SCALE={self.scale!r}:\n"
                                 + "\n".join("  " + c.describe() for c in failed))
        return failed
