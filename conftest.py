"""Root conftest: loaded for every pytest run (kernel tests, papermill smoke runs, nbval on book/).

- Makes the repository importable (``import kernels``, ``import tests.booktools``) from every kernel that a
  test starts, whatever the notebook's folder, and fixes one BLAS/OpenMP thread per process, so that
  nbval, papermill and the committed outputs agree (see book/reproducing.md).
- Records, when ``BOOK_STAGE`` names the stage that ``make test`` runs, the outcome counts and per-notebook
  seconds into ``_build/timings/<stage>.json``; ``python -m tests.booktools timings`` turns them into the
  table that ``make test`` prints. Nothing here asserts a timing.
"""

from __future__ import annotations

import json
import os
import re
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(var, "1")

_counts: dict[str, int] = defaultdict(int)
_spans: dict[str, list[float]] = {}
_SMOKE = re.compile(r"::test_smoke\[(?P<nb>[^\]]+)\]$")


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
    nb = _notebook_of(report.nodeid)
    if nb is not None and getattr(report, "start", 0) and getattr(report, "stop", 0):
        lo, hi = _spans.get(nb, [report.start, report.stop])
        _spans[nb] = [min(lo, report.start), max(hi, report.stop)]


def pytest_sessionfinish(session, exitstatus):
    stage = os.environ.get("BOOK_STAGE")
    if not stage or hasattr(session.config, "workerinput"):  # only the controller writes, not xdist workers
        return
    out = ROOT / "_build" / "timings"
    out.mkdir(parents=True, exist_ok=True)
    data = {"counts": dict(_counts), "exitstatus": int(exitstatus),
            "seconds": {nb: round(hi - lo, 1) for nb, (lo, hi) in sorted(_spans.items())}}
    (out / f"{stage}.json").write_text(json.dumps(data, indent=1))
