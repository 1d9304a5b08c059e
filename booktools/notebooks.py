"""Executing chapters: committed outputs (``make execute``), papermill runs (``make run``, the smoke stage),
and what both leave in a notebook.

- :func:`execute` refreshes a chapter's committed outputs at ``SCALE="book"``, ``SEED=0`` in a fresh kernel
  (nbclient, no papermill metadata), collapses progress bars to their final line (:func:`collapse_streams`),
  and records the machine's arithmetic fingerprint (:mod:`booktools.arith`) in the notebook's metadata, which
  tells ``make test`` whether it can compare every output exactly.
- :func:`run` executes a chapter through papermill with parameters into ``_build/runs/``.
- :func:`check_glued` is the smoke stage's check of the values a run glued.

Every execution runs under :mod:`booktools.limits` (a limit per cell and per notebook).
"""

from __future__ import annotations

import ast
import math
import re
import time
from pathlib import Path
from typing import Any, Mapping

import nbformat

from booktools import arith, limits
from booktools.toc import BUILD, KERNEL, ROOT, chapters, glued, parameters_source

_CARRIAGE_RETURN = re.compile(r"^.*\r(?=[^\n])", re.MULTILINE)


def _apply_control_chars(text: str) -> str:
    """What a terminal shows after ``\\r`` returns to the start of a line: only the last rewrite of each line
    (nbval's rule, so that a collapsed output compares equal to the live one)."""
    return _CARRIAGE_RETURN.sub("", text)


def _nbval_view(outputs: list) -> list:
    """The outputs as nbval compares them (its own stream coalescing)."""
    from nbval.plugin import coalesce_streams

    return coalesce_streams([nbformat.from_dict(o) for o in outputs])


def collapse_cell_streams(outputs: list) -> list:
    """One cell's outputs with each run of consecutive stream outputs (same stream) merged and control
    carriage returns applied: a tqdm bar that refreshed 100 times becomes its final line. A whitespace-only
    stream (the newline a closing bar writes after other output) joins the previous output of its stream.

    If the result would compare differently under nbval's own coalescing (never seen, but cheap to rule
    out), the cell gets nbval's coalesced form instead, which is what nbval compares anyway.
    """
    merged: list = []
    for o in outputs:
        if o.get("output_type") != "stream":
            merged.append(o)
            continue
        text = "".join(o["text"]) if isinstance(o["text"], list) else o["text"]
        last = merged[-1] if merged else None
        if last is not None and last.get("output_type") == "stream" and last["name"] == o["name"]:
            last["text"] += text
        elif not text.strip() and any(m.get("output_type") == "stream" and m["name"] == o["name"] for m in merged):
            prev = next(m for m in reversed(merged) if m.get("output_type") == "stream" and m["name"] == o["name"])
            prev["text"] += text
        else:
            merged.append(nbformat.from_dict({"output_type": "stream", "name": o["name"], "text": text}))
    for o in merged:
        if o.get("output_type") == "stream":
            o["text"] = _apply_control_chars(o["text"])
    if _nbval_view(merged) != _nbval_view(outputs):
        merged = _nbval_view(outputs)
    return merged


def collapse_streams(nb: nbformat.NotebookNode) -> int:
    """Collapse the stream outputs of every code cell in place; returns how many outputs were removed."""
    removed = 0
    for cell in nb.cells:
        if cell.cell_type == "code" and cell.outputs:
            before = len(cell.outputs)
            cell.outputs = collapse_cell_streams(cell.outputs)
            removed += before - len(cell.outputs)
    return removed


def _check_committed_parameters(path: Path, nb: nbformat.NotebookNode) -> None:
    src = parameters_source(nb)
    if not re.search(r'^SCALE\s*=\s*"book"', src, flags=re.M) or not re.search(r"^SEED\s*=\s*0\b", src, flags=re.M):
        raise SystemExit(f"{path}: parameters cell must say SCALE = \"book\" and SEED = 0")


def _rel(path: Path) -> Path:
    path = Path(path).resolve()
    try:
        return path.relative_to(ROOT)
    except ValueError:
        return path


def execute_one(path: Path, *, scale: str = "book", record: Mapping | None = None) -> nbformat.NotebookNode:
    """Execute one notebook in place, top to bottom, in a fresh kernel, under the limits of ``scale``.

    ``record`` (the machine's fingerprint) goes into ``metadata.book.arith``. A timeout raises
    :class:`booktools.limits.ChapterTimeout` naming the chapter and the cell; the notebook is not written.
    """
    from nbclient import NotebookClient

    path = Path(path).resolve()
    nb = nbformat.read(str(path), as_version=4)
    for cell in nb.cells:  # drop stale outputs and per-cell timing metadata
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
            cell.metadata.pop("execution", None)
    lim = limits.Limits.for_scale(scale)
    client = NotebookClient(nb, kernel_name=KERNEL, timeout=None, timeout_func=lim.timeout_func(nb),
                            record_timing=False, resources={"metadata": {"path": str(path.parent)}})
    try:
        client.execute()
    except Exception as exc:
        if limits.is_timeout(exc):
            raise limits.ChapterTimeout(lim.describe(_rel(path))) from exc
        raise
    collapse_streams(nb)
    nb.metadata.pop("papermill", None)
    nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": "Python 3", "language": "python"}
    if record is not None:
        nb.metadata.setdefault(arith.METADATA_KEY, {})["arith"] = dict(record)
    nbformat.write(nb, str(path))
    return nb


