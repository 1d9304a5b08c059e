"""The book's arithmetic: which SIMD code paths the numeric libraries take, and a fingerprint of the result.

Float results depend on the order of operations, and the libraries under torch and NumPy pick their code
paths at run time from the CPU's instruction sets: an AVX-512 machine and an AVX2 machine sum a vector in a
different order and train a network to different bits. Two things keep ``make test`` exact where it can be
and honest where it cannot:

1. **Pins** (:func:`pins`). On an x86_64 CPU with AVX2, every library that allows it is told to take its AVX2
   path, so that AVX2 and AVX-512 machines compute the same bits:

   ==========================  =============  ==================================================
   variable                    value          library
   ==========================  =============  ==================================================
   ``ATEN_CPU_CAPABILITY``     ``avx2``       torch's own kernels (reductions, softmax, exp, ...)
   ``MKL_CBWR``                ``AVX2``       MKL under torch (matmul); honoured on Intel CPUs only
   ``ONEDNN_MAX_CPU_ISA``      ``AVX2``       oneDNN under torch (GELU, convolution, ...)
   ``OPENBLAS_CORETYPE``       ``Haswell``    OpenBLAS under NumPy, SciPy and faiss
   ``NPY_DISABLE_CPU_FEATURES``  AVX-512 sets  NumPy's own SIMD loops (exp, log, tanh, ...)
   ``FAISS_SIMD_LEVEL``        ``AVX2``       faiss's distance kernels
   ==========================  =============  ==================================================

   plus one thread for OpenMP, MKL and OpenBLAS. A variable already set in the environment is never
   overridden: a reader's own setting wins (and the fingerprint below then tells the harness). The Makefile
   exports :func:`pins` (``python3 -m booktools.arith make``), the root ``conftest.py`` applies them to every
   pytest run, and the kernels that nbval, papermill and ``make execute`` start inherit them.

2. **Fingerprint** (:func:`fingerprint`). A few seconds of computation that touches every path above
   (random draws, matmuls, transcendental functions, reductions, attention, a short training run, NumPy and
   faiss) is hashed bit for bit. ``make execute`` records it in each notebook's metadata; ``make test``
   compares it with this machine's: equal means this machine computes the committed outputs' bits, so nbval
   compares every output; different means it does not, so nbval compares only the cells whose text cannot
   depend on rounding (tagged ``nbval-check-output``) and the Reproduction checks assert every claim.

MKL ignores ``MKL_CBWR`` on AMD CPUs, and vendors round their approximate instructions differently, so an
Intel machine and an AMD machine may still differ: the fingerprint is what decides, never the CPU's name.

This module imports only the standard library at import time (the Makefile calls it with the system
Python before ``.venv`` exists); :func:`fingerprint_parts` imports torch, NumPy and faiss when called.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from typing import Mapping

THREAD_VARS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
AVX2_PINS = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "AVX2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "OPENBLAS_CORETYPE": "Haswell",
    "NPY_DISABLE_CPU_FEATURES": "X86_V4,AVX512_ICL,AVX512_SPR",
    "FAISS_SIMD_LEVEL": "AVX2",
}
METADATA_KEY = "book"  # notebook.metadata["book"]["arith"] holds the fingerprint of the executing machine


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The ISA flags of the first CPU in /proc/cpuinfo (empty where there is no such file)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as fh:
                cpuinfo = fh.read()
        except OSError:
            return set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def pins(environ: Mapping[str, str] | None = None, *, machine: str | None = None,
         flags: set[str] | None = None) -> dict[str, str]:
    """Variables to set for the book's arithmetic: thread counts everywhere, the AVX2 pins on x86_64 with
    AVX2. Variables already present in ``environ`` are left out (the caller's setting wins)."""
    environ = os.environ if environ is None else environ
    machine = platform.machine() if machine is None else machine
    flags = cpu_flags() if flags is None else flags
    wanted = dict(THREAD_VARS)
    if machine in ("x86_64", "AMD64") and "avx2" in flags and "fma" in flags:
        wanted.update(AVX2_PINS)
    return {k: v for k, v in wanted.items() if k not in environ}


def apply(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Set :func:`pins` in ``environ`` (default ``os.environ``); returns what was set.

    Must run before torch, NumPy or faiss is imported in this process to affect it; processes started
    afterwards (notebook kernels) inherit the variables either way.
    """
    environ = os.environ if environ is None else environ
    new = pins(environ)
    environ.update(new)
    return new


def describe_pins(environ: Mapping[str, str] | None = None) -> str:
    """One line: which pin variables are in effect, and which were set by the caller to something else."""
    environ = os.environ if environ is None else environ
    own = [k for k, v in AVX2_PINS.items() if environ.get(k) == v]
    other = [f"{k}={environ[k]}" for k, v in AVX2_PINS.items() if k in environ and environ[k] != v]
    if not own and not other:
        return "no arithmetic pins (not an x86_64 CPU with AVX2)"
    text = f"{len(own)} of {len(AVX2_PINS)} AVX2 pins"
    return text + (f"; set by the caller: {', '.join(other)}" if other else "")


# --- the fingerprint ------------------------------------------------------------------------------------

def _digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(a.tobytes())
    return h.hexdigest()[:12]


def fingerprint_parts() -> dict[str, str]:
    """Hash, bit for bit, short computations that each go through one library path the chapters use.

    Runs in about two seconds at one thread. Each value is the SHA-256 prefix of the results' bytes.
    """
    import numpy as np
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(1)
    t = lambda *ts: _digest(*(x.detach().contiguous().numpy() for x in ts))  # noqa: E731
    parts: dict[str, str] = {}
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(96, 80, generator=g), torch.randn(80, 72, generator=g)
    parts["torch randn"] = t(a, torch.rand(1000, generator=g), torch.randn(4099, generator=g))
    parts["torch matmul (MKL)"] = t(a @ b, torch.addmm(b[0], a, b), (a.double() @ b.double()).float())
    parts["torch elementwise"] = t(torch.exp(a), torch.log1p(a.abs()), torch.tanh(a), torch.erf(a),
                                   torch.sqrt(a.abs()), torch.sigmoid(a), torch.pow(a.abs(), 1.7))
    parts["torch reductions"] = t(torch.randn(100_003, generator=g).sum(), a.mean(1), a.var(1),
                                  torch.softmax(a, -1), torch.logsumexp(a, -1), a.norm())
    q = torch.randn(2, 4, 24, 16, generator=g)
    parts["torch attention"] = t(F.scaled_dot_product_attention(q, q, q, is_causal=True))
    x = torch.randn(64, 32, generator=g, requires_grad=True)
    y = F.layer_norm(F.gelu(x @ a[:32, :48]), (48,))
    y.square().sum().backward()
    parts["torch gelu/layernorm (oneDNN)"] = t(y, x.grad)
    parts["torch conv (oneDNN)"] = t(F.conv1d(torch.randn(2, 8, 50, generator=g), torch.randn(16, 8, 5, generator=g)))
    # a short training run: forward, backward and both Adam paths, where differences compound
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.LayerNorm(64), torch.nn.Linear(64, 1))
    opts = [torch.optim.AdamW(list(net.parameters())[:2], lr=1e-2),
            torch.optim.Adam(list(net.parameters())[2:], lr=1e-2, fused=True)]
    xs, ys = torch.randn(256, 32), torch.randn(256, 1)
    for _ in range(60):
        for o in opts:
            o.zero_grad()
        F.mse_loss(net(xs), ys).backward()
        for o in opts:
            o.step()
    parts["torch training (Adam, AdamW)"] = t(*net.parameters())
    rng = np.random.default_rng(0)
    A, B = rng.standard_normal((96, 80)), rng.standard_normal((80, 72))
    parts["numpy random"] = _digest(A, rng.integers(0, 1000, 100), rng.random(100))
    parts["numpy matmul (OpenBLAS)"] = _digest(A @ B, A.astype(np.float32) @ B.astype(np.float32))
    A32 = A.astype(np.float32)
    parts["numpy elementwise"] = _digest(np.exp(A32), np.log(np.abs(A32) + 1), np.tanh(A32), np.exp(A),
                                         np.float32(rng.standard_normal(10_001)).sum())
    try:
        import faiss
    except ImportError:
        parts["faiss"] = "not installed"
    else:
        xb = rng.standard_normal((1000, 32)).astype(np.float32)
        for name, index in (("faiss L2", faiss.IndexFlatL2(32)), ("faiss IP", faiss.IndexFlatIP(32))):
            index.add(xb)
            d, i = index.search(xb[:50] + np.float32(0.01), 5)
            parts[name] = _digest(d, i)
    return parts


def combine(parts: Mapping[str, str]) -> str:
    """One 12-hex-digit fingerprint from the parts."""
    return hashlib.sha256(json.dumps(dict(sorted(parts.items()))).encode()).hexdigest()[:12]


def fingerprint(python: str | None = None) -> dict:
    """This machine's fingerprint, computed in a fresh process with the current environment:
    ``{"fingerprint": str, "parts": {name: hash}, "torch_capability": str}``.

    A fresh process, because the pins only act on libraries loaded after they are set.
    """
    cmd = [python or sys.executable, "-m", "booktools.arith", "parts"]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=root)
    return json.loads(out.stdout.strip().splitlines()[-1])


def difference(here: Mapping, committed: Mapping | None) -> list[str]:
    """Names of the parts that differ between two fingerprint records (all parts if one is missing)."""
    if not committed:
        return ["no fingerprint recorded"]
    a, b = here.get("parts", {}), committed.get("parts", {})
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def _main(argv: list[str]) -> int:
    cmd = argv[0] if argv else "make"
    if cmd == "make":  # for the Makefile: NAME=VALUE words (values have no spaces)
        print(" ".join(f"{k}={v}" for k, v in pins().items()))
    elif cmd == "env":  # for a shell: export lines
        for k, v in pins().items():
            print(f"export {k}={v}")
    elif cmd == "parts":
        apply()  # a no-op under make, which has exported them already
        import torch

        parts = fingerprint_parts()
        print(json.dumps({"fingerprint": combine(parts), "parts": parts,
                          "torch_capability": torch.backends.cpu.get_cpu_capability()}))
    elif cmd == "show":
        fp = fingerprint()
        print(f"arithmetic fingerprint {fp['fingerprint']} (torch kernels: {fp['torch_capability']}; "
              f"{describe_pins()})")
        for k, v in fp["parts"].items():
            print(f"  {k:32s} {v}")
    else:
        print("usage: python -m booktools.arith [make|env|parts|show]", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
