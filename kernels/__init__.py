"""Shared, tested kernels for the book's chapters.

One module per computational idea (not per chapter). Every public function validates its input and
raises ``ValueError`` naming the argument; every module has a twin ``tests/kernels/test_<idea>.py``
that checks it against a slow, obvious reference. Import what you need explicitly, e.g.
``from kernels import repro`` or ``from kernels.bench import compare``.
"""

__all__ = ["bench", "repro", "roofline"]