def execute(paths: list[Path]) -> None:
    """``make execute``: refresh committed outputs at book scale, seed 0, recording this machine's
    arithmetic fingerprint (computed once, in a fresh process)."""
    paths = [Path(p) for p in paths]
    for path in paths:
        _check_committed_parameters(path, nbformat.read(str(ROOT / path), as_version=4))
    record = arith.fingerprint()
    print(f"arithmetic fingerprint {record['fingerprint']} (torch kernels {record['torch_capability']}; "
          f"{arith.describe_pins()})", flush=True)
    for path in paths:
        t0 = time.perf_counter()
        print(f"executing {_rel(path)} ...", flush=True)
        execute_one(ROOT / path, record=record)
        print(f"  done in {time.perf_counter() - t0:.0f} s", flush=True)


def parse_assignments(assignments: list[str]) -> dict[str, Any]:
    """NAME=VALUE pairs; values parsed as Python literals, else kept as strings."""
    params: dict[str, Any] = {}
    for a in assignments:
        name, sep, value = a.partition("=")
        if not sep or not name.isidentifier():
            raise SystemExit(f"P: expected NAME=VALUE pairs, received {a!r}")
        try:
            params[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            params[name] = value
    return params


def papermill(src: Path, out: Path, parameters: Mapping[str, Any], *, log_output: bool = False,
              cwd: Path | None = None) -> nbformat.NotebookNode:
    """papermill ``src`` into ``out`` under the limits of the run's SCALE (default "book")."""
    import papermill as pm

    src = Path(src).resolve()
    scale = parameters.get("SCALE", "book")
    lim = limits.Limits.for_scale(scale if scale in limits.DEFAULTS else "smoke")
    seen: list[int] = []

    def timeout_func(cell: nbformat.NotebookNode) -> int | None:
        if id(cell) not in seen:
            seen.append(id(cell))
        first = next((ln for ln in cell.source.splitlines() if ln.strip()), "")
        lim.current = (len(seen), first[:80])
        t = lim.next_timeout()
        return None if t is None else int(round(t))

    try:
        return pm.execute_notebook(str(src), str(out), parameters=dict(parameters), kernel_name=KERNEL,
                                   cwd=str(cwd or src.parent), progress_bar=False, log_output=log_output,
                                   timeout_func=timeout_func)
    except Exception as exc:
        if limits.is_timeout(exc):
            raise limits.ChapterTimeout(lim.describe(_rel(src)) + " (cell numbers count papermill's injected "
                                        "parameters cell)") from exc
        raise


def run(path: Path, assignments: list[str]) -> Path:
    """``make run``: papermill one chapter with NAME=VALUE parameters into ``_build/runs/``."""
    params = parse_assignments(assignments)
    src = (ROOT / path).resolve()
    tag = "-".join(f"{k}={v}" for k, v in params.items()) or "defaults"
    out = BUILD / "runs" / f"{src.stem}-{re.sub(r'[^A-Za-z0-9=._-]', '_', tag)}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    print(f"papermill {_rel(src)} {params} -> {_rel(out)}", flush=True)
    papermill(src, out, params, log_output=True)
    for name, value in glued(out).items():
        print(f"  glued {name} = {value}")
    return out


def check_glued(chapter: str, committed: Mapping[str, Any], got: Mapping[str, Any]) -> None:
    """The smoke stage's check: every value the committed notebook glues is glued again, and every number
    is finite (a NaN or an infinity means a computation broke, whatever the claim says)."""
    if not committed:
        raise AssertionError(f"{chapter}: the committed notebook glues nothing; refresh it with "
                             f"`make execute NB={chapter}`")
    problems = []
    missing = sorted(set(committed) - set(got))
    if missing:
        problems.append(f"glued at book scale but not here: {missing}")
    for name, value in committed.items():
        if name not in got or not isinstance(value, (int, float)):
            continue
        new = got[name]
        if isinstance(new, bool) or not isinstance(new, (int, float)):
            problems.append(f"glued {name!r} is {new!r}, not a number")
        elif math.isnan(new) or math.isinf(new):
            problems.append(f"glued {name!r} is {new!r}")
    if problems:
        raise AssertionError(f"{chapter}: " + "; ".join(problems))
