"""``python -m kernels.web``: the WebLLM chapter's browser comparison (both model sizes, 1 and 2 threads).

Exports the graphs to a temporary folder, runs torch eager, native onnxruntime and onnxruntime-web in headless
Chromium (skipped, with the reason, when Chromium or the npm package is missing), prints one table and writes
``_build/webllm/browser_run.json``, which the chapter shows. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from kernels import repro, web


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kernels.web", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="*", default=["chat", "medium"], choices=["chat", "medium"])
    parser.add_argument("--threads", nargs="*", type=int, default=[1, 2])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default=str(web.RUN_FILE), help="where to write the run (default: %(default)s)")
    parser.add_argument("--no-browser", action="store_true", help="torch and native onnxruntime only")
    args = parser.parse_args(argv)
    repro.setup(0, threads=1)
    run = web.compare(tuple(args.sizes), tuple(args.threads), args.repeats, browser=not args.no_browser)
    print(f"browser: {run['browser']}")
    print(repro.format_table(["model", "params", "threads", "torch eager", "onnxruntime", "browser (WASM)",
                              "browser / native", "browser ids = native"], web.summary_rows(run)))
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(run, indent=1))
    print(f"(written to {out})")
    same = [b["ids_equal_native"] for e in run["models"].values() for b in e["browser"].values()]
    same += [t["ids_equal_native"] for e in run["models"].values() for t in e["torch"].values()]
    return 0 if all(same) else 1


if __name__ == "__main__":
    sys.exit(main())
