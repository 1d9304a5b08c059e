"""Side-by-side timing of two or more callables in one process: the harness behind every chapter's
"Kernel spotlight" cell and behind ``make bench``.

Method (what makes the ratios fair on a noisy, shared 2-core machine):

1. warm-up: every callable runs ``warmup`` times first (allocator, caches, lazy init, oneDNN primitives);
2. calibration: each callable gets its own ``number`` of calls per sample, so that one sample lasts at
   least ``min_sample_s`` and timer resolution does not matter;
3. interleaving: samples are taken in rounds, one sample of every callable per round, with the order
   rotated each round, so that slow drift of the machine (another process, thermal state) hits every
   callable alike instead of whichever happened to run last;
4. statistics: the median per-call time over rounds, with min and max; ratios are ratios of medians.

Given the work per call (``flops`` and/or ``bytes_moved``) the table also reports GFLOP/s and GB/s, and,
given the machine's limits from ``kernels.roofline``, the fraction of peak each achieves (the roofline
of Williams, Waterman & Patterson, CACM 2009: attainable = min(peak, intensity x bandwidth)). A fraction is
only meaningful against a roof measured under the same conditions: ``make bench`` times the roofs
(:func:`kernels.roofline.roof_fns`) in the same interleaved rounds as each case, and a fraction never
prints above 100 %: a rate at or above the roof beside it prints as ``100%*``, which means the counted work
overstates what the kernel really moved or computed (data reused from cache, say).

``python -m kernels.bench`` runs every ``bench_cases(quick)`` that a module of this package defines and
prints one table per case plus a summary: that is ``make bench``.
"""

from __future__ import annotations

import argparse
import importlib
import math
import pkgutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from kernels.repro import format_table


@dataclass
class Timing:
    """Per-call times (seconds) of one callable, one sample per round."""

    name: str
    samples: list[float]
    number: int

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def min(self) -> float:
        return min(self.samples)

    @property
    def max(self) -> float:
        return max(self.samples)


@dataclass
class Comparison:
    """The result of :func:`compare`: timings in input order, and the work each call does."""

    title: str
    timings: list[Timing]
    baseline: str
    flops: dict[str, float] = field(default_factory=dict)
    bytes_moved: dict[str, float] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Timing:
        for t in self.timings:
            if t.name == name:
                return t
        raise KeyError(name)

    def speedup(self, name: str, over: str | None = None) -> float:
        """How many times faster ``name`` is than ``over`` (default: the baseline), by medians."""
        return self[over or self.baseline].median / self[name].median

    def gflops(self, name: str) -> float | None:
        return self.flops[name] / self[name].median / 1e9 if name in self.flops else None

    def gbs(self, name: str) -> float | None:
        return self.bytes_moved[name] / self[name].median / 1e9 if name in self.bytes_moved else None

    def table(self, peak_gflops: float | None = None, mem_bw_gbs: float | None = None) -> str:
        """Plain-text table; with the machine's limits, also the fraction of peak compute/bandwidth
        (capped: see :func:`fraction`)."""
        header = ["callable", "median", "min-max", f"speed-up vs {self.baseline}"]
        has_f, has_b = bool(self.flops), bool(self.bytes_moved)
        if has_f:
            header += ["GFLOP/s"] + (["% peak"] if peak_gflops else [])
        if has_b:
            header += ["GB/s"] + (["% bw"] if mem_bw_gbs else [])
        rows = []
        for t in self.timings:
            row = [t.name, fmt_time(t.median), f"{fmt_time(t.min)}-{fmt_time(t.max)}",
                   f"{self.speedup(t.name):.2f}x"]
            if has_f:
                g = self.gflops(t.name)
                row.append("" if g is None else f"{g:.3g}")
                if peak_gflops:
                    row.append("" if g is None else fraction(g, peak_gflops))
            if has_b:
                b = self.gbs(t.name)
                row.append("" if b is None else f"{b:.3g}")
                if mem_bw_gbs:
                    row.append("" if b is None else fraction(b, mem_bw_gbs))
            rows.append(row)
        title = f"{self.title}\n" if self.title else ""
        return title + format_table(header, rows)


