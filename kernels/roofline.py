"""Measuring a CPU's limits for the roofline model (Williams, Waterman & Patterson, "Roofline: an
insightful visual performance model for multicore architectures", CACM 52(4), 2009).

The model bounds the throughput of a kernel with arithmetic intensity I (FLOP per byte of memory
traffic) by

    attainable(I) = min(P_peak, I * B_mem)                                              (Eq. 1)

where P_peak is the peak compute rate and B_mem the sustainable memory bandwidth. The book measures
both on the machine it runs on, plus the fixed cost of one small eager torch op (the "overhead roof" that
dominates tiny tensors), and every kernel spotlight quotes its result as a fraction of these limits.

- compute: fp32 matmul C = A B of n x n matrices, 2 n^3 FLOP;                              (Eq. 2)
- bandwidth, STREAM-style: copy  b <- a       moves 2 * 4N bytes,                           (Eq. 3)
                           triad a <- b + s c moves 3 * 4N bytes and does 2N FLOP;          (Eq. 4)
  (write-allocate traffic is not counted, as in STREAM);
- overhead: median wall time of ``x + y`` on 8-element tensors.

Timing uses :func:`kernels.bench.compare` (warm-up, calibrated repeats, median).
"""

from __future__ import annotations

import contextlib
import os
import platform
from typing import Any, Iterator

import torch

from kernels._validate import check_int
from kernels.bench import Case, compare

STREAM_KINDS = ("copy", "triad")


@contextlib.contextmanager
def threads(n: int) -> Iterator[None]:
    """Run a block with torch's intra-op thread count set to ``n``, then restore it."""
    check_int("n", n, 1)
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _cpuinfo_text() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            return fh.read()
    except OSError:
        return ""


def flops_per_cycle_bound(flags: set[str], machine: str) -> tuple[int | None, str]:
    """Upper bound on fp32 FLOP per cycle per core from the instruction set the CPU reports.

    The bound assumes the widest FMA hardware any core with that ISA has: two FMA pipes of the full
    vector width (an FMA counts as 2 FLOP). Cores that split wide vectors (e.g. AMD Zen 4 runs AVX-512
    as 2 x 256 bit) or have one FMA pipe reach half of it.
    """
    if machine in ("x86_64", "AMD64", "i686"):
        if "avx512f" in flags:
            return 64, "AVX-512: 2 FMA pipes x 16 fp32 lanes x 2 FLOP"
        if "avx2" in flags and "fma" in flags:
            return 32, "AVX2+FMA: 2 FMA pipes x 8 fp32 lanes x 2 FLOP"
        if "avx" in flags:
            return 16, "AVX: 1 add + 1 mul pipe x 8 fp32 lanes"
        return 8, "SSE: 1 add + 1 mul pipe x 4 fp32 lanes"
    if machine in ("aarch64", "arm64"):
        return 32, "Arm NEON/SVE-256: up to 4 x 128-bit FMA pipes x 4 lanes x 2 FLOP"
    return None, f"unknown machine {machine!r}"


def cache_sizes() -> dict[str, int]:
    """Data/unified cache sizes in bytes seen by core 0, e.g. {"L1d": 32768, "L2": 1048576, "L3": ...}."""
    out: dict[str, int] = {}
    base = "/sys/devices/system/cpu/cpu0/cache"
    for i in range(8):
        try:
            with open(f"{base}/index{i}/level", encoding="utf-8") as fh:
                level = fh.read().strip()
            with open(f"{base}/index{i}/type", encoding="utf-8") as fh:
                kind = fh.read().strip()
            with open(f"{base}/index{i}/size", encoding="utf-8") as fh:
                size = fh.read().strip()
        except OSError:
            continue
        if kind == "Instruction":
            continue
        mult = {"K": 1024, "M": 1024**2, "G": 1024**3}.get(size[-1:], 1)
        out[f"L{level}{'d' if kind == 'Data' else ''}"] = int(size.rstrip("KMG")) * mult
    return out


