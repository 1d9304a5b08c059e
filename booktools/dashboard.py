"""The reproduction dashboard (``book/dashboard.md``): every claim of every chapter in one table, built at
book-build time from the committed notebooks, with each chapter's book-scale wall time from the last
``make test`` (``_build/timings.json``) and its kernels' headline ratios from the last ``make bench``
(``_build/bench.json``).

A Reproduction check (``kernels.repro.Claims.check``) stores its claims as structured data in the metadata of
the table it displays (``metadata.book.claims``); :func:`claims_of` reads them back. The page's directive,
``{reproduction-dashboard}``, is registered by :mod:`booktools.sphinx_ext`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import nbformat

from booktools.toc import BUILD, ROOT, chapters

# which chapters a kernel module's benchmark cases belong to (`make bench` names cases by module)
KERNEL_CHAPTERS = {
    "optim": ["book/optimizers/adam_plus_plus.ipynb"],
    "ngram": ["book/language/over_tokenized.ipynb"],
    "transformer": ["book/language/over_tokenized.ipynb", "book/reasoning/relay.ipynb", "book/systems/webllm.ipynb"],
    "vq": ["book/recsys/streaming_vq.ipynb"],
    "seqrec": ["book/recsys/ads.ipynb"],
    "target_attention": ["book/recsys/ads.ipynb", "book/recsys/lmn.ipynb"],
    "memory": ["book/recsys/lmn.ipynb"],
    "quant": ["book/systems/webllm.ipynb"],
    "llm_engine": ["book/systems/webllm.ipynb"],
    "mpc": ["book/privacy/centaur.ipynb"],
    "spatial": ["book/spatial/geopro_net.ipynb"],
    "hotspot": ["book/spatial/lisa.ipynb"],
    "batched_models": ["book/spatial/lisa.ipynb"],
    "roofline": ["book/appendix/roofline.ipynb"],
}

STATUS = {
    "holds": "holds",
    "fails": "**FAILS**",
    "no-repro": "does not reproduce (asserted to still fail)",
    "sanity": "sanity check",
    "stress": "this chapter's stress test (asserted as recorded; not a paper claim)",
    "nan": "**NaN**",
}


def title_of(nb: nbformat.NotebookNode) -> str:
    for cell in nb.cells:
        if cell.cell_type == "markdown" and cell.source.lstrip().startswith("# "):
            return cell.source.lstrip()[2:].splitlines()[0].strip()
    return "?"


def claims_of(nb: nbformat.NotebookNode) -> list[dict[str, Any]]:
    """The claims a committed notebook's Reproduction check recorded (empty if it recorded none)."""
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            claims = out.get("metadata", {}).get("book", {}).get("claims")
            if claims is not None:
                return list(claims)
    return []


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.3g}"
    return str(value)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _load_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def rows(paths: list[Path] | None = None) -> list[dict[str, Any]]:
    """One row per claim: chapter (title and link), claim, paper statement, value, threshold, status."""
    out = []
    for path in paths if paths is not None else chapters():
        nb = nbformat.read(str(ROOT / path), as_version=4)
        for c in claims_of(nb):
            out.append({"chapter": str(path), "title": title_of(nb), **c})
    return out


