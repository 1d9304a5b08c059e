"""Every chapter in _toc.yml, through papermill: it completes at SCALE="smoke" and glues every value its
committed (book-scale) outputs glue, each a finite number where the committed one is a number; and an unknown
SCALE fails at once, in the sizes cell, naming SCALE. Both run under the time limits of booktools.limits.

Book-scale re-execution with output comparison is nbval's job (`make test`, stage 3), not this file's.
"""

from __future__ import annotations

import nbformat
import papermill as pm
import pytest

from booktools.notebooks import check_glued, papermill
from booktools.toc import ROOT, chapters, glued

CHAPTERS = chapters()


@pytest.mark.parametrize("nb", CHAPTERS, ids=str)
def test_smoke(nb, tmp_path):
    executed = papermill(ROOT / nb, tmp_path / nb.name, {"SCALE": "smoke"})
    check_glued(str(nb), glued(ROOT / nb), glued(executed))


@pytest.mark.parametrize("nb", CHAPTERS, ids=str)
def test_unknown_scale_fails_at_once_naming_scale(nb, tmp_path):
    with pytest.raises(pm.PapermillExecutionError) as exc:
        papermill(ROOT / nb, tmp_path / nb.name, {"SCALE": "huge"})
    assert exc.value.ename == "ValueError" and "SCALE" in exc.value.evalue and "huge" in exc.value.evalue
    executed = nbformat.read(str(tmp_path / nb.name), as_version=4)
    code = [c for c in executed.cells if c.cell_type == "code"]
    injected = next(i for i, c in enumerate(code) if "injected-parameters" in c.metadata.get("tags", []))
    failing = next(i for i, c in enumerate(code) if any(o.output_type == "error" for o in c.get("outputs", [])))
    assert failing == injected + 1, f"{nb}: the unknown SCALE failed in code cell {failing + 1}, not the sizes cell"


def test_toc_lists_at_least_one_notebook():
    assert CHAPTERS, "_toc.yml lists no notebook"