def cpu_info() -> dict[str, Any]:
    """What the CPU reports: usable cores, model, ISA flags, nominal clock, and the theoretical peak.

    The clock is the one the OS reports (cpufreq's maximum where it exists, else /proc/cpuinfo's
    'cpu MHz'); under a hypervisor that is often the base clock, and boost clocks run higher.
    """
    text = _cpuinfo_text()
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if ":" in line:
            key, _, val = line.partition(":")
            fields.setdefault(key.strip(), val.strip())
    flags = set(fields.get("flags", fields.get("Features", "")).split())
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    mhz = None
    try:
        with open("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq", encoding="utf-8") as fh:
            mhz, clock_source = int(fh.read().strip()) / 1000.0, "cpufreq max"
    except (OSError, ValueError):
        if "cpu MHz" in fields:
            mhz, clock_source = float(fields["cpu MHz"]), "reported (/proc/cpuinfo)"
        else:
            clock_source = "unknown"
    machine = platform.machine()
    fpc, fpc_why = flops_per_cycle_bound(flags, machine)
    model = fields.get("model name", machine)
    peak = theoretical_peak_gflops(1, mhz / 1000.0, fpc) if (mhz and fpc) else None
    return {
        "model": model,
        "vendor": fields.get("vendor_id", ""),
        "machine": machine,
        "cores": cores,
        "mhz": mhz,
        "clock_source": clock_source,
        "isa": torch.backends.cpu.get_cpu_capability(),
        "flags": flags,
        "flops_per_cycle": fpc,
        "flops_per_cycle_why": fpc_why,
        "peak_gflops_per_core": peak,
        "caches": cache_sizes(),
        "summary": f"{model}, {cores} cores, torch ISA {torch.backends.cpu.get_cpu_capability()}",
    }


def theoretical_peak_gflops(cores: int, ghz: float, flops_per_cycle: float) -> float:
    """P_peak = cores x clock x FLOP/cycle, in GFLOP/s."""
    check_int("cores", cores, 1)
    for name, v in (("ghz", ghz), ("flops_per_cycle", flops_per_cycle)):
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not v > 0:
            raise ValueError(f"{name}: expected a positive number, received {v!r}")
    return cores * ghz * flops_per_cycle


def attainable_gflops(intensity: float, peak_gflops: float, mem_bw_gbs: float) -> float:
    """Eq. 1: min(P_peak, I * B_mem) for arithmetic intensity ``intensity`` in FLOP/byte."""
    for name, v in (("intensity", intensity), ("peak_gflops", peak_gflops), ("mem_bw_gbs", mem_bw_gbs)):
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not v > 0:
            raise ValueError(f"{name}: expected a positive number, received {v!r}")
    return min(peak_gflops, intensity * mem_bw_gbs)


def matmul_flops(n: int) -> float:
    """Eq. 2: FLOP of an n x n by n x n matmul."""
    return 2.0 * check_int("n", n, 1) ** 3


def matmul_intensity(n: int) -> float:
    """FLOP per byte of an fp32 n x n matmul if each matrix crosses memory once: 2n^3 / (3 * 4n^2)."""
    return matmul_flops(n) / (3 * 4.0 * n * n)


def stream_bytes(kind: str, n: int) -> float:
    """Eqs. 3-4: bytes moved by one STREAM ``kind`` over fp32 arrays of ``n`` elements."""
    check_int("n", n, 1)
    if kind not in STREAM_KINDS:
        raise ValueError(f"kind: expected one of {STREAM_KINDS}, received {kind!r}")
    return {"copy": 2, "triad": 3}[kind] * 4.0 * n


def matmul_gflops(n: int, *, repeat: int = 7, min_sample_s: float = 0.02) -> float:
    """Median fp32 GFLOP/s of ``A @ B`` for n x n matrices at torch's current thread count."""
    check_int("n", n, 1)
    a, b = torch.randn(n, n), torch.randn(n, n)
    c = torch.empty(n, n)
    res = compare({"matmul": lambda: torch.mm(a, b, out=c)}, repeat=repeat, min_sample_s=min_sample_s)
    return matmul_flops(n) / res["matmul"].median / 1e9


def stream_gbs(kind: str, n: int, *, repeat: int = 7, min_sample_s: float = 0.02) -> float:
    """Median GB/s of STREAM ``kind`` ("copy" or "triad") over fp32 arrays of ``n`` elements."""
    nbytes = stream_bytes(kind, n)
    a, b, c = torch.rand(n), torch.rand(n), torch.rand(n)
    fn = (lambda: b.copy_(a)) if kind == "copy" else (lambda: torch.add(b, c, alpha=3.0, out=a))
    res = compare({kind: fn}, repeat=repeat, min_sample_s=min_sample_s)
    return nbytes / res[kind].median / 1e9


