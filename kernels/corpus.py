"""An offline English corpus built from text that ships with CPython, for the language chapters.

Used first by the Over-Tokenized Transformer chapter (Huang et al., arXiv 2501.16975), whose base
vocabulary here is UTF-8 bytes (V = 256). Nothing is downloaded: the text is

1. the pydoc topic help (``pydoc_data.topics``), topics in sorted order, then
2. the docstrings (``ast.get_docstring``) of the standard library's modules, classes and functions, in
   sorted path order, skipping test suites and IDLE, keeping docstrings of at least ``min_chars``
   characters,

joined by blank lines. The result is deterministic for a given Python version (the text differs between
versions, so chapters print its SHA-256 and never assert on exact values).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import sysconfig
import warnings
from pathlib import Path

import torch

SKIP_PARTS = ("test", "tests", "idlelib", "site-packages", "dist-packages", "lib2to3", "__pycache__")


def _docstrings(path: Path, min_chars: int) -> list[str]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escape sequences in old stdlib files
            tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return []
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc and len(doc) >= min_chars:
                out.append(doc)
    return out


@functools.lru_cache(maxsize=4)
def stdlib_text(min_chars: int = 40, include_docstrings: bool = True) -> str:
    """The corpus as one string (cached per process; building it takes a few seconds)."""
    if isinstance(min_chars, bool) or not isinstance(min_chars, int) or min_chars < 0:
        raise ValueError(f"min_chars: expected an int >= 0, received {min_chars!r}")
    from pydoc_data.topics import topics

    parts = [topics[k].strip() for k in sorted(topics)]
    if include_docstrings:
        root = Path(sysconfig.get_paths()["stdlib"])
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(root).parts
            if any(p in SKIP_PARTS or p.startswith("test_") for p in rel):
                continue
            parts.extend(_docstrings(path, min_chars))
    text = "\n\n".join(p for p in parts if p)
    return text.replace("\x00", "")  # byte 0 is the n-gram padding id; it never occurs in this text anyway


def to_bytes(text: str) -> torch.Tensor:
    """UTF-8 bytes of ``text`` as an int64 tensor of ids in [0, 256)."""
    if not isinstance(text, str):
        raise ValueError(f"text: expected str, received {type(text).__name__}")
    return torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8).to(torch.int64)


def sha256(text: str) -> str:
    """SHA-256 of the UTF-8 text, for printing next to the corpus size."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def split(ids: torch.Tensor, train_fraction: float = 0.9) -> tuple[torch.Tensor, torch.Tensor]:
    """Contiguous train/validation split: the first ``train_fraction`` of the stream, then the rest."""
    if ids.ndim != 1:
        raise ValueError(f"ids: expected a 1-D tensor, received shape {tuple(ids.shape)}")
    if not 0 < train_fraction < 1:
        raise ValueError(f"train_fraction: expected 0 < train_fraction < 1, received {train_fraction!r}")
    cut = int(len(ids) * train_fraction)
    return ids[:cut], ids[cut:]


def windows(ids: torch.Tensor, batch: int, length: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A random batch of next-token windows: inputs ids[s:s+length] and targets ids[s+1:s+length+1]."""
    if ids.ndim != 1 or len(ids) <= length + 1:
        raise ValueError(f"ids: expected a 1-D tensor longer than length + 1 = {length + 1}, "
                         f"received shape {tuple(ids.shape)}")
    if batch < 1 or length < 1:
        raise ValueError(f"batch, length: expected >= 1, received {batch}, {length}")
    starts = torch.randint(0, len(ids) - length - 1, (batch,), generator=generator)
    offsets = torch.arange(length + 1)
    chunk = ids[starts[:, None] + offsets]
    return chunk[:, :-1], chunk[:, 1:]
