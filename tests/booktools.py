"""The book's plumbing, behind the Makefile targets: ``python -m tests.booktools <command>``.

    chapters                 the notebooks listed in _toc.yml, one per line (what nbval and smoke run)
    build [--execute]        render the book with Jupyter Book 1.x, -W --keep-going
    execute [NB ...]         refresh committed outputs at book scale in a fresh kernel (no papermill noise)
    run NB [NAME=VALUE ...]  run one chapter through papermill with parameters into _build/runs/
    timings                  print and save the table of book-scale and smoke seconds per chapter

Also imported by the tests: :func:`chapters`, :func:`glued`.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import subprocess
import sys
import time
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


def chapters(toc: Path = ROOT / "_toc.yml") -> list[Path]:
    """Notebooks listed in ``_toc.yml``, in reading order, relative to the repository root."""
    out = []
    for entry in _toc_entries(yaml.safe_load(toc.read_text(encoding="utf-8"))):
        path = Path(entry if entry.endswith(".ipynb") else entry + ".ipynb")
        if (ROOT / path).is_file():
            out.append(path)
    return out


def glued(nb: nbformat.NotebookNode | Path | str) -> dict[str, Any]:
    """Values that ``myst_nb.glue`` recorded in an executed notebook, parsed back into Python objects."""
    if not isinstance(nb, nbformat.NotebookNode):
        nb = nbformat.read(str(nb), as_version=4)
    out: dict[str, Any] = {}
    for cell in nb.cells:
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
                out[meta["name"]] = text  # e.g. a figure: '<Figure size ...>'
    return out


def parameters_source(nb: nbformat.NotebookNode) -> str:
    cells = [c for c in nb.cells if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"notebook: expected exactly one cell tagged 'parameters', found {len(cells)}")
    return cells[0].source


def execute(paths: list[Path], timeout: int = 1200) -> None:
    """Execute notebooks in place, top to bottom, in a fresh kernel at their committed parameters.

    Refuses a notebook whose parameters cell is not at the committed defaults (SCALE="book", SEED=0):
    committed outputs are the book-scale, seed-0 run that nbval re-checks.
    """
    from nbclient import NotebookClient

    for path in paths:
        path = (ROOT / path).resolve()
        nb = nbformat.read(str(path), as_version=4)
        src = parameters_source(nb)
        if not re.search(r'^SCALE\s*=\s*"book"', src, flags=re.M) or not re.search(r"^SEED\s*=\s*0\b", src, flags=re.M):
            raise SystemExit(f"{path.relative_to(ROOT)}: parameters cell must say SCALE = \"book\" and SEED = 0")
        for cell in nb.cells:  # drop stale outputs and per-cell timing metadata
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
                cell.metadata.pop("execution", None)
        t0 = time.perf_counter()
        print(f"executing {path.relative_to(ROOT)} ...", flush=True)
        NotebookClient(nb, kernel_name=KERNEL, timeout=timeout, record_timing=False,
                       resources={"metadata": {"path": str(path.parent)}}).execute()
        nb.metadata.pop("papermill", None)
        nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, str(path))
        print(f"  done in {time.perf_counter() - t0:.0f} s", flush=True)


def run(path: Path, assignments: list[str]) -> Path:
    """papermill one chapter with NAME=VALUE parameters (values parsed as Python literals, else strings)."""
    import papermill as pm

    params: dict[str, Any] = {}
    for a in assignments:
        name, sep, value = a.partition("=")
        if not sep or not name.isidentifier():
            raise SystemExit(f"P: expected NAME=VALUE pairs, received {a!r}")
        try:
            params[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            params[name] = value
    src = (ROOT / path).resolve()
    tag = "-".join(f"{k}={v}" for k, v in params.items()) or "defaults"
    out = BUILD / "runs" / f"{src.stem}-{re.sub(r'[^A-Za-z0-9=._-]', '_', tag)}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    print(f"papermill {src.relative_to(ROOT)} {params} -> {out.relative_to(ROOT)}", flush=True)
    pm.execute_notebook(str(src), str(out), parameters=params, kernel_name=KERNEL, cwd=str(src.parent),
                        progress_bar=False, log_output=True)
    for name, value in glued(out).items():
        print(f"  glued {name} = {value}")
    return out


def build(execute_notebooks: bool, record: bool = False) -> int:
    """Render the book (committed outputs, or re-executed with ``execute_notebooks``) to _build/html.

    ``record`` writes the outcome as the "build" stage of ``make test`` (one test, passed or failed).
    """
    cmd = [str(Path(sys.executable).parent / "jupyter-book"), "build", "-W", "--keep-going", str(ROOT)]
    if execute_notebooks:
        config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
        config.setdefault("execute", {})["execute_notebooks"] = "force"
        alt = BUILD / "_config.execute.yml"
        alt.parent.mkdir(parents=True, exist_ok=True)
        alt.write_text(yaml.safe_dump(config, sort_keys=False))
        cmd += ["--all", "--config", str(alt)]
    rc = subprocess.call(cmd, cwd=ROOT)
    if record:
        (BUILD / "timings").mkdir(parents=True, exist_ok=True)
        (BUILD / "timings" / "build.json").write_text(json.dumps(
            {"counts": {"passed" if rc == 0 else "failed": 1}, "exitstatus": rc, "seconds": {}}))
    index = BUILD / "html" / "index.html"
    if rc == 0 and index.is_file():
        print(f"\nThe book is at {index}")
    return rc


def timings() -> int:
    """Join the per-stage records written by conftest.py into one table and _build/timings.json."""
    stages = {}
    for f in sorted((BUILD / "timings").glob("*.json")):
        stages[f.stem] = json.loads(f.read_text())
    book = {nb: sec for name, data in stages.items() if name.startswith("nbval") for nb, sec in data.get("seconds", {}).items()}
    smoke = stages.get("smoke", {}).get("seconds", {})
    rows = []
    for path in chapters():
        key = str(path)
        rows.append({"chapter": key, "book_s": book.get(key), "smoke_s": smoke.get(key)})
    from kernels.repro import format_table

    fmt = lambda s: "-" if s is None else f"{s:.0f}"
    print(format_table(["chapter", "book-scale s (nbval)", "smoke s (papermill)"],
                       [[r["chapter"], fmt(r["book_s"]), fmt(r["smoke_s"])] for r in rows]))
    totals = {"passed": 0, "failed": 0, "skipped": 0}
    for name, data in stages.items():
        for k in totals:
            totals[k] += data.get("counts", {}).get(k, 0)
    (BUILD / "timings.json").write_text(json.dumps({"chapters": rows, "stages": stages}, indent=1))
    print("(also in _build/timings.json; timings are reported, never asserted)")
    print(f"all stages: {totals['passed']} passed, {totals['failed']} failed, {totals['skipped']} skipped")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.booktools")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("chapters")
    b = sub.add_parser("build")
    b.add_argument("--execute", action="store_true")
    b.add_argument("--record", action="store_true", help="record the outcome for `make test`'s summary")
    e = sub.add_parser("execute")
    e.add_argument("notebooks", nargs="*", type=Path)
    r = sub.add_parser("run")
    r.add_argument("notebook", type=Path)
    r.add_argument("params", nargs="*")
    sub.add_parser("timings")
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    if args.cmd == "chapters":
        print("\n".join(str(p) for p in chapters()))
    elif args.cmd == "build":
        return build(args.execute, args.record)
    elif args.cmd == "execute":
        execute(args.notebooks or chapters())
    elif args.cmd == "run":
        run(args.notebook, args.params)
    elif args.cmd == "timings":
        return timings()
    return 0


if __name__ == "__main__":
    sys.exit(main())