def fraction(rate: float, roof: float) -> str:
    """``rate`` as a percentage of ``roof``, never above 100 %: ``"100%*"`` marks a rate at or above the roof,
    which says that the roof was measured under other conditions or the counted work overstates the real."""
    if not roof > 0:
        raise ValueError(f"roof: expected a positive rate, received {roof!r}")
    pct = 100.0 * rate / roof
    return "100%*" if pct >= 99.5 else f"{pct:.0f}%"


def fmt_time(seconds: float) -> str:
    """Seconds with an SI unit at 3 significant digits: 1.23 us, 45.6 ms, ..."""
    if not math.isfinite(seconds):
        return str(seconds)
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9)):
        if abs(seconds) >= scale or unit == "ns":
            return f"{seconds / scale:.3g} {unit}"
    raise AssertionError("unreachable")


def _per_name(arg: float | Mapping[str, float] | None, names: Sequence[str], argname: str) -> dict[str, float]:
    if arg is None:
        return {}
    if isinstance(arg, Mapping):
        unknown = set(arg) - set(names)
        if unknown:
            raise ValueError(f"{argname}: keys must name callables {list(names)}; received unknown {sorted(unknown)}")
        out = dict(arg)
    else:
        out = {n: arg for n in names}
    for k, v in out.items():
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not v > 0:
            raise ValueError(f"{argname}[{k!r}]: expected a positive number, received {v!r}")
    return {k: float(v) for k, v in out.items()}


