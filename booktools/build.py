"""Rendering the book with Jupyter Book 1.x (``make book``, and stage 4 of ``make test``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from booktools.toc import BUILD, ROOT


def build(execute_notebooks: bool, record: bool = False) -> int:
    """Render the book (committed outputs, or re-executed with ``execute_notebooks``) to _build/html with
    ``-W --keep-going``. ``record`` writes the outcome as the "build" stage of ``make test``."""
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
