"""booktools: the table of contents, glue reading, arithmetic pins and fingerprint, nbval modes, progress-bar
collapsing, the smoke check, and the time limits of every way a chapter is executed."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from booktools import arith, limits, modes, notebooks, toc

ROOT = toc.ROOT


# --- toc and glue ---------------------------------------------------------------------------------------

def test_chapters_walks_parts_chapters_and_sections(tmp_path):
    for name in ("a.ipynb", "b.ipynb", "c.ipynb"):
        (tmp_path / name).write_text("{}")
    (tmp_path / "_toc.yml").write_text(
        "format: jb-book\nroot: intro\nparts:\n  - caption: P\n    chapters:\n      - file: a\n"
        "        sections:\n          - file: c.ipynb\n      - file: missing\n  - chapters:\n      - file: b\n")
    assert toc.chapters(tmp_path / "_toc.yml") == [Path("a.ipynb"), Path("c.ipynb"), Path("b.ipynb")]


def test_the_real_toc_lists_existing_notebooks():
    for path in toc.chapters():
        assert (ROOT / path).is_file() and path.suffix == ".ipynb"


def _glue(name, text, hidden=True):
    prefix = "application/papermill.record/" if hidden else ""
    return new_output("display_data", data={prefix + "text/plain": text},
                      metadata={"scrapbook": {"name": name, "mime_prefix": prefix}})


def test_glued_reads_displayed_and_hidden_values_and_nan():
    nb = new_notebook(cells=[new_code_cell("", outputs=[
        _glue("shown", "0.123", hidden=False), _glue("hidden", "[1, 2]"),
        _glue("fig", "<Figure size 640x480 with 1 Axes>"), _glue("bad", "nan"), _glue("big", "-inf"),
        new_output("stream", name="stdout", text="not glued\n"),
    ])])
    got = toc.glued(nb)
    assert {k: got[k] for k in ("shown", "hidden", "fig")} == {
        "shown": 0.123, "hidden": [1, 2], "fig": "<Figure size 640x480 with 1 Axes>"}
    assert math.isnan(got["bad"]) and got["big"] == -math.inf


# --- the smoke check --------------------------------------------------------------------------------------

def test_check_glued_passes_finite_numbers_and_strings():
    notebooks.check_glued("ch", {"a": 1.0, "b": "text", "c": 3}, {"a": 0.5, "b": "other", "c": 2, "extra": 1})


@pytest.mark.parametrize("got, message", [
    ({"a": float("nan"), "b": 1.0}, "'a' is nan"),
    ({"a": float("inf"), "b": 1.0}, "'a' is inf"),
    ({"a": 1.0}, "not here: ['b']"),
    ({"a": "<Figure>", "b": 1.0}, "not a number"),
])
def test_check_glued_fails_on_nan_inf_missing_or_non_number(got, message):
    with pytest.raises(AssertionError, match=message.replace("[", r"\[").replace("]", r"\]")):
        notebooks.check_glued("ch", {"a": 1.0, "b": 2.0}, got)


def test_check_glued_fails_when_nothing_was_committed():
    with pytest.raises(AssertionError, match="glues nothing"):
        notebooks.check_glued("ch", {}, {"a": 1.0})


# --- arithmetic pins and fingerprint ----------------------------------------------------------------------

AVX2_FLAGS = {"sse2", "avx", "avx2", "fma"}


def test_pins_on_x86_with_avx2_cover_every_library_and_one_thread():
    got = arith.pins({}, machine="x86_64", flags=AVX2_FLAGS)
    assert got["ATEN_CPU_CAPABILITY"] == "avx2" and got["MKL_CBWR"] == "AVX2"
    assert got["ONEDNN_MAX_CPU_ISA"] == "AVX2" and got["OPENBLAS_CORETYPE"] == "Haswell"
    assert "X86_V4" in got["NPY_DISABLE_CPU_FEATURES"] and got["FAISS_SIMD_LEVEL"] == "AVX2"
    assert all(got[v] == "1" for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"))
    assert all(" " not in v for v in got.values()), "the Makefile splits the pins on spaces"


def test_pins_never_override_the_callers_environment():
    env = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE", "OMP_NUM_THREADS": "4"}
    got = arith.pins(env, machine="x86_64", flags=AVX2_FLAGS)
    assert not set(env) & set(got)
    assert got["ONEDNN_MAX_CPU_ISA"] == "AVX2"


@pytest.mark.parametrize("machine, flags", [("x86_64", {"sse2", "avx"}), ("aarch64", {"asimd"}), ("x86_64", set())])
def test_no_simd_pins_without_avx2_or_off_x86(machine, flags):
    assert set(arith.pins({}, machine=machine, flags=flags)) == set(arith.THREAD_VARS)


def test_cpu_flags_reads_x86_and_arm_cpuinfo():
    assert arith.cpu_flags("processor : 0\nflags\t\t: fpu avx2 fma\n") == {"fpu", "avx2", "fma"}
    assert arith.cpu_flags("Features\t: fp asimd\n") == {"fp", "asimd"}
    assert arith.cpu_flags("nothing here\n") == set()


def test_describe_pins_names_what_the_caller_changed():
    env = dict(arith.AVX2_PINS, ATEN_CPU_CAPABILITY="default")
    text = arith.describe_pins(env)
    assert f"{len(arith.AVX2_PINS) - 1} of {len(arith.AVX2_PINS)}" in text and "ATEN_CPU_CAPABILITY=default" in text
    assert "no arithmetic pins" in arith.describe_pins({})


def test_makefile_words_are_the_pins():
    out = subprocess.run([sys.executable, "-m", "booktools.arith", "make"], cwd=ROOT, check=True,
                         capture_output=True, text=True, env={"PATH": os.environ.get("PATH", "")}).stdout.split()
    assert dict(w.split("=", 1) for w in out) == arith.pins({})


def test_fingerprint_is_repeatable_and_sees_a_changed_code_path():
    """Two fresh processes agree bit for bit; a process with torch's scalar kernels does not."""
    a, b = arith.fingerprint(), arith.fingerprint()
    assert a == b and len(a["fingerprint"]) == 12 and "torch training (Adam, AdamW)" in a["parts"]
    if os.environ.get("ATEN_CPU_CAPABILITY", "default") == "default":
        pytest.skip("torch already runs its default kernels here")
    env = dict(os.environ, ATEN_CPU_CAPABILITY="default")
    other = json.loads(subprocess.run([sys.executable, "-m", "booktools.arith", "parts"], cwd=ROOT, env=env,
                                      check=True, capture_output=True, text=True).stdout.splitlines()[-1])
    assert other["fingerprint"] != a["fingerprint"]
    assert "torch randn" in arith.difference(a, other)
    assert not {"numpy random", "numpy matmul (OpenBLAS)"} & set(arith.difference(a, other))