def compare(fns: Mapping[str, Callable[[], Any]], *, baseline: str | None = None, repeat: int = 15,
            warmup: int = 2, min_sample_s: float = 0.01, max_number: int = 1_000_000,
            flops: float | Mapping[str, float] | None = None,
            bytes_moved: float | Mapping[str, float] | None = None,
            title: str = "", sync: Callable[[], Any] | None = None,
            timer: Callable[[], float] = time.perf_counter) -> Comparison:
    """Time every callable in ``fns`` (no arguments) side by side; see the module docstring.

    ``baseline`` (default: the first callable) is what speed-ups are relative to. ``flops`` and
    ``bytes_moved`` are the work of one call, a single number for all or a dict per callable. ``sync``
    is called before reading the clock (e.g. ``torch.cuda.synchronize`` at paper scale on a GPU).
    """
    if not isinstance(fns, Mapping) or len(fns) < 1:
        raise ValueError(f"fns: expected a non-empty mapping name -> callable, received {type(fns).__name__}")
    names = list(fns)
    for n, f in fns.items():
        if not callable(f):
            raise ValueError(f"fns[{n!r}]: expected a callable, received {type(f).__name__}")
    if baseline is None:
        baseline = names[0]
    if baseline not in fns:
        raise ValueError(f"baseline: expected one of {names}, received {baseline!r}")
    for argname, v, lo in (("repeat", repeat, 1), ("warmup", warmup, 0), ("max_number", max_number, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{argname}: expected an int >= {lo}, received {v!r}")
    if not min_sample_s >= 0:
        raise ValueError(f"min_sample_s: expected a number >= 0, received {min_sample_s!r}")
    flops_d = _per_name(flops, names, "flops")
    bytes_d = _per_name(bytes_moved, names, "bytes_moved")
    done = sync or (lambda: None)

    def run(f: Callable[[], Any], number: int) -> float:
        done()
        t0 = timer()
        for _ in range(number):
            f()
        done()
        return timer() - t0

    for _ in range(warmup):
        for n in names:
            fns[n]()
    numbers = {}
    for n in names:  # calibrate: enough calls that one sample lasts >= min_sample_s
        one = run(fns[n], 1)
        numbers[n] = 1 if one >= min_sample_s else min(max_number, max(1, math.ceil(min_sample_s / max(one, 1e-9))))
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeat):
        k = r % len(names)
        for n in names[k:] + names[:k]:  # rotate the order each round
            samples[n].append(run(fns[n], numbers[n]) / numbers[n])
    timings = [Timing(n, samples[n], numbers[n]) for n in names]
    return Comparison(title, timings, baseline, flops_d, bytes_d)


@dataclass(frozen=True)
class Target:
    """A goal for one kernel, stated as a ratio of two callables measured in the same run: ``fast`` should be
    at least ``at_least`` times as fast as ``peer`` (an ``at_least`` below 1 reads "costs at most 1/at_least of
    the peer's time", e.g. 1/1.2 for "at most 1.2x Adam's step"). ``make bench`` reports hit or miss; nothing
    in ``make test`` asserts it, because a speed-up is a property of a machine, not of the book."""

    fast: str
    peer: str
    at_least: float
    why: str = ""

    def __post_init__(self) -> None:
        if not (isinstance(self.at_least, (int, float)) and self.at_least > 0):
            raise ValueError(f"at_least: expected a positive ratio, received {self.at_least!r}")

    def text(self) -> str:
        """``">= 1.00x faiss IndexFlatIP"`` or ``"<= 1.20x the time of Adam fused"``."""
        if self.at_least >= 1:
            return f">= {self.at_least:.2f}x {self.peer}"
        return f"<= {1 / self.at_least:.2f}x the time of {self.peer}"

    def measured(self, res: "Comparison") -> float:
        """The measured speed-up of ``fast`` over ``peer`` (NaN if either did not run, e.g. no compiler)."""
        names = {t.name for t in res.timings}
        if self.fast not in names or self.peer not in names:
            return float("nan")
        return res.speedup(self.fast, over=self.peer)

    def hit(self, res: "Comparison") -> bool:
        return self.measured(res) >= self.at_least   # NaN compares False: a kernel that did not run misses

    def measured_text(self, res: "Comparison") -> str:
        r = self.measured(res)
        if not math.isfinite(r):
            return "did not run"
        return f"{r:.2f}x" if self.at_least >= 1 else f"{1 / r:.2f}x the time"


@dataclass
class Case:
    """One benchmark of ``make bench``: the arguments of :func:`compare`, and the case's :class:`Target` s."""

    title: str
    fns: Mapping[str, Callable[[], Any]]
    baseline: str | None = None
    flops: float | Mapping[str, float] | None = None
    bytes_moved: float | Mapping[str, float] | None = None
    targets: Sequence[Target] = ()


def run_case(case: Case, *, quick: bool = False, prefix: str = "", repeat: int | None = None) -> Comparison:
    """Time one :class:`Case` with the book's standard settings (few, short rounds when ``quick``;
    ``repeat`` overrides the number of rounds)."""
    return compare(case.fns, baseline=case.baseline, flops=case.flops, bytes_moved=case.bytes_moved,
                   title=prefix + case.title, repeat=repeat or (3 if quick else 15),
                   min_sample_s=0.001 if quick else 0.02)


ROOF_PREFIX = "roof: "


def run_case_with_roofs(case: Case, *, quick: bool = False, prefix: str = "") -> tuple[Comparison, float | None, float | None]:
    """Time a case together with the roofs that apply to it (a matmul if it counts FLOP, a read and a
    triad over as many bytes if it counts bytes), interleaved in the same rounds, so that its fraction of
    peak compares rates measured under the same load. Returns the comparison and the two roofs' rates."""
    from kernels import roofline

    names = list(case.fns)
    flops = _per_name(case.flops, names, "flops")
    bytes_moved = _per_name(case.bytes_moved, names, "bytes_moved")
    roofs = roofline.roof_fns(flops=bool(flops), bytes_moved=max(bytes_moved.values()) if bytes_moved else None,
                              quick=quick)
    fns = dict(case.fns)
    for name, (fn, f, b) in roofs.items():
        fns[ROOF_PREFIX + name] = fn
        if f:
            flops[ROOF_PREFIX + name] = f
        if b:
            bytes_moved[ROOF_PREFIX + name] = b
    res = compare(fns, baseline=case.baseline, flops=flops or None, bytes_moved=bytes_moved or None,
                  title=prefix + case.title, repeat=3 if quick else 15, min_sample_s=0.001 if quick else 0.02)
    peak = max((res.gflops(n) for n in fns if n.startswith(ROOF_PREFIX) and n in res.flops), default=None)
    bw = max((res.gbs(n) for n in fns if n.startswith(ROOF_PREFIX) and n in res.bytes_moved), default=None)
    return res, peak, bw


def discover(only: Sequence[str] = ()) -> list[tuple[str, Callable[[bool], list[Case]]]]:
    """Every ``kernels.<module>.bench_cases`` (module names in ``only``, if given)."""
    import kernels

    found = []
    for info in sorted(pkgutil.iter_modules(kernels.__path__), key=lambda i: i.name):
        if info.name.startswith("_") or (only and info.name not in only):
            continue
        mod = importlib.import_module(f"kernels.{info.name}")
        if callable(getattr(mod, "bench_cases", None)):
            found.append((info.name, mod.bench_cases))
    missing = set(only) - {name for name, _ in found}
    if missing:
        raise ValueError(f"only: no bench_cases in kernels modules {sorted(missing)}")
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kernels.bench", description="The book's kernel benchmark table.")
    parser.add_argument("--quick", action="store_true", help="small sizes and few rounds (used by the tests)")
    parser.add_argument("--only", nargs="*", default=[], help="module names, e.g. roofline")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default="", help="also write the summary table to this JSON file")
    args = parser.parse_args(argv)
    from kernels import repro, roofline

    repro.setup(0, threads=args.threads)
    print(f"machine: {roofline.cpu_info()['summary']}; torch threads: {args.threads}")
    print("each case is timed in the same interleaved rounds as its roofs (rows 'roof: ...'), and its % of "
          "peak is against them\n")
    try:
        from kernels import native

        print(f"compiled kernels: {native.status()}")
        from kernels import allocator

        print(f"CPU memory: {allocator.status()}")
    except ImportError:
        pass
    summary, goals = [], []
    for modname, cases in discover(args.only):
        for case in cases(args.quick):
            res, peak, bw = run_case_with_roofs(case, quick=args.quick, prefix=f"[{modname}] ")
            print(res.table(peak, bw) + "\n")
            for t in res.timings:
                if t.name != res.baseline and not t.name.startswith(ROOF_PREFIX):
                    summary.append([modname, case.title, f"{t.name} vs {res.baseline}", f"{res.speedup(t.name):.2f}x"])
            for goal in case.targets:
                goals.append({"module": modname, "case": case.title, "kernel": goal.fast, "peer": goal.peer,
                              "measured": goal.measured_text(res), "target": goal.text(), "hit": goal.hit(res),
                              "ratio": goal.measured(res), "why": goal.why})
    print(format_table(["kernel", "case", "comparison", "speed-up"], summary))
    if goals:
        print("\ntargets (ratios measured in this run; nothing in make test asserts them)")
        print(format_table(["kernel", "case", "fast", "measured", "target", ""],
                           [[g["module"], g["case"], g["kernel"], g["measured"], g["target"],
                             "hit" if g["hit"] else "MISS"] for g in goals]))
        print(f"{sum(g['hit'] for g in goals)} of {len(goals)} targets hit")
    if args.json:
        import json
        from pathlib import Path

        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"machine": roofline.cpu_info()["summary"], "threads": args.threads,
                                   "cases": [dict(zip(("module", "case", "comparison", "ratio"), row))
                                             for row in summary],
                                   "targets": [{k: (None if k == "ratio" and not math.isfinite(v) else v)
                                                for k, v in g.items()} for g in goals]}, indent=1))
        print(f"(also in {out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
