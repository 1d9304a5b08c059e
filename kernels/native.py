"""The book's native kernels (``kernels/csrc/native.cpp``): single-pass versions of two hot loops that eager
PyTorch runs in several passes, compiled on first use with ``torch.utils.cpp_extension`` and the system C++
compiler, cached in ``_build/native/``.

- :func:`adampp_step`: the Adam++ update (Tao et al., arXiv 2412.19444, Eqs. 3-6 of ``kernels/optim.py``) and the
  next step's distance from x_0 (Eq. 1) in one pass over memory (8 streams of the model size against Adam's 7),
  used by ``AdamPP(impl="native")``;
- :func:`assign_ip`: nearest codeword by inner product (Streaming VQ) with the argmax taken on each score tile
  while it is in cache, used by ``kernels.vq.assign(..., impl="native")``.

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


def _cpu_key() -> str:
    """A short key of this CPU's instruction-set flags: the build uses ``-march=native``, so a build folder
    copied to another kind of CPU must not be reused there."""
    import hashlib
    import platform

    flags = platform.machine()
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
                               extra_cflags=["-O3", "-march=native", "-fopenmp-simd", "-fno-math-errno"],
                               verbose=False)
        _STATUS = "native kernels built"
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