def test_difference_and_combine():
    a = {"fingerprint": "x", "parts": {"p": "1", "q": "2"}}
    assert arith.difference(a, {"parts": {"p": "1", "q": "3", "r": "4"}}) == ["q", "r"]
    assert arith.difference(a, None) == ["no fingerprint recorded"]
    assert arith.combine({"p": "1", "q": "2"}) == arith.combine({"q": "2", "p": "1"}) != arith.combine({"p": "1"})


# --- nbval modes ------------------------------------------------------------------------------------------

def _nb_with_record(record):
    nb = new_notebook(cells=[
        new_markdown_cell("# t"),
        new_code_cell("print(1)", metadata={"tags": ["nbval-check-output"]}),
        new_code_cell("train()"),
        new_code_cell("time()", metadata={"tags": ["nbval-ignore-output"]}),
    ])
    if record is not None:
        nb.metadata["book"] = {"arith": record}
    return nb


def test_same_fingerprint_is_strict_and_compares_all_but_ignored_cells():
    here = {"fingerprint": "abc", "parts": {"p": "1"}}
    m = modes.decide("book/x.ipynb", _nb_with_record(here), here)
    assert m.strict and m.compared == 2 and m.code_cells == 3
    assert "strict for 1 of 1 notebooks" in modes.summary([m], here)