def markdown(paths: list[Path] | None = None, timings: dict | None = None, bench: dict | None = None,
             link_base: Path = Path("book")) -> str:
    """The dashboard's content as MyST markdown (tables and a summary line); chapter links are relative to
    ``link_base``, the folder of the page that shows it."""
    paths = paths if paths is not None else chapters()
    timings = _load_json(BUILD / "timings.json") if timings is None else timings
    bench = _load_json(BUILD / "bench.json") if bench is None else bench
    all_rows = rows(paths)
    counts = {k: sum(r["status"] == k for r in all_rows) for k in STATUS}
    lines = [f"**{len(all_rows)} claims in {len(paths)} notebooks:** {counts['holds']} hold, "
             f"{counts['no-repro']} do not reproduce (each asserted to still fail, so that a change is noticed), "
             f"{counts['sanity']} are sanity checks, {counts['stress']} are stress tests of a chapter's own, "
             f"{counts['fails'] + counts['nan']} fail.", ""]
    book_s = {r["chapter"]: r.get("book_s") for r in timings.get("chapters", [])}
    modes = {r["chapter"]: r.get("nbval_mode") for r in timings.get("chapters", [])}
    ratios: dict[str, list[str]] = {}
    for case in bench.get("cases", []):
        for chapter in KERNEL_CHAPTERS.get(case.get("module"), []):
            ratios.setdefault(chapter, []).append(f"{case['comparison']}: {case['ratio']}")
    lines += ["| chapter | claims (holds / does not reproduce / sanity) | book-scale s, last `make test` | "
              "kernel headlines, last `make bench` |", "|---|---|---|---|"]
    for path in paths:
        rs = [r for r in all_rows if r["chapter"] == str(path)]
        if not rs:
            continue
        sec = book_s.get(str(path))
        sec_text = "not measured yet" if sec is None else f"{sec:.0f}" + (f" ({modes[str(path)]})" if modes.get(str(path)) else "")
        head = f"{sum(r['status'] == 'holds' for r in rs)} / {sum(r['status'] == 'no-repro' for r in rs)} / " \
               f"{sum(r['status'] == 'sanity' for r in rs)}"
        link = Path(path).relative_to(link_base) if Path(path).is_relative_to(link_base) else Path(path)
        lines.append(f"| [{_cell(rs[0]['title'])}]({link}) | {head} | {sec_text} | "
                     f"{_cell('; '.join(ratios.get(str(path), [])) or '-')} |")
    lines += ["", *targets_markdown(bench, link_base)]
    lines += ["", "| chapter | claim | paper's statement | this book | threshold | status |",
              "|---|---|---|---|---|---|"]
    for r in all_rows:
        lines.append(f"| {_cell(Path(r['chapter']).stem)} | `{r['name']}` | {_cell(r['paper'])} | "
                     f"{_fmt(r['measured'])} | {r['op']} {_fmt(r['threshold'])} | {STATUS.get(r['status'], r['status'])} |")
    return "\n".join(lines) + "\n"


def targets_markdown(bench: dict, link_base: Path = Path("book")) -> list[str]:
    """The kernel targets of the last ``make bench`` (``kernels.bench.Target``): each kernel against its named
    peer, measured in the same run, with hit or MISS. Reported, never asserted: a speed-up belongs to a machine."""
    goals = bench.get("targets", [])
    if not goals:
        return ["**Kernel targets:** not measured on this build (`make bench` writes them)."]
    hits = sum(bool(g.get("hit")) for g in goals)
    out = [f"**Kernel targets** (last `make bench`, {_cell(bench.get('machine', '?'))}, "
           f"{bench.get('threads', 1)} thread): {hits} of {len(goals)} hit.", "",
           "| chapter | kernel | case | fast path | measured | target | | why |", "|---|---|---|---|---|---|---|---|"]
    for g in goals:
        links = []
        for chapter in KERNEL_CHAPTERS.get(g.get("module"), []):
            link = Path(chapter).relative_to(link_base) if Path(chapter).is_relative_to(link_base) else Path(chapter)
            links.append(f"[{Path(chapter).stem}]({link})")
        out.append(f"| {', '.join(links) or '-'} | `{_cell(g.get('module', '?'))}` | {_cell(g.get('case', ''))} | "
                   f"{_cell(g.get('kernel', ''))} | {_cell(g.get('measured', ''))} | {_cell(g.get('target', ''))} | "
                   f"{'hit' if g.get('hit') else '**MISS**'} | {_cell(g.get('why', ''))} |")
    return out


def dependencies(paths: list[Path] | None = None) -> list[Path]:
    """Files whose change must rebuild the dashboard page."""
    paths = paths if paths is not None else chapters()
    return [ROOT / p for p in paths] + [BUILD / "timings.json", BUILD / "bench.json"]
