"""The book's native kernels (``kernels/csrc/native.cpp``): single-pass versions of two hot loops that eager
PyTorch runs in several passes, compiled on first use with ``torch.utils.cpp_extension`` and the system C++
compiler, cached in ``_build/native/``.

- :func:`adampp_step`: the Adam++ update (Tao et al., arXiv 2412.19444, Eqs. 3-6 of ``kernels/optim.py``) and the
  next step's distance from x_0 (Eq. 1) in one pass over memory (8 streams of the model size against Adam's 7),
  used by ``AdamPP(impl="native")``;
- :func:`assign`: nearest codeword by largest score x.e_k + bias_k (Streaming VQ) with the running argmax taken in
  registers (small codebooks on AVX-512, no GEMM) or on each GEMM score tile while it is in cache, used by
  ``kernels.vq.nearest_codeword(..., impl="native")``.

Where no compiler is available, or the build fails, :func:`available` is False, :func:`status` says why in one
line, and callers keep their eager paths. The eager paths stay the tests' oracles, and the chapters compute with
them, so that committed outputs do not depend on whether a compiler was there.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

try:
    import fcntl
except ImportError:  # not a POSIX system: no OS lock, torch's own lock file only
    fcntl = None

_MODULE = None
_STATUS = "not built yet"
SOURCE = Path(__file__).resolve().parent / "csrc" / "native.cpp"


def isa_flags() -> list[str]:
    """Compiler flags that hold the build to the instruction set the process's libraries are pinned to.

    ``make`` pins torch, MKL, oneDNN, OpenBLAS, NumPy and faiss to AVX2 on x86_64 (``booktools/arith.py``,
    ``ATEN_CPU_CAPABILITY=avx2``) so that the chapters' arithmetic is the same on AVX2 and AVX-512 machines. A
    native kernel built with ``-march=native`` alone would then use AVX-512 registers its peers are not allowed, and
    a benchmark would compare instruction sets instead of algorithms; so the build follows the pin
    (``-mno-avx512f``; ``default``: no AVX at all). Unpinned, every library and the native kernels use all the CPU
    has."""
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64"):
        return []
    return {"avx2": ["-mno-avx512f"], "default": ["-mno-avx"]}.get(
        os.environ.get("ATEN_CPU_CAPABILITY", "").lower(), [])


def _cpu_key() -> str:
    """A short key of this CPU's instruction-set flags and :func:`isa_flags`: the build uses ``-march=native``, so a
    build folder copied to another kind of CPU, or built under another pin, must not be reused."""
    import hashlib
    import platform

    flags = platform.machine() + " ".join(isa_flags())
    try:
        with open("/proc/cpuinfo") as f:
            flags += next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        flags += platform.processor()
    return hashlib.sha1(flags.encode()).hexdigest()[:10]


def _build_dir() -> Path:
    root = Path(__file__).resolve().parent.parent
    path = Path(os.environ.get("BOOK_NATIVE_DIR", root / "_build" / "native")) / _cpu_key()
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def _exclusive(build: Path):
    """Hold an OS lock on the build folder while building or loading.

    ``torch.utils.cpp_extension`` guards a build with a plain ``lock`` file that it deletes when the build ends;
    a build that is killed (Ctrl-C, a timeout, a closed laptop) leaves that file behind, and every later import
    then waits for it forever. An ``flock`` dies with its process, so whoever holds it knows that no other
    process of the book is building here and may remove a leftover ``lock`` file first."""
    if fcntl is None:
        yield
        return
    with open(build / "book.flock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            (build / "lock").unlink(missing_ok=True)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def load():
    """The compiled module, or None (with :func:`status` saying why). Builds once per machine and source."""
    global _MODULE, _STATUS
    if _MODULE is not None or _STATUS not in ("not built yet",):
        return _MODULE
    if os.environ.get("BOOK_NATIVE", "1") == "0":
        _STATUS = "native kernels off (BOOK_NATIVE=0): eager paths"
        return None
    if shutil.which(os.environ.get("CXX", "c++")) is None and shutil.which("g++") is None:
        _STATUS = "no C++ compiler found: the native kernels fall back to their eager paths"
        return None
    try:
        from torch.utils.cpp_extension import load as cpp_load

        build = _build_dir()
        with _exclusive(build):
            _MODULE = cpp_load(name="book_native", sources=[str(SOURCE)], build_directory=str(build),
                               extra_cflags=["-O3", "-march=native", *isa_flags(), "-fopenmp-simd",
                                             "-fno-math-errno"],
                               verbose=False)
        held = isa_flags()
        _STATUS = "native kernels built" + (f" (-march=native {' '.join(held)}: held to the libraries' "
                                            f"{os.environ['ATEN_CPU_CAPABILITY']} pin)" if held else "")
    except Exception as exc:  # a broken toolchain must not break the book
        _STATUS = f"native kernels could not be built ({type(exc).__name__}): eager paths"
        _MODULE = None
    return _MODULE


def available() -> bool:
    return load() is not None


def status() -> str:
    """One line: built, or why not."""
    load()
    return _STATUS


def adampp_step(*args, **kwargs) -> float:
    mod = load()
    if mod is None:
        raise RuntimeError(status())
    return mod.adampp_step(*args, **kwargs)


def assign(*args, **kwargs):
    mod = load()
    if mod is None:
        raise RuntimeError(status())
    return mod.assign(*args, **kwargs)


if __name__ == "__main__":  # `make native`: build once, print one line either way
    import time

    started = time.perf_counter()
    line = status()
    print(f"{line} ({time.perf_counter() - started:.1f} s)" if available() else line)