def op_overhead_us(*, size: int = 8, repeat: int = 7, min_sample_s: float = 0.02) -> float:
    """Median microseconds of one small eager op ``x + y`` (allocating its result) on ``size`` floats."""
    check_int("size", size, 1)
    x, y = torch.rand(size), torch.rand(size)
    res = compare({"add": lambda: x + y}, repeat=repeat, min_sample_s=min_sample_s)
    return res["add"].median * 1e6


def quick_limits(*, quick: bool = False) -> dict[str, float]:
    """A ~1 s probe of the three limits at the current thread count, for kernel spotlights.

    The roofline appendix measures the same quantities over full sweeps; this probe uses one
    compute-bound size (n = 1024) and one DRAM-bound size (3 arrays of 64 MiB), so its values sit
    within a few percent of the appendix's on an idle machine.
    """
    n_mm, n_stream, rep = (256, 2**20, 3) if quick else (1024, 2**24, 5)
    return {
        "peak_gflops": matmul_gflops(n_mm, repeat=rep),
        "mem_bw_gbs": stream_gbs("triad", n_stream, repeat=rep),
        "op_overhead_us": op_overhead_us(repeat=rep),
    }


def roof_fns(*, flops: bool, bytes_moved: float | None, quick: bool = False) -> dict[str, tuple]:
    """The roofs a benchmark case is measured against, as callables to time beside it:
    ``{name: (fn, flops per call or None, bytes per call or None)}``.

    A case that counts FLOP gets an fp32 matmul (n = 1024, or 256 when ``quick``); a case that counts bytes
    gets a read (``x.sum()``, 4 bytes per element) and a triad (Eq. 4) over as many bytes as it moves, so
    that both sit at the same level of the memory hierarchy as the case.
    """
    out: dict[str, tuple] = {}
    if flops:
        n = 256 if quick else 1024
        a, b = torch.randn(n, n), torch.randn(n, n)
        c = torch.empty(n, n)
        out[f"fp32 matmul n={n}"] = (lambda: torch.mm(a, b, out=c), matmul_flops(n), None)
    if bytes_moved:
        n = max(1024, int(bytes_moved // 12))
        x, y, z = torch.rand(n), torch.rand(n), torch.rand(n)
        r = torch.rand(max(1024, int(bytes_moved // 4)))
        out[f"read {r.numel()} floats"] = (lambda: r.sum(), None, 4.0 * r.numel())
        out[f"triad {n} floats"] = (lambda: torch.add(y, z, alpha=3.0, out=x), None, stream_bytes("triad", n))
    return out


def bench_cases(quick: bool = False) -> list[Case]:
    """``make bench``: torch against NumPy, the peer a reader would reach for, on each roof."""
    import numpy as np

    g = torch.Generator().manual_seed(0)                    # own draws: the global random state is left alone
    n = 256 if quick else 1024
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    an, bn = a.numpy(), b.numpy()
    m = 2**18 if quick else 2**24
    x, y, z = (torch.rand(m, generator=g) for _ in range(3))
    xn, yn, zn = x.numpy(), y.numpy(), z.numpy()
    tmp = np.empty_like(xn)
    s, t = torch.rand(8, generator=g), torch.rand(8, generator=g)
    sn, tn = s.numpy(), t.numpy()

    def numpy_triad() -> None:
        np.multiply(zn, 3.0, out=tmp)
        np.add(yn, tmp, out=xn)

    return [
        Case(f"fp32 matmul n={n} (compute roof)",
             {"numpy": lambda: an @ bn, "torch": lambda: a @ b}, flops=matmul_flops(n)),
        Case(f"triad over {m} floats (bandwidth roof)",
             {"numpy": numpy_triad, "torch": lambda: torch.add(y, z, alpha=3.0, out=x)},
             bytes_moved=stream_bytes("triad", m)),
        Case("x + y on 8 floats (overhead roof)", {"numpy": lambda: sn + tn, "torch": lambda: s + t}),
    ]
