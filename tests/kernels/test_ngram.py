"""kernels.ngram: hashed n-gram ids against exact integers, the fused embedding against Appendix A."""

import pytest
import torch

from kernels import ngram


@pytest.mark.parametrize("vocab, n, k, m", [(256, 2, 1, 1021), (256, 3, 2, 4093), (64, 4, 3, 97), (100_278, 5, 2, 12_800_001)])
def test_ids_equal_exact_integer_reference(vocab, n, k, m):
    g = torch.Generator().manual_seed(n * k)
    tokens = torch.randint(0, vocab, (3, 17), generator=g)
    moduli = ngram.ngram_moduli(m, n, k)
    assert torch.equal(ngram.ngram_ids(tokens, vocab, n, k, moduli), ngram.ngram_ids_reference(tokens, vocab, n, k, moduli))


def test_no_int64_overflow_for_large_vocab_and_order():
    """V = 100,278 and n = 6: V^5 ~ 1e25 overflows int64, modular Horner does not."""
    vocab, n, k = 100_278, 6, 1
    tokens = torch.full((1, 8), vocab - 1, dtype=torch.int64)
    moduli = ngram.ngram_moduli(12_800_001, n, k)
    ids = ngram.ngram_ids(tokens, vocab, n, k, moduli)
    assert torch.equal(ids, ngram.ngram_ids_reference(tokens, vocab, n, k, moduli))
    assert int(ids.min()) >= 0


def test_hand_computed_ids_and_zero_padding():
    tokens = torch.tensor([[3, 5, 7]])
    ids = ngram.ngram_ids(tokens, vocab=10, n=3, k=1, moduli=[1000, 1000])
    # base-10 digits, oldest token first, current token least significant; zeros before the start:
    # 2-grams 03, 35, 57; 3-grams 003, 035, 357
    assert ids[0, :, 0].tolist() == [3, 35, 57]
    assert ids[0, :, 1].tolist() == [3, 35, 357]
    assert ngram.ngram_ids(tokens, 10, 3, 1, [7, 9])[0].tolist() == [[3 % 7, 3 % 9], [35 % 7, 35 % 9], [57 % 7, 357 % 9]]


def test_causal_later_tokens_do_not_change_earlier_ids():
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 256, (2, 12), generator=g)
    b = a.clone()
    b[:, 7:] = torch.randint(0, 256, (2, 5), generator=g)
    mods = ngram.ngram_moduli(4093, 3, 2)
    assert torch.equal(ngram.ngram_ids(a, 256, 3, 2, mods)[:, :7], ngram.ngram_ids(b, 256, 3, 2, mods)[:, :7])


def test_moduli_differ_across_slices_and_multiple_of_vocab_degenerates():
    assert ngram.ngram_moduli(1021, 3, 2) == [1021, 1023, 1025, 1027]
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 256, (4, 50), generator=g)
    ids = ngram.ngram_ids(tokens, 256, 2, 2, ngram.ngram_moduli(1021, 2, 2))
    assert not torch.equal(ids[..., 0], ids[..., 1])
    # m = 4 V: the 2-gram id sees the previous byte only modulo m / V = 4
    deg = ngram.ngram_ids(tokens, 256, 2, 1, [1024])[..., 0]
    prev = torch.nn.functional.pad(tokens, (1, 0))[:, :-1]
    assert torch.equal(deg, tokens + (prev % 4) * 256)
    # coprime m keeps all 256 * 256 bigrams apart as long as m >= 65536
    all_pairs = torch.cartesian_prod(torch.arange(256), torch.arange(256))
    assert ngram.ngram_ids(all_pairs, 256, 2, 1, [65537])[:, 1, 0].unique().numel() == 65536


def test_fused_embedding_equals_appendix_a_forward_and_backward():
    torch.manual_seed(0)
    fast = ngram.OverEncoding(256, 48, n=3, k=2, m=1021)
    with torch.no_grad():
        fast.proj.bias.normal_()
    naive = ngram.NaiveOverEncoding.from_fast(fast)
    tokens = torch.randint(0, 256, (3, 20))
    out_f, out_n = fast(tokens), naive(tokens)
    torch.testing.assert_close(out_f, out_n, rtol=1e-5, atol=1e-6)
    w = torch.randn_like(out_f)
    (out_f * w).sum().backward()
    (out_n * w).sum().backward()
    torch.testing.assert_close(fast.wte.weight.grad, naive.wte.weight.grad, rtol=1e-5, atol=1e-6)
    for i, t in enumerate(naive.tables):
        lo = int(fast.offsets[i])
        torch.testing.assert_close(fast.table.weight.grad[lo:lo + fast.moduli[i]], t.weight.grad, rtol=1e-5, atol=1e-6)
    assert fast.hashed_parameters() == sum(fast.moduli) * fast.d_s


@pytest.mark.parametrize("call, match", [
    (lambda: ngram.ngram_ids(torch.tensor([[1, 300]]), 256, 2, 1, [1021]), "tokens"),
    (lambda: ngram.ngram_ids(torch.tensor([[1, 2]], dtype=torch.int32), 256, 2, 1, [1021]), "tokens"),
    (lambda: ngram.ngram_ids(torch.tensor([1, 2]), 256, 2, 1, [1021]), "tokens"),
    (lambda: ngram.ngram_ids(torch.tensor([[1, -1]]), 256, 2, 1, [1021]), "tokens"),
    (lambda: ngram.ngram_ids(torch.tensor([[1, 2]]), 256, 1, 1, [1021]), "n"),
    (lambda: ngram.ngram_ids(torch.tensor([[1, 2]]), 256, 3, 1, [1021]), "moduli"),
    (lambda: ngram.ngram_moduli(0, 2, 1), "m"),
    (lambda: ngram.OverEncoding(256, 50, n=3, k=2), "dim"),
    (lambda: ngram.OverEncoding(256, 64, n=3, k=1, moduli=[7]), "moduli"),
    (lambda: ngram.OverEncoding(256, 64)(torch.tensor([[256]])), "tokens"),
])
def test_bad_input_names_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()
