"""The summary at the end of ``make test``: seconds per chapter (book scale under nbval, smoke under
papermill), outcome counts per stage, and nbval's comparison mode. Reported, never asserted."""

from __future__ import annotations

import json

from booktools.toc import BUILD, chapters


def timings(quiet: bool = False) -> int:
    """Join the per-stage records that ``conftest.py`` wrote into one table and ``_build/timings.json``
    (``quiet``: only write the file)."""
    from kernels.repro import format_table

    stages = {}
    extra = {}
    for f in sorted((BUILD / "timings").glob("*.json")):
        if f.stem.endswith("-summary"):
            extra[f.stem] = json.loads(f.read_text())
        else:
            stages[f.stem] = json.loads(f.read_text())
    book = {nb: sec for name, data in stages.items() if name.startswith("nbval")
            for nb, sec in data.get("seconds", {}).items()}
    smoke = stages.get("smoke", {}).get("seconds", {})
    modes = {m["chapter"]: m["mode"] for name, data in stages.items() if name.startswith("nbval")
             for m in data.get("modes", [])}
    rows = [{"chapter": str(p), "book_s": book.get(str(p)), "smoke_s": smoke.get(str(p)),
             "nbval_mode": modes.get(str(p))} for p in chapters()]
    fmt = lambda s: "-" if s is None else f"{s:.0f}"  # noqa: E731
    (BUILD / "timings.json").write_text(json.dumps({"chapters": rows, "stages": stages}, indent=1))
    if quiet:
        return 0
    print(format_table(["chapter", "book-scale s (nbval)", "nbval mode", "smoke s (papermill)"],
                       [[r["chapter"], fmt(r["book_s"]), r["nbval_mode"] or "-", fmt(r["smoke_s"])] for r in rows]))
    totals = {"passed": 0, "failed": 0, "skipped": 0}
    for data in stages.values():
        for k in totals:
            totals[k] += data.get("counts", {}).get(k, 0)
    print("(also in _build/timings.json; timings are reported, never asserted)")
    from booktools import modes as nbval_modes

    records = [r for name, data in stages.items() if name.startswith("nbval") for r in data.get("modes", [])]
    here = next((data["arith"] for name, data in stages.items() if name.startswith("nbval") and "arith" in data), {})
    if records:
        print(nbval_modes.summary([nbval_modes.from_record(r) for r in records], here))
    for name, data in extra.items():
        print(data["line"])
    for name, data in stages.items():
        for reason in sorted(set(data.get("skip_reasons", []))):
            if "stage skipped" in reason:
                print(reason)
    print(f"all stages: {totals['passed']} passed, {totals['failed']} failed, {totals['skipped']} skipped")
    return 0
