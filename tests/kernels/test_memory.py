"""kernels.memory: product-key top-k against brute force over all N = n_r * n_c materialised keys (exact, random
shapes, thin grids, ties) and against faiss IndexFlatIP; the weighted read against the gather-sum reference,
including its gradients (gradcheck in float64, and the sparse gradient that touches only the selected rows);
per-request reuse against one read per row; the bad-input errors."""

import math

import numpy as np
import pytest
import torch

from kernels.memory import (bench_cases, full_keys, per_request, per_request_reference, pkm_topk,
                            pkm_topk_reference, weighted_bag, weighted_bag_reference)


def _keys(Q, n_r, n_c, d_r, d_c, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(Q, d_r + d_c, generator=g, dtype=dtype), torch.randn(n_r, d_r, generator=g, dtype=dtype),
            torch.randn(n_c, d_c, generator=g, dtype=dtype))


def test_full_keys_layout_is_row_then_column():
    kr = torch.tensor([[1.0], [2.0]])
    kc = torch.tensor([[10.0, 11.0], [20.0, 21.0], [30.0, 31.0]])
    keys = full_keys(kr, kc)
    assert keys.shape == (6, 3)
    for a in range(2):
        for b in range(3):
            assert torch.equal(keys[a * 3 + b], torch.cat([kr[a], kc[b]]))


