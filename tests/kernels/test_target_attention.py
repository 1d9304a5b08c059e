"""kernels.target_attention: masked multi-query attention against a per-sample, per-query loop and against
PyTorch's own scaled_dot_product_attention; the all-padding guard (zeros, not NaN, in both passes); the split
DIN scorer against the explicit concatenation; gradcheck in float64; and the bad-input errors."""

import math

import pytest
import torch
import torch.nn.functional as F

from kernels.target_attention import (bench_cases, din_scores, din_scores_reference, masked_attention_pool,
                                      masked_softmax, target_attention, target_attention_reference)


def _inputs(B, M, L, d, dv, seed, dtype=torch.float32, p_real=0.6):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, M, d, generator=g, dtype=dtype)
    k = torch.randn(B, L, d, generator=g, dtype=dtype)
    v = torch.randn(B, L, dv, generator=g, dtype=dtype)
    mask = torch.rand(B, L, generator=g) < p_real
    return q, k, v, mask


def _din_weights(d, h, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(h, 4 * d, generator=g, dtype=dtype) / math.sqrt(d), torch.randn(h, generator=g, dtype=dtype),
            torch.randn(h, generator=g, dtype=dtype), torch.randn(1, generator=g, dtype=dtype))


@pytest.mark.parametrize("B, M, L, d, dv", [(1, 1, 1, 1, 1), (7, 1, 20, 16, 16), (33, 4, 20, 16, 8),
                                            (5, 3, 50, 32, 32), (64, 2, 9, 5, 3)])
@pytest.mark.parametrize("impl", ["bmm", "sdpa"])
def test_target_attention_equals_the_loop(B, M, L, d, dv, impl):
    q, k, v, mask = _inputs(B, M, L, d, dv, seed=B * L + M)
    mask[0] = False                                          # one user without any behaviour
    got = target_attention(q, k, v, mask, impl=impl)
    want = target_attention_reference(q, k, v, mask)
    assert got.shape == (B, M, dv)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scale", [None, 0.3, 2.0])