def test_other_fingerprint_is_portable_and_says_why():
    here = {"fingerprint": "abc", "parts": {"p": "1", "q": "1"}}
    m = modes.decide("book/x.ipynb", _nb_with_record({"fingerprint": "def", "parts": {"p": "1", "q": "2"}}), here)
    assert not m.strict and m.compared == 1 and m.differs_in == ("q",)
    line = modes.summary([m], here)
    assert "portable for 1 of 1" in line and "differs from the committed one in q" in line
    assert "compared only the 1 of 3 code cells" in line and "every claim is still asserted" in line


def test_no_recorded_fingerprint_is_portable():
    m = modes.decide("book/x.ipynb", _nb_with_record(None), {"fingerprint": "abc", "parts": {}})
    assert not m.strict and m.differs_in == ("no fingerprint recorded",)


def test_every_chapter_records_a_fingerprint_and_tags_platform_stable_cells():
    for path in toc.chapters():
        nb = nbformat.read(str(ROOT / path), as_version=4)
        assert modes.committed_record(nb), f"{path}: no arithmetic fingerprint; refresh with `make execute NB={path}`"
        tagged = [c for c in nb.cells if c.cell_type == "code" and modes.CHECK_TAG in c.metadata.get("tags", [])]
        assert tagged, f"{path}: no cell tagged {modes.CHECK_TAG}: a foreign machine would compare nothing"
        both = [c for c in tagged if modes.IGNORE_TAG in c.metadata.get("tags", [])]
        assert not both, f"{path}: a cell is tagged both {modes.CHECK_TAG} and {modes.IGNORE_TAG}"


# --- progress bars ----------------------------------------------------------------------------------------

def _stream(name, text):
    return new_output("stream", name=name, text=text)


def test_collapse_keeps_the_final_state_of_a_progress_bar():
    outs = [_stream("stderr", "\rtrain:   0%|          | 0/3"), _stream("stderr", "\rtrain:  33%|###       | 1/3"),
            _stream("stderr", "\rtrain: 100%|##########| 3/3"), _stream("stdout", "result 1\n"),
            _stream("stderr", "\n")]
    got = notebooks.collapse_cell_streams(outs)
    assert [(o["name"], o["text"]) for o in got] == [("stderr", "train: 100%|##########| 3/3\n"),
                                                     ("stdout", "result 1\n")]
    assert notebooks._nbval_view(got) == notebooks._nbval_view(outs)


def test_collapse_keeps_text_after_a_figure_in_place():
    fig = new_output("display_data", data={"text/plain": "<Figure>"})
    outs = [_stream("stdout", "a\n"), _stream("stdout", "b\n"), fig, _stream("stdout", "c\n")]
    got = notebooks.collapse_cell_streams(outs)
    assert [o.get("text", o.get("data", {}).get("text/plain")) for o in got] == ["a\nb\n", "<Figure>", "c\n"]


def test_collapse_falls_back_to_nbvals_view_when_a_bar_spans_other_output():
    outs = [_stream("stderr", "\rbar 50%"), _stream("stdout", "x\n"), _stream("stderr", "\rbar 100%\n")]
    got = notebooks.collapse_cell_streams(outs)
    assert notebooks._nbval_view(got) == notebooks._nbval_view(outs)


# --- time limits --------------------------------------------------------------------------------------------