@pytest.mark.parametrize("n", [2**6, 2**10])
@pytest.mark.parametrize("k", [1, 4, 8])
def test_product_key_topk_equals_brute_force_over_all_slots(n, k):
    m = math.isqrt(n)
    q, kr, kc = _keys(300, m, n // m, 16, 16, seed=n + k, dtype=torch.float64)   # continuous keys: no ties
    s, i = pkm_topk(q, kr, kc, k)
    s_ref, i_ref = pkm_topk_reference(q, kr, kc, k, chunk=64)
    assert s.shape == (300, k) and i.dtype == torch.int64
    assert torch.equal(i, i_ref)
    torch.testing.assert_close(s, s_ref, rtol=1e-12, atol=1e-12)
    assert bool((s[:, 1:] <= s[:, :-1]).all())                                   # descending


@pytest.mark.parametrize("seed", range(12))
def test_random_shapes_including_thin_and_rectangular_grids(seed):
    g = torch.Generator().manual_seed(1000 + seed)
    n_r, n_c = (int(x) for x in torch.randint(1, 40, (2,), generator=g))
    d_r, d_c = (int(x) for x in torch.randint(1, 12, (2,), generator=g))
    k = int(torch.randint(1, min(n_r * n_c, 20) + 1, (1,), generator=g))          # k may exceed n_r or n_c
    Q = int(torch.randint(1, 50, (1,), generator=g))
    q, kr, kc = _keys(Q, n_r, n_c, d_r, d_c, seed=seed, dtype=torch.float64)
    s, i = pkm_topk(q, kr, kc, k)
    s_ref, i_ref = pkm_topk_reference(q, kr, kc, k)
    assert torch.equal(i, i_ref), (n_r, n_c, d_r, d_c, k)
    torch.testing.assert_close(s, s_ref)
    torch.testing.assert_close(s, (q[:, None, :] * full_keys(kr, kc)[i]).sum(-1))   # score = q . full key of idx


def test_float32_scores_agree_with_brute_force():
    q, kr, kc = _keys(500, 32, 32, 16, 16, seed=5)
    s, i = pkm_topk(q, kr, kc, 8)
    s_ref, i_ref = pkm_topk_reference(q, kr, kc, 8)
    torch.testing.assert_close(s, s_ref, rtol=1e-5, atol=1e-5)
    assert (i == i_ref).float().mean() > 0.999              # float32 sums may swap near-ties, nothing else


def test_ties_give_the_same_score_multiset_and_valid_slots():
    """Integer keys and queries make many exact ties: which tied slot wins may differ from the brute force, the
    k best scores may not, and every returned slot must score what it claims."""
    g = torch.Generator().manual_seed(7)
    q = torch.randint(-1, 2, (400, 4), generator=g).double()
    kr = torch.randint(-1, 2, (6, 2), generator=g).double()
    kc = torch.randint(-1, 2, (5, 2), generator=g).double()
    for k in (1, 3, 8, 30):
        s, i = pkm_topk(q, kr, kc, k)
        s_ref, _ = pkm_topk_reference(q, kr, kc, k)
        assert torch.equal(s, s_ref)                                       # the k best scores, exactly
        assert torch.equal(s, (q[:, None, :] * full_keys(kr, kc)[i]).sum(-1))
        assert all(len(set(row.tolist())) == k for row in i)               # k distinct slots


def test_agrees_with_faiss_inner_product_search():
    faiss = pytest.importorskip("faiss")
    q, kr, kc = _keys(200, 16, 16, 16, 16, seed=9)
    index = faiss.IndexFlatIP(32)
    index.add(full_keys(kr, kc).numpy())
    D, I = index.search(q.numpy(), 8)
    s, i = pkm_topk(q, kr, kc, 8)
    np.testing.assert_allclose(s.numpy(), D, rtol=1e-4, atol=1e-4)
    assert (i.numpy() == I).mean() > 0.999


def test_scores_are_differentiable_in_query_and_sub_keys():
    q, kr, kc = _keys(6, 5, 4, 3, 2, seed=2, dtype=torch.float64)
    q, kr, kc = (t.requires_grad_() for t in (q, kr, kc))
    assert torch.autograd.gradcheck(lambda q, kr, kc: pkm_topk(q, kr, kc, 3)[0], (q, kr, kc))


@pytest.mark.parametrize("Q, N, k, d_v", [(1, 1, 1, 1), (17, 64, 8, 16), (200, 4096, 8, 32), (5, 30, 30, 3)])
def test_weighted_bag_equals_gather_sum(Q, N, k, d_v):
    g = torch.Generator().manual_seed(Q + N)
    V = torch.randn(N, d_v, generator=g)
    idx = torch.randint(0, N, (Q, k), generator=g)
    w = torch.softmax(torch.randn(Q, k, generator=g), 1)
    want = weighted_bag_reference(V, idx, w)
    torch.testing.assert_close(weighted_bag(V, idx, w), want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(weighted_bag(V, idx, w, sparse=False), want, rtol=1e-5, atol=1e-6)


def test_weighted_bag_gradcheck_float64():
    g = torch.Generator().manual_seed(3)
    V = torch.randn(12, 3, generator=g, dtype=torch.float64, requires_grad=True)
    idx = torch.randint(0, 12, (5, 4), generator=g)
    idx[0] = torch.tensor([2, 2, 7, 2])                                   # repeated rows in one bag
    w = torch.rand(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda V, w: weighted_bag(V, idx, w, sparse=False), (V, w))
    assert torch.autograd.gradcheck(lambda V, w: weighted_bag_reference(V, idx, w), (V, w))


def test_sparse_gradient_equals_dense_reference_and_touches_only_selected_rows():
    g = torch.Generator().manual_seed(4)
    N, d_v = 500, 6
    idx = torch.randint(0, N, (40, 8), generator=g)
    w0 = torch.rand(40, 8, generator=g, dtype=torch.float64)
    V0 = torch.randn(N, d_v, generator=g, dtype=torch.float64)
    up = torch.randn(40, d_v, generator=g, dtype=torch.float64)           # an arbitrary upstream gradient
    V, w = V0.clone().requires_grad_(), w0.clone().requires_grad_()
    (weighted_bag(V, idx, w, sparse=True) * up).sum().backward()
    Vr, wr = V0.clone().requires_grad_(), w0.clone().requires_grad_()
    (weighted_bag_reference(Vr, idx, wr) * up).sum().backward()
    assert V.grad.is_sparse
    grad = V.grad.coalesce()
    assert set(grad.indices()[0].tolist()) == set(idx.unique().tolist())   # only the selected rows
    torch.testing.assert_close(grad.to_dense(), Vr.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(w.grad, wr.grad, rtol=1e-12, atol=1e-12)


def test_sparse_adam_step_moves_only_selected_rows():
    g = torch.Generator().manual_seed(6)
    V = torch.nn.Parameter(torch.randn(100, 4, generator=g))
    before = V.detach().clone()
    idx = torch.randint(0, 100, (10, 3), generator=g)
    opt = torch.optim.SparseAdam([V], lr=0.1)
    weighted_bag(V, idx, torch.full((10, 3), 1 / 3)).square().sum().backward()
    opt.step()
    moved = (V.detach() != before).any(1)
    assert torch.equal(torch.nonzero(moved).squeeze(1), idx.unique())


def test_per_request_equals_one_read_per_row_with_fewer_reads():
    g = torch.Generator().manual_seed(8)
    R, L, d = 7, 5, 4
    x, y = torch.randn(R, L, d, generator=g), torch.randn(R, d, generator=g)
    rows = torch.randint(0, R, (60,), generator=g)
    calls = []

    def read(a, b):
        calls.append(a.shape[0])
        return (a * b[:, None, :]).sum(-1)                                # any row-wise function: [r, L]

    got = per_request(read, x, y, rows=rows)
    want = per_request_reference(read, x, y, rows=rows)
    assert torch.equal(got, want)
    assert calls == [R, 60]                                               # R reads instead of one per row


def test_bad_inputs_raise_value_error_naming_the_argument():
    q, kr, kc = _keys(4, 3, 3, 2, 2, seed=0)
    cases = [
        (lambda: pkm_topk(q[0], kr, kc, 2), "q:"),
        (lambda: pkm_topk(q.long(), kr, kc, 2), "q:"),
        (lambda: pkm_topk(q, kr.double(), kc, 2), "keys_r:"),
        (lambda: pkm_topk(q, kr, kc[:0], 2), "keys_c:"),
        (lambda: pkm_topk(q, kr, kc[:, :1], 2), "keys_r, keys_c:"),
        (lambda: pkm_topk(q, kr, kc, 0), "k:"),
        (lambda: pkm_topk(q, kr, kc, 10), "k:"),
        (lambda: pkm_topk(q, kr, kc, 2.0), "k:"),
        (lambda: pkm_topk_reference(q, kr, kc, 2, chunk=0), "chunk:"),
        (lambda: full_keys(kr, kc.double()), "keys_c:"),
    ]
    V, idx, w = torch.randn(9, 3), torch.randint(0, 9, (4, 2)), torch.rand(4, 2)
    cases += [
        (lambda: weighted_bag(V[0], idx, w), "values:"),
        (lambda: weighted_bag(V, idx.int(), w), "idx:"),
        (lambda: weighted_bag(V, idx + 9, w), "idx:"),
        (lambda: weighted_bag(V, idx - 9, w), "idx:"),
        (lambda: weighted_bag(V, idx, w[:, :1]), "w:"),
        (lambda: weighted_bag(V, idx, w.double()), "w:"),
        (lambda: weighted_bag(V, idx, w, sparse=1), "sparse:"),
        (lambda: per_request(3, V, rows=torch.zeros(2, dtype=torch.int64)), "read:"),
        (lambda: per_request(lambda a: a, rows=torch.zeros(2, dtype=torch.int64)), "request_inputs:"),
        (lambda: per_request(lambda a, b: a, V, V[:3], rows=torch.zeros(2, dtype=torch.int64)), "request_inputs[1]:"),
        (lambda: per_request(lambda a: a, V, rows=torch.zeros(2)), "rows:"),
        (lambda: per_request(lambda a: a, V, rows=torch.tensor([9])), "rows:"),
        (lambda: per_request(lambda a: a[:2], V, rows=torch.tensor([0])), "read:"),
    ]
    for fn, name in cases:
        with pytest.raises(ValueError, match="^" + name.replace("[", r"\[").replace("]", r"\]")):
            fn()
    with pytest.raises(ValueError, match="expected .* received"):     # expected and received, not just a name
        pkm_topk(q, kr, kc[:, :1], 2)


def test_bench_cases_are_well_formed_and_their_functions_agree():
    cases = bench_cases(quick=True)
    assert cases and all(c.baseline in c.fns for c in cases)
    search = cases[0]
    names = list(search.fns)
    assert "brute force (materialised keys)" in names and "product keys (pkm_topk)" in names
    s_ref, i_ref = search.fns["brute force (materialised keys)"]()
    s, i = search.fns["product keys (pkm_topk)"]()
    torch.testing.assert_close(s, s_ref, rtol=1e-5, atol=1e-5)
    assert (i == i_ref).float().mean() > 0.999
