"""Root conftest: loaded for every pytest run (kernel tests, papermill smoke runs, nbval on book/).

- Makes the repository importable (``import kernels``, ``import booktools``) from every kernel that a test
  starts, whatever the notebook's folder, and applies the book's arithmetic settings
  (:mod:`booktools.arith`: one thread, the AVX2 pins) before any numeric library is imported, so that
  nbval, papermill and the committed outputs compute alike (see book/reproducing.md).
- Under nbval: decides per notebook whether outputs are compared strictly or portably
  (:mod:`booktools.modes`, by this machine's arithmetic fingerprint against the committed one), prints the
  one line that says which and why, and applies the per-cell and per-notebook time limits of
  :mod:`booktools.limits`.
- Records, when ``BOOK_STAGE`` names the stage that ``make test`` runs, the outcome counts, per-notebook
  seconds and nbval modes into ``_build/timings/<stage>.json``; ``python -m booktools timings`` turns them
  into the table that ``make test`` prints. Nothing here asserts a timing.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))

from booktools import arith  # noqa: E402  (standard library only: safe before torch/numpy)

arith.apply()

import nbformat  # noqa: E402
import pytest  # noqa: E402

from booktools import limits, modes  # noqa: E402

_counts: dict[str, int] = defaultdict(int)
_skip_reasons: list[str] = []
_spans: dict[str, list[float]] = {}
_modes: list[modes.Mode] = []
_here: dict = {}
_SMOKE = re.compile(r"::test_smoke\[(?P<nb>[^\]]+)\]$")


def _nbval_on(config) -> bool:
    return bool(getattr(config.option, "nbval", False) or getattr(config.option, "nbval_lax", False))


def _notebook_args(config) -> list[Path]:
    out = []
    for arg in config.args:
        p = Path(arg.split("::", 1)[0])
        p = p if p.is_absolute() else Path(config.invocation_params.dir) / p
        if p.suffix == ".ipynb" and p.is_file():
            out.append(p.resolve())
    return out


def _chapter(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def pytest_configure(config):
    if not _nbval_on(config):
        return
    # this machine's fingerprint: computed once by the controller, inherited by xdist workers
    if "BOOK_ARITH_RECORD" not in os.environ:
        os.environ["BOOK_ARITH_RECORD"] = json.dumps(arith.fingerprint())
    _here.update(json.loads(os.environ["BOOK_ARITH_RECORD"]))
    if config.getoption("nbval_cell_timeout") == 2000:  # nbval's default: use the book's limit
        config.option.nbval_cell_timeout = limits.Limits.for_scale("book").cell_s or 10**6
    if hasattr(config, "workerinput"):
        return
    for path in _notebook_args(config):
        _modes.append(modes.decide(_chapter(path), nbformat.read(str(path), as_version=4), _here))


def pytest_report_header(config):
    if _nbval_on(config) and _modes:
        return [modes.summary(_modes, _here), f"arithmetic: {arith.describe_pins()}"]
    return None


def pytest_collection_modifyitems(session, config, items):
    """Portable notebooks compare only the cells tagged nbval-check-output."""
    if not _nbval_on(config) or config.option.nbval_lax:
        return
    decided: dict[str, modes.Mode] = {}
    for item in items:
        nb = getattr(item.parent, "nb", None)
        cell = getattr(item, "cell", None)
        if nb is None or cell is None:
            continue
        key = str(item.parent.fspath)
        if key not in decided:
            decided[key] = modes.decide(_chapter(Path(key)), nb, _here)
        if not decided[key].strict:
            item.options["check"] = modes.compared_in(cell, strict=False)


_nb_started: dict[str, float] = {}


def pytest_runtest_setup(item):
    """The per-notebook limit: each cell may use at most what is left of its notebook's time."""
    nb = getattr(item.parent, "nb", None)
    if nb is None or getattr(item, "cell", None) is None:
        return
    key = str(item.parent.fspath)
    started = _nb_started.setdefault(key, time.monotonic())
    lim = limits.Limits.for_scale("book")
    lim.started = started
    left = lim.remaining()
    if left is not None and left <= 0:
        pytest.fail(f"{_chapter(Path(key))}: ran past the notebook limit of {lim.notebook_s:.0f} s before "
                    f"{item.name}; a hung or far too slow chapter", pytrace=False)
    item.config.option.nbval_cell_timeout = lim.next_timeout() or 10**6


def _notebook_of(nodeid: str) -> str | None:
    m = _SMOKE.search(nodeid)
    if m:
        return m.group("nb")
    if ".ipynb::" in nodeid:
        return nodeid.split("::", 1)[0]
    return None


def pytest_runtest_logreport(report):
    if report.when == "call" or report.outcome != "passed":
        # one count per test: its call phase, or a failing/skipped setup or teardown
        key = "failed" if report.outcome == "failed" else report.outcome
        if not (report.when == "teardown" and report.outcome == "passed"):
            _counts[key] += 1
        if report.skipped and isinstance(report.longrepr, tuple):
            _skip_reasons.append(str(report.longrepr[2]).removeprefix("Skipped: "))
    nb = _notebook_of(report.nodeid)
    if nb is not None and getattr(report, "start", 0) and getattr(report, "stop", 0):
        lo, hi = _spans.get(nb, [report.start, report.stop])
        _spans[nb] = [min(lo, report.start), max(hi, report.stop)]


def pytest_collectreport(report):
    """A module skipped as a whole (the browser stage without Chromium) counts as one skip, with its reason."""
    if report.skipped:
        _counts["skipped"] += 1
        if isinstance(report.longrepr, tuple):
            _skip_reasons.append(str(report.longrepr[2]).removeprefix("Skipped: "))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if _nbval_on(config) and _modes:
        terminalreporter.write_line(modes.summary(_modes, _here))


def pytest_sessionfinish(session, exitstatus):
    stage = os.environ.get("BOOK_STAGE")
    if not stage or hasattr(session.config, "workerinput"):  # only the controller writes, not xdist workers
        return
    out = ROOT / "_build" / "timings"
    out.mkdir(parents=True, exist_ok=True)
    data = {"counts": dict(_counts), "exitstatus": int(exitstatus), "skip_reasons": _skip_reasons,
            "seconds": {nb: round(hi - lo, 1) for nb, (lo, hi) in sorted(_spans.items())}}
    if _modes:
        data["modes"] = [modes.to_record(m) for m in _modes]
        data["arith"] = {"fingerprint": _here.get("fingerprint")}
    (out / f"{stage}.json").write_text(json.dumps(data, indent=1))
