"""kernels.corpus: the committed snapshot is the same for every reader (checked by SHA-256), English,
byte-tokenisable, and what the builder makes from the Python it was built with; the batching helpers."""

import gzip
import sys

import pytest
import torch

from kernels import corpus


def test_snapshot_matches_its_manifest_and_has_no_zero_byte():
    meta = corpus.manifest()
    corpus.stdlib_text.cache_clear()
    full, topics = corpus.stdlib_text(), corpus.stdlib_text(include_docstrings=False)
    assert len(full) == meta["chars"] and corpus.sha256(full) == meta["sha256"]
    assert full.startswith(topics) and len(topics) == meta["topics_chars"] and "statement" in topics
    ids = corpus.to_bytes(full)
    assert ids.dtype == torch.int64 and int(ids.min()) > 0 and int(ids.max()) < 256
    assert len(corpus.sha256(full)) == 64


def test_a_damaged_snapshot_is_refused(tmp_path, monkeypatch):
    bad = tmp_path / "bad.txt.gz"
    bad.write_bytes(gzip.compress(b"not the corpus"))
    monkeypatch.setattr(corpus, "SNAPSHOT", bad)
    corpus.stdlib_text.cache_clear()
    try:
        with pytest.raises(ValueError, match="SHA-256"):
            corpus.stdlib_text()
    finally:
        corpus.stdlib_text.cache_clear()


def test_the_builder_reproduces_the_snapshot_on_its_python():
    meta = corpus.manifest()
    if sys.version.split()[0] != meta["python"]:
        pytest.skip(f"the snapshot was built with Python {meta['python']}; this is {sys.version.split()[0]}")
    assert corpus.sha256(corpus.build_stdlib_text(include_docstrings=False)) == corpus.sha256(
        corpus.stdlib_text(include_docstrings=False))


def test_split_is_contiguous_and_windows_are_shifted_by_one():
    ids = torch.arange(1000)
    tr, va = corpus.split(ids, 0.9)
    assert tr.tolist() == list(range(900)) and va.tolist() == list(range(900, 1000))
    x, y = corpus.windows(ids, 4, 16, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4, 16) and torch.equal(y[:, :-1], x[:, 1:]) and torch.equal(y[:, 0], x[:, 0] + 1)


@pytest.mark.parametrize("call, match", [
    (lambda: corpus.build_stdlib_text(min_chars=-1), "min_chars"),
    (lambda: corpus.stdlib_text(include_docstrings="yes"), "include_docstrings"),
    (lambda: corpus.to_bytes(b"bytes"), "text"),
    (lambda: corpus.split(torch.zeros(2, 2)), "ids"),
    (lambda: corpus.split(torch.zeros(10), 1.0), "train_fraction"),
    (lambda: corpus.windows(torch.zeros(5, dtype=torch.int64), 2, 8, torch.Generator()), "ids"),
])
def test_bad_input_names_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()
