"""Large CPU tensors in 2 MiB pages: PyTorch's transparent-huge-page switch, turned on before torch allocates.

Not a paper's method, but what decides the speed of a dense embedding-table gradient (the Over-Tokenized
Transformer, arXiv 2501.16975, Eq. 5 of ``kernels/ngram.py``: one table of ``sum(moduli)`` rows whose dense
gradient is allocated, zeroed and freed at every step).

PyTorch allocates CPU tensors with ``posix_memalign``. glibc serves a block above its mmap threshold (at most
32 MiB) with a fresh ``mmap`` and unmaps it on ``free``; a smaller aligned block often does not fit the hole a
freed one left either, and the heap grows. Either way a tensor allocated at every step is new memory at every
step, and the operating system maps and zeroes each 4 KiB page at its first write: one page fault per page,
16,384 for a 64 MiB gradient. Measured on this book's 2-core machine, the 67 MB dense gradient of the
Over-Tokenized chapter's largest table took 31 ms to allocate and zero, against 7.7 ms with the switch below, and
the fused Over-Encoding step was 2.4x slower than the Appendix-A one with G separate tables, though it moves the
same bytes.

With ``THP_MEM_ALLOC_ENABLE=1`` (read once, at torch's first CPU allocation; ``c10/core/alloc_cpu.cpp``) torch
aligns every allocation of 2 MiB or more to 2 MiB and asks for transparent huge pages (``madvise(MADV_HUGEPAGE)``),
so a 64 MiB block faults 32 times instead of 16,384. Values, shapes and strides do not change, only where the bytes
live. Importing ``kernels`` calls :func:`enable_huge_pages` before torch is imported, so every chapter and
``make bench`` run under it; where the kernel has huge pages off (``/sys/kernel/mm/transparent_hugepage/enabled``
set to ``never``) or the system is not Linux, nothing changes and :func:`status` says so.
"""

from __future__ import annotations

import os
import sys

VARIABLE = "THP_MEM_ALLOC_ENABLE"
THP_SETTING = "/sys/kernel/mm/transparent_hugepage/enabled"


def kernel_setting() -> str | None:
    """The kernel's transparent-huge-page mode ("always", "madvise" or "never"), None where it cannot be read."""
    try:
        with open(THP_SETTING, encoding="ascii") as fh:
            text = fh.read()
    except OSError:
        return None
    return text[text.index("[") + 1:text.index("]")] if "[" in text else None


_PRESET = os.environ.get(VARIABLE)           # the reader's own setting, read when kernels is first imported
_TORCH_FIRST = "torch" in sys.modules          # torch reads the variable once, at its first CPU allocation


def enable_huge_pages() -> bool:
    """Set ``THP_MEM_ALLOC_ENABLE=1`` unless the environment already sets it (a reader's "0" wins) or torch was
    imported first (too late to matter); returns :func:`in_effect`."""
    if _PRESET is None and not _TORCH_FIRST:
        os.environ[VARIABLE] = "1"
    return in_effect()


def in_effect() -> bool:
    """Whether this process's torch allocates large blocks in huge pages."""
    return (os.environ.get(VARIABLE) == "1" and kernel_setting() in ("always", "madvise")
            and (_PRESET == "1" or not _TORCH_FIRST))


def status() -> str:
    """One line for logs and benchmark headers."""
    mode = kernel_setting()
    if in_effect():
        return f"2 MiB pages for blocks of 2 MiB or more ({VARIABLE}=1, kernel mode {mode})"
    if _PRESET is None and _TORCH_FIRST:
        return f"4 KiB pages (torch was imported before kernels could set {VARIABLE})"
    if os.environ.get(VARIABLE, _PRESET) != "1":
        return f"4 KiB pages ({VARIABLE} is not 1)"
    if mode not in ("always", "madvise"):
        return f"4 KiB pages (the kernel's transparent huge pages are {mode or 'unavailable'})"
    return f"4 KiB pages (torch was imported before kernels; {VARIABLE} came too late)"