def test_bmm_path_equals_torch_sdpa_where_every_row_has_an_item(scale):
    q, k, v, mask = _inputs(40, 4, 20, 16, 16, seed=3)
    mask[:, 0] = True
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, :], scale=scale)
    torch.testing.assert_close(target_attention(q, k, v, mask, scale=scale), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(target_attention(q, k, v, None, scale=scale),
                               F.scaled_dot_product_attention(q, k, v, scale=scale), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", ["bmm", "sdpa"])
def test_an_all_padding_row_gives_zeros_not_nan_in_both_passes(impl):
    q, k, v, mask = _inputs(6, 3, 10, 8, 8, seed=11)
    mask[2] = False
    mask[4] = False
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    out = target_attention(q, k, v, mask, impl=impl)
    assert torch.isfinite(out).all()
    assert torch.equal(out[2], torch.zeros_like(out[2])) and torch.equal(out[4], torch.zeros_like(out[4]))
    out.sum().backward()
    for t in (q, k, v):
        assert torch.isfinite(t.grad).all()
    assert torch.equal(q.grad[2], torch.zeros_like(q.grad[2]))   # nothing to attend to: no gradient either


def test_padded_positions_get_no_weight_and_do_not_change_the_output():
    q, k, v, mask = _inputs(20, 4, 15, 8, 6, seed=5)
    out, w = target_attention(q, k, v, mask, return_weights=True)
    assert torch.equal(w * ~mask[:, None, :], torch.zeros_like(w))
    has = mask.any(1)
    torch.testing.assert_close(w.sum(-1)[has], torch.ones(int(has.sum()), 4))
    k2, v2 = k.clone(), v.clone()
    k2[~mask] = 1e3                                          # garbage (large) in every padded slot
    v2[~mask] = -1e3
    torch.testing.assert_close(target_attention(q, k2, v2, mask), out)


def test_masked_softmax_and_pool_accept_any_scorer():
    q, k, v, mask = _inputs(9, 2, 12, 4, 5, seed=8)
    scores = torch.randn(9, 2, 12)
    out, w = masked_attention_pool(scores, v, mask)
    want = torch.softmax(scores.masked_fill(~mask[:, None, :], float("-inf")), -1).nan_to_num(0.0)
    torch.testing.assert_close(w, want)
    torch.testing.assert_close(out, want @ v)
    torch.testing.assert_close(masked_softmax(scores, None), torch.softmax(scores, -1))


@pytest.mark.parametrize("impl", ["bmm", "sdpa"])
def test_target_attention_gradcheck_float64(impl):
    q, k, v, mask = _inputs(3, 2, 5, 3, 2, seed=1, dtype=torch.float64)
    mask[1] = False
    mask[0, 0] = True
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    assert torch.autograd.gradcheck(lambda q, k, v: target_attention(q, k, v, mask, impl=impl), (q, k, v))


def test_masked_softmax_gradcheck_float64():
    scores = torch.randn(3, 2, 6, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[1, 0, 1, 1, 0, 0], [0] * 6, [1] * 6], dtype=torch.bool)
    assert torch.autograd.gradcheck(lambda s: masked_softmax(s, mask), (scores,))


@pytest.mark.parametrize("B, M, L, d, h", [(1, 1, 1, 1, 1), (16, 1, 20, 16, 16), (9, 4, 20, 16, 16),
                                           (5, 3, 50, 32, 8), (3, 2, 7, 5, 36)])
@pytest.mark.parametrize("act", ["relu", "sigmoid", "identity"])
def test_split_din_scorer_equals_the_concatenation(B, M, L, d, h, act):
    q, k, _, _ = _inputs(B, M, L, d, 1, seed=B + L + h)
    w1, b1, w2, b2 = _din_weights(d, h, seed=d * h)
    got = din_scores(q, k, w1, b1, w2, b2, act=act)
    want = din_scores_reference(q, k, w1, b1, w2, b2, act=act)
    assert got.shape == (B, M, L)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_din_reference_is_nn_linear_on_the_concatenation():
    q, k, _, _ = _inputs(4, 2, 6, 5, 1, seed=2)
    lin1, lin2 = torch.nn.Linear(20, 7), torch.nn.Linear(7, 1)
    x = torch.cat([q[:, :, None].expand(4, 2, 6, 5), k[:, None].expand(4, 2, 6, 5),
                   q[:, :, None] - k[:, None], q[:, :, None] * k[:, None]], -1)
    want = lin2(torch.relu(lin1(x))).squeeze(-1)
    with torch.no_grad():
        got = din_scores(q, k, lin1.weight, lin1.bias, lin2.weight[0], lin2.bias)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("act", ["sigmoid", "identity"])
def test_din_scorer_gradcheck_float64(act):
    q, k, _, _ = _inputs(2, 2, 3, 3, 1, seed=4, dtype=torch.float64)
    params = _din_weights(3, 4, seed=6, dtype=torch.float64)
    args = tuple(t.clone().requires_grad_() for t in (q, k) + params)
    assert torch.autograd.gradcheck(lambda *a: din_scores(*a, act=act), args)


def test_din_scorer_gradients_equal_the_concatenations_with_relu():
    q, k, _, _ = _inputs(5, 3, 8, 4, 1, seed=9, dtype=torch.float64)
    params = _din_weights(4, 6, seed=10, dtype=torch.float64)
    a = [t.clone().requires_grad_() for t in (q, k) + params]
    b = [t.clone().requires_grad_() for t in (q, k) + params]
    din_scores(*a).pow(2).sum().backward()
    din_scores_reference(*b).pow(2).sum().backward()
    for x, y in zip(a, b):
        torch.testing.assert_close(x.grad, y.grad)


def test_bad_inputs_raise_value_errors_naming_the_argument():
    q, k, v, mask = _inputs(4, 2, 6, 5, 3, seed=0)
    bad = [
        (lambda: target_attention(q[0], k, v, mask), "q"),
        (lambda: target_attention(q, k[:, :, :4], v, mask), "k"),
        (lambda: target_attention(q, k[:3], v, mask), "k"),
        (lambda: target_attention(q, k, v[:, :5], mask), "v"),
        (lambda: target_attention(q, k, v.double(), mask), "k, v"),
        (lambda: target_attention(q, k, v, mask.float()), "mask"),
        (lambda: target_attention(q, k, v, mask[:, :5]), "mask"),
        (lambda: target_attention(q, k, v, mask, impl="flash"), "impl"),
        (lambda: target_attention(q, k, v, mask, scale=float("nan")), "scale"),
        (lambda: target_attention(q, k, v, mask, impl="sdpa", return_weights=True), "return_weights"),
        (lambda: target_attention(q.long(), k, v, mask), "q"),
        (lambda: masked_softmax(torch.randn(4, 6), mask), "scores"),
        (lambda: masked_attention_pool(torch.randn(4, 2, 6), v[:, :5], mask), "v"),
    ]
    w1, b1, w2, b2 = _din_weights(5, 3, seed=0)
    bad += [
        (lambda: din_scores(q, k, w1[:, :19], b1, w2, b2), "w1"),
        (lambda: din_scores(q, k, w1, b1[:2], w2, b2), "b1"),
        (lambda: din_scores(q, k, w1, b1, w2[None], b2), "w2"),
        (lambda: din_scores(q, k, w1, b1, w2, torch.zeros(2)), "b2"),
        (lambda: din_scores(q, k, w1, b1, w2, b2, act="gelu"), "act"),
        (lambda: din_scores(q, k.double(), w1, b1, w2, b2), "k"),
        (lambda: din_scores_reference(q, k[:, :, :3], w1, b1, w2, b2), "k"),
    ]
    for fn, name in bad:
        with pytest.raises(ValueError, match=rf"^{name}:"):
            fn()


def test_bench_cases_agree_and_run_once():
    """(Building them leaves the global RNG alone: tests/kernels/test_bench.py checks that for every module.)"""
    cases = bench_cases(quick=True)
    assert cases
    for case in cases:
        outs = [fn() for fn in case.fns.values()]
        for out in outs[1:]:
            torch.testing.assert_close(out, outs[0], rtol=1e-4, atol=1e-4)
