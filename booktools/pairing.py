"""Each chapter's MyST-markdown text form (``text/<part>/<slug>.md``, paired by jupytext through
``jupytext.toml``): where it lives, and whether it agrees with the notebook. ``make sync`` brings a pair in line;
``tests/test_jupytext.py`` fails on any pair that disagrees."""

from __future__ import annotations

from pathlib import Path

import jupytext
import nbformat

from booktools.toc import ROOT


def text_form(notebook: Path | str) -> Path:
    """``book/<part>/<slug>.ipynb`` -> ``text/<part>/<slug>.md``."""
    rel = Path(notebook).relative_to("book") if not Path(notebook).is_absolute() else Path(notebook).relative_to(ROOT / "book")
    return Path("text") / rel.with_suffix(".md")


def _cells(nb: nbformat.NotebookNode) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(c.cell_type, c.source.strip(), tuple(c.metadata.get("tags", []))) for c in nb.cells]


def disagreements(notebook: Path, text: Path) -> list[str]:
    """How the notebook and its text form differ (cell types, sources, tags); empty when they agree."""
    if not text.is_file():
        return [f"{text} is missing"]
    a, b = _cells(nbformat.read(str(notebook), as_version=4)), _cells(jupytext.read(str(text)))
    out = []
    if len(a) != len(b):
        out.append(f"{len(a)} cells in the notebook, {len(b)} in the text form")
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            what = "type" if x[0] != y[0] else "source" if x[1] != y[1] else "tags"
            out.append(f"cell {i + 1} differs in its {what}")
            if len(out) >= 5:
                break
    return out
