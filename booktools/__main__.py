"""``python -m booktools <command>``: the book's tools behind the Makefile.

    chapters                 the notebooks listed in _toc.yml, one per line (what nbval and smoke run)
    build [--execute]        render the book with Jupyter Book 1.x, -W --keep-going
    execute [NB ...]         refresh committed outputs at book scale in a fresh kernel (no papermill noise)
    run NB [NAME=VALUE ...]  run one chapter through papermill with parameters into _build/runs/
    timings                  print and save the table of book-scale and smoke seconds per chapter
    arith                    this machine's arithmetic fingerprint and the pins in effect
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from booktools.toc import ROOT, chapters


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m booktools")
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
    sub.add_parser("arith")
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    if args.cmd == "chapters":
        print("\n".join(str(p) for p in chapters()))
    elif args.cmd == "build":
        from booktools.build import build

        return build(args.execute, args.record)
    elif args.cmd == "execute":
        from booktools.notebooks import execute

        execute(args.notebooks or chapters())
    elif args.cmd == "run":
        from booktools.notebooks import run

        run(args.notebook, args.params)
    elif args.cmd == "timings":
        from booktools.timings import timings

        return timings()
    elif args.cmd == "arith":
        from booktools.arith import _main

        return _main(["show"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