def _sleepy(tmp_path, seconds, cells=1, name="sleepy.ipynb"):
    nb = new_notebook(cells=[new_code_cell("SCALE = 'book'\nSEED = 0", metadata={"tags": ["parameters"]})]
                      + [new_code_cell(f"import time\ntime.sleep({seconds})") for _ in range(cells)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / name
    nbformat.write(nb, str(path))
    return path


def test_limits_by_scale_and_environment(monkeypatch):
    assert limits.Limits.for_scale("paper").next_timeout() is None
    assert limits.Limits.for_scale("book").cell_s == limits.DEFAULTS["book"][0]
    monkeypatch.setenv("BOOK_CELL_TIMEOUT_S", "7")
    assert limits.Limits.for_scale("smoke").cell_s == 7
    monkeypatch.setenv("BOOK_NOTEBOOK_TIMEOUT_S", "nope")
    with pytest.raises(ValueError, match="BOOK_NOTEBOOK_TIMEOUT_S"):
        limits.Limits.for_scale("book")
    with pytest.raises(ValueError, match="scale"):
        limits.Limits.for_scale("huge")


def test_next_timeout_shrinks_with_the_notebook_budget():
    lim = limits.Limits(cell_s=100, notebook_s=50)
    assert 49 <= lim.next_timeout() <= 50
    lim.started -= 60
    assert lim.next_timeout() == 1.0


def test_execute_fails_on_a_hung_cell_naming_chapter_and_cell(tmp_path, monkeypatch):
    monkeypatch.setenv("BOOK_CELL_TIMEOUT_S", "2")
    path = _sleepy(tmp_path, 60)
    with pytest.raises(limits.ChapterTimeout, match=r"sleepy.ipynb: code cell 2 \('import time'\) ran past the cell limit of 2 s"):
        notebooks.execute_one(path)


def test_execute_fails_at_the_notebook_limit(tmp_path, monkeypatch):
    monkeypatch.setenv("BOOK_NOTEBOOK_TIMEOUT_S", "6")
    path = _sleepy(tmp_path, 2.5, cells=4)
    with pytest.raises(limits.ChapterTimeout, match=r"code cell [45] .* ran past the notebook limit of 6 s"):
        notebooks.execute_one(path)


def test_papermill_run_fails_on_a_hung_cell_naming_chapter_and_cell(tmp_path, monkeypatch):
    monkeypatch.setenv("BOOK_CELL_TIMEOUT_S", "2")
    path = _sleepy(tmp_path, 60)
    with pytest.raises(limits.ChapterTimeout, match=r"sleepy.ipynb: code cell 3 \('import time'\) ran past"):
        notebooks.papermill(path, tmp_path / "out.ipynb", {"SCALE": "smoke"})


def _nbval(path, **env):
    """nbval on a notebook inside the repository (so that the root conftest applies)."""
    full = dict(os.environ, BOOK_ARITH_RECORD=json.dumps({"fingerprint": "x", "parts": {}}), **env)
    full.pop("BOOK_STAGE", None)
    return subprocess.run([sys.executable, "-m", "pytest", str(path), "--nbval-lax", "--nbval-current-env", "-q",
                           "-p", "no:xdist", "--rootdir", str(ROOT), "-c", str(ROOT / "pyproject.toml")],
                          cwd=ROOT, env=full, capture_output=True, text=True)


@pytest.fixture
def repo_tmp():
    import shutil
    import tempfile

    (ROOT / "_build").mkdir(exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="test-limits-", dir=ROOT / "_build"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_nbval_fails_on_a_hung_cell(repo_tmp):
    res = _nbval(_sleepy(repo_tmp, 60), BOOK_CELL_TIMEOUT_S="3")
    assert res.returncode != 0 and "Timeout of 3 seconds exceeded" in res.stdout


def test_nbval_fails_at_the_notebook_limit_naming_the_cell(repo_tmp):
    res = _nbval(_sleepy(repo_tmp, 2, cells=4), BOOK_NOTEBOOK_TIMEOUT_S="5")
    assert res.returncode != 0
    assert "ran past the notebook limit of 5 s before" in res.stdout or "Timeout of" in res.stdout
