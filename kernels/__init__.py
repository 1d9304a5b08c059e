"""Shared, tested kernels for the book's chapters.

One module per computational idea (not per chapter). Every public function validates its input and
raises ``ValueError`` naming the argument; every module has a twin ``tests/kernels/test_<idea>.py``
that checks it against a slow, obvious reference. Import what you need explicitly, e.g.
``from kernels import repro`` or ``from kernels.bench import compare``.
"""

from kernels import allocator as _allocator

_allocator.enable_huge_pages()   # before torch is imported: large CPU tensors in 2 MiB pages (kernels/allocator.py)

__all__ = ["bench", "repro", "roofline"]
