"""``python -m booktools <command>``: the book's tools behind the Makefile.

    chapters                 the notebooks listed in _toc.yml, one per line (what nbval and smoke run)
    build [--execute]        render the book with Jupyter Book 1.x, -W --keep-going
    execute [NB ...]         refresh committed outputs at book scale in a fresh kernel (no papermill noise)
    run NB [NAME=VALUE ...]  run one chapter through papermill with parameters into _build/runs/
    timings [--quiet]        print and save the table of book-scale and smoke seconds per chapter
    browser                  load every rendered page in headless Chromium, print what a reader would hit
    arith                    this machine's arithmetic fingerprint and the pins in effect
    lab [ARGS]               register the book's kernel and run JupyterLab on book/ (127.0.0.1)
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
    t = sub.add_parser("timings")
    t.add_argument("--quiet", action="store_true", help="only write _build/timings.json")
    sub.add_parser("browser")
    la = sub.add_parser("lab")
    la.add_argument("args", nargs=argparse.REMAINDER, help="passed on to jupyter lab")
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

        return timings(args.quiet)
    elif args.cmd == "lab":
        from booktools.lab import main as lab_main

        return lab_main(args.args)
    elif args.cmd == "browser":
        from booktools.browser import main as browser_main

        return browser_main()
    elif args.cmd == "arith":
        from booktools.arith import _main

        return _main(["show"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
