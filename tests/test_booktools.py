"""tests.booktools: the table of contents parser and the glue reader that the smoke tests rely on."""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook, new_output

from tests import booktools


def test_chapters_walks_parts_chapters_and_sections(tmp_path, monkeypatch):
    for name in ("a.ipynb", "b.ipynb", "c.ipynb"):
        (tmp_path / name).write_text("{}")
    (tmp_path / "_toc.yml").write_text(
        "format: jb-book\nroot: intro\nparts:\n  - caption: P\n    chapters:\n      - file: a\n"
        "        sections:\n          - file: c.ipynb\n      - file: missing\n  - chapters:\n      - file: b\n")
    monkeypatch.setattr(booktools, "ROOT", tmp_path)
    assert booktools.chapters(tmp_path / "_toc.yml") == [Path("a.ipynb"), Path("c.ipynb"), Path("b.ipynb")]


def test_the_real_toc_lists_existing_notebooks():
    for path in booktools.chapters():
        assert (booktools.ROOT / path).is_file() and path.suffix == ".ipynb"


def test_glued_reads_displayed_and_hidden_values():
    nb = new_notebook(cells=[new_code_cell("", outputs=[
        new_output("display_data", data={"text/plain": "0.123"}, metadata={"scrapbook": {"name": "shown", "mime_prefix": ""}}),
        new_output("display_data", data={"application/papermill.record/text/plain": "[1, 2]"},
                   metadata={"scrapbook": {"name": "hidden", "mime_prefix": "application/papermill.record/"}}),
        new_output("display_data", data={"application/papermill.record/text/plain": "<Figure size 640x480 with 1 Axes>"},
                   metadata={"scrapbook": {"name": "fig", "mime_prefix": "application/papermill.record/"}}),
        new_output("stream", name="stdout", text="not glued\n"),
    ])])
    assert booktools.glued(nb) == {"shown": 0.123, "hidden": [1, 2], "fig": "<Figure size 640x480 with 1 Axes>"}
    assert isinstance(nb, nbformat.NotebookNode)
