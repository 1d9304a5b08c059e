"""An offline English corpus built from text that ships with CPython, for the language chapters.

Used first by the Over-Tokenized Transformer chapter (Huang et al., arXiv 2501.16975), whose base
vocabulary here is UTF-8 bytes (V = 256). Nothing is downloaded: the text is

1. the pydoc topic help (``pydoc_data.topics``), topics in sorted order, then
2. the docstrings (``ast.get_docstring``) of the standard library's modules, classes and functions, in
   sorted path order, skipping test suites and IDLE, keeping docstrings of at least ``min_chars``
   characters,

joined by blank lines. Built from a running interpreter (:func:`build_stdlib_text`) the text depends on the
Python version (3.10, 3.11, 3.12 and 3.13 give four different texts), so every reader instead gets the same
**snapshot**: built once from CPython 3.11.7 with ``python -m kernels.corpus build``, committed compressed as
``kernels/data/stdlib_corpus.txt.gz``, and checked against the SHA-256 in ``stdlib_corpus.json`` each time it
is loaded (:func:`stdlib_text`). The text is CPython's documentation, under the PSF license.
"""

from __future__ import annotations

import ast
import functools
import gzip
import hashlib
import json
import sys
import sysconfig
import warnings
from pathlib import Path

import numpy as np
import torch

DATA = Path(__file__).resolve().parent / "data"
SNAPSHOT = DATA / "stdlib_corpus.txt.gz"
MANIFEST = DATA / "stdlib_corpus.json"

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


def build_stdlib_text(min_chars: int = 40, include_docstrings: bool = True) -> str:
    """The corpus built from the running interpreter's own documentation (takes a few seconds).

    Depends on the Python version; chapters use the committed snapshot, :func:`stdlib_text`.
    """
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


def manifest() -> dict:
    """What the snapshot is: the Python it was built from, its length and SHA-256, and where the pydoc
    topics end (the smoke scale trains on the topics alone)."""
    return json.loads(MANIFEST.read_text(encoding="utf-8"))


@functools.lru_cache(maxsize=2)
def stdlib_text(include_docstrings: bool = True) -> str:
    """The corpus as one string, from the committed snapshot: the same text for every reader and every
    Python version. Raises ``ValueError`` if the snapshot does not match its recorded SHA-256."""
    if not isinstance(include_docstrings, bool):
        raise ValueError(f"include_docstrings: expected a bool, received {include_docstrings!r}")
    meta = manifest()
    text = gzip.decompress(SNAPSHOT.read_bytes()).decode("utf-8")
    if sha256(text) != meta["sha256"]:
        raise ValueError(f"{SNAPSHOT.name}: expected SHA-256 {meta['sha256'][:16]}..., received "
                         f"{sha256(text)[:16]}...; the snapshot is damaged (rebuild: python -m kernels.corpus build)")
    return text if include_docstrings else text[:meta["topics_chars"]]


def build_snapshot() -> dict:
    """Write the snapshot and its manifest from the running interpreter (run once, then commit both)."""
    text = build_stdlib_text()
    topics = build_stdlib_text(include_docstrings=False)
    if not text.startswith(topics):
        raise AssertionError("the topics must be a prefix of the full corpus")
    DATA.mkdir(exist_ok=True)
    SNAPSHOT.write_bytes(gzip.compress(text.encode("utf-8"), compresslevel=9, mtime=0))
    meta = {"python": sys.version.split()[0], "chars": len(text), "topics_chars": len(topics),
            "sha256": sha256(text), "min_chars": 40, "license": "CPython documentation, PSF License"}
    MANIFEST.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return meta


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


def markov2_source(vocab: int, length: int, seed: int, alpha: float = 0.1) -> tuple[torch.Tensor, np.ndarray]:
    """A stream with known order-2 structure: every context (a, b) of two symbols gets its own next-symbol
    distribution drawn from a Dirichlet(alpha) (small alpha: peaked, so the context matters). Returns the int64
    stream of ``length`` symbols and the table P[a, b, next] (whose conditional entropy is the loss floor)."""
    if isinstance(vocab, bool) or not isinstance(vocab, int) or vocab < 2:
        raise ValueError(f"vocab: expected an int >= 2, received {vocab!r}")
    if isinstance(length, bool) or not isinstance(length, int) or length < 3:
        raise ValueError(f"length: expected an int >= 3, received {length!r}")
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.full(vocab, alpha), size=(vocab, vocab))       # P(next | a, b)
    cdf = probs.cumsum(-1)
    seq = np.zeros(length, dtype=np.int64)
    seq[:2] = rng.integers(0, vocab, 2)
    u = rng.random(length)
    for t in range(2, length):
        seq[t] = min(int(np.searchsorted(cdf[seq[t - 2], seq[t - 1]], u[t])), vocab - 1)
    return torch.from_numpy(seq), probs


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


if __name__ == "__main__":
    if sys.argv[1:] != ["build"]:
        raise SystemExit("usage: python -m kernels.corpus build   (rewrites the committed snapshot)")
    print(build_snapshot())
