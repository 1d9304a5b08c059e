"""The table of contents and what executed notebooks recorded: which chapters exist, their parameters, and the
values they glued (``myst_nb.glue``) for the prose and the tests."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any, Iterable

import nbformat
import yaml

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "_build"
KERNEL = "python3"


def _toc_entries(node: Any) -> Iterable[str]:
    if isinstance(node, dict):
        for key in ("root", "file"):
            if isinstance(node.get(key), str):
                yield node[key]
        for key in ("parts", "chapters", "sections"):
            for child in node.get(key) or []:
                yield from _toc_entries(child)
    elif isinstance(node, list):
        for child in node:
            yield from _toc_entries(child)


def chapters(toc: Path | None = None) -> list[Path]:
    """Notebooks listed in ``_toc.yml``, in reading order, relative to the repository root."""
    toc = toc or ROOT / "_toc.yml"
    root = toc.parent
    out = []
    for entry in _toc_entries(yaml.safe_load(toc.read_text(encoding="utf-8"))):
        path = Path(entry if entry.endswith(".ipynb") else entry + ".ipynb")
        if (root / path).is_file():
            out.append(path)
    return out


def read(nb: nbformat.NotebookNode | Path | str) -> nbformat.NotebookNode:
    """A notebook, read from a path unless it already is one."""
    return nb if isinstance(nb, nbformat.NotebookNode) else nbformat.read(str(nb), as_version=4)


def glued(nb: nbformat.NotebookNode | Path | str) -> dict[str, Any]:
    """Values that ``myst_nb.glue`` recorded in an executed notebook, parsed back into Python objects.

    ``nan`` and ``inf`` come back as floats (their reprs are not Python literals).
    """
    out: dict[str, Any] = {}
    for cell in read(nb).cells:
        for o in cell.get("outputs", []):
            meta = o.get("metadata", {}).get("scrapbook")
            if not meta:
                continue
            text = o.get("data", {}).get(meta.get("mime_prefix", "") + "text/plain")
            if text is None:
                continue
            text = "".join(text) if isinstance(text, list) else text
            try:
                out[meta["name"]] = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                stripped = text.strip().lstrip("-")
                out[meta["name"]] = float(text) if stripped in ("nan", "inf") else text  # a figure: '<Figure ...>'
    return out


def parameters_source(nb: nbformat.NotebookNode) -> str:
    """The source of the one cell tagged ``parameters``."""
    cells = [c for c in nb.cells if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"notebook: expected exactly one cell tagged 'parameters', found {len(cells)}")
    return cells[0].source
