"""Every chapter and its MyST-markdown text form (jupytext pairing, `jupytext.toml`) agree: same cells, sources
and tags. A pair out of step fails here with the command that fixes it (`make sync`)."""

from __future__ import annotations

import shutil

import pytest

from booktools.pairing import disagreements, text_form
from booktools.toc import ROOT, chapters


@pytest.mark.parametrize("nb", chapters(), ids=str)
def test_chapter_and_text_form_agree(nb):
    problems = disagreements(ROOT / nb, ROOT / text_form(nb))
    assert not problems, f"{nb} and {text_form(nb)} disagree ({'; '.join(problems)}): run `make sync`"


def test_an_unsynced_pair_is_caught(tmp_path):
    nb = chapters()[0]
    shutil.copy(ROOT / nb, tmp_path / "x.ipynb")
    text = (ROOT / text_form(nb)).read_text(encoding="utf-8")
    edited = text.replace("SEED = 0", "SEED = 0  # edited in the text form only", 1)
    assert edited != text
    (tmp_path / "x.md").write_text(edited, encoding="utf-8")
    problems = disagreements(tmp_path / "x.ipynb", tmp_path / "x.md")
    assert len(problems) == 1 and problems[0].endswith("differs in its source"), problems
    assert disagreements(tmp_path / "x.ipynb", tmp_path / "missing.md") == [f"{tmp_path / 'missing.md'} is missing"]


def test_text_forms_have_no_stray_files():
    expected = {text_form(nb) for nb in chapters()}
    found = {p.relative_to(ROOT) for p in (ROOT / "text").rglob("*.md")}
    assert found == expected, f"text forms without a chapter: {sorted(map(str, found - expected))}"


def test_equation_labels_are_unique_across_the_book():
    """Sphinx numbers equations per page but keeps their labels in one namespace: a label used by two chapters
    fails the strict build (`make test-build`) late; this finds it in the unit stage, naming both chapters."""
    import re

    seen: dict[str, str] = {}
    clashes = []
    for nb in chapters():
        text = (ROOT / text_form(nb)).read_text(encoding="utf-8")
        for label in re.findall(r"^\$\$ \(([^)]+)\)\s*$|^:label: (\S+)\s*$", text, flags=re.M):
            name = label[0] or label[1]
            if name in seen and seen[name] != str(nb):
                clashes.append(f"{name}: {seen[name]} and {nb}")
            seen.setdefault(name, str(nb))
    assert not clashes, "equation labels used by two chapters (rename one): " + "; ".join(clashes)
