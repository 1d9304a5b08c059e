"""The book's Jupyter kernel: ``python -m booktools.kernel -f <connection file>``.

The ``python3`` kernelspec inside ``.venv`` (written by :func:`booktools.lab.install_kernel`, shown as "Ten Papers
from Scratch") starts this module instead of plain ``ipykernel_launcher``, so that a kernel started by
JupyterLab, papermill or nbclient gets what the Makefile gives every other process: the repository on the
import path (``import kernels``) and the book's arithmetic (:mod:`booktools.arith`: one thread, the AVX2
pins; a variable already set by the caller wins). Then it is an ordinary IPython kernel.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def prepare(environ: dict | None = None) -> None:
    """Put the repository on the import path of this process and its children, and apply the pins."""
    from booktools import arith

    environ = os.environ if environ is None else environ
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), environ.get("PYTHONPATH")]))
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    arith.apply(environ)


if __name__ == "__main__":
    prepare()
    from ipykernel import kernelapp

    kernelapp.launch_new_instance()
