"""kernels.corpus: the offline corpus is deterministic, English, byte-tokenisable; the batching helpers."""

import pytest
import torch

from kernels import corpus


def test_topics_only_corpus_is_deterministic_and_has_no_zero_byte():
    a = corpus.stdlib_text(include_docstrings=False)
    corpus.stdlib_text.cache_clear()
    b = corpus.stdlib_text(include_docstrings=False)
    assert a == b and len(a) > 100_000 and "statement" in a
    ids = corpus.to_bytes(a)
    assert ids.dtype == torch.int64 and int(ids.min()) > 0 and int(ids.max()) < 256
    assert corpus.sha256(a) == corpus.sha256(b) and len(corpus.sha256(a)) == 64


def test_split_is_contiguous_and_windows_are_shifted_by_one():
    ids = torch.arange(1000)
    tr, va = corpus.split(ids, 0.9)
    assert tr.tolist() == list(range(900)) and va.tolist() == list(range(900, 1000))
    x, y = corpus.windows(ids, 4, 16, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4, 16) and torch.equal(y[:, :-1], x[:, 1:]) and torch.equal(y[:, 0], x[:, 0] + 1)


@pytest.mark.parametrize("call, match", [
    (lambda: corpus.stdlib_text(min_chars=-1), "min_chars"),
    (lambda: corpus.to_bytes(b"bytes"), "text"),
    (lambda: corpus.split(torch.zeros(2, 2)), "ids"),
    (lambda: corpus.split(torch.zeros(10), 1.0), "train_fraction"),
    (lambda: corpus.windows(torch.zeros(5, dtype=torch.int64), 2, 8, torch.Generator()), "ids"),
])
def test_bad_input_names_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()
