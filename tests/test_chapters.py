"""Every chapter in _toc.yml, through papermill: it completes at SCALE="smoke" and glues every value its
committed (book-scale) outputs glue; and an unknown SCALE fails at once, in the sizes cell, naming SCALE.

Book-scale re-execution with output comparison is nbval's job (`make test`, stage 3), not this file's.
"""

from __future__ import annotations

import math

import nbformat
import papermill as pm
import pytest

from tests.booktools import KERNEL, ROOT, chapters, glued

CHAPTERS = chapters()


def _run(nb, tmp_path, **params):
    src = ROOT / nb
    out = tmp_path / src.name
    return src, out, pm.execute_notebook(str(src), str(out), parameters=params, kernel_name=KERNEL,
                                         cwd=str(src.parent), progress_bar=False)


@pytest.mark.parametrize("nb", CHAPTERS, ids=str)
def test_smoke(nb, tmp_path):
    committed = glued(ROOT / nb)
    assert committed, f"{nb}: the committed notebook glues nothing; refresh it with `make execute NB={nb}`"
    _, _, executed = _run(nb, tmp_path, SCALE="smoke")
    got = glued(executed)
    missing = sorted(set(committed) - set(got))
    assert not missing, f"{nb}: glued at book scale but not at smoke: {missing}"
    for name, value in committed.items():
        if isinstance(value, (int, float)):
            assert isinstance(got[name], (int, float)), f"{nb}: glued {name!r} is {got[name]!r}, not a number"
            assert not math.isinf(got[name]), f"{nb}: glued {name!r} is infinite at smoke"


@pytest.mark.parametrize("nb", CHAPTERS, ids=str)
def test_unknown_scale_fails_at_once_naming_scale(nb, tmp_path):
    with pytest.raises(pm.PapermillExecutionError) as exc:
        _run(nb, tmp_path, SCALE="huge")
    assert exc.value.ename == "ValueError" and "SCALE" in exc.value.evalue and "huge" in exc.value.evalue
    executed = nbformat.read(str(tmp_path / (ROOT / nb).name), as_version=4)
    code = [c for c in executed.cells if c.cell_type == "code"]
    injected = next(i for i, c in enumerate(code) if "injected-parameters" in c.metadata.get("tags", []))
    failing = next(i for i, c in enumerate(code) if any(o.output_type == "error" for o in c.get("outputs", [])))
    assert failing == injected + 1, f"{nb}: the unknown SCALE failed in code cell {failing + 1}, not the sizes cell"


def test_toc_lists_at_least_one_notebook():
    assert CHAPTERS, "_toc.yml lists no notebook"
