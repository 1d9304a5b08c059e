"""kernels.vq: assignment and search against brute force and faiss, the EMA update against a per-item loop,
the merge against a full sort, and the bad-input errors."""

import faiss
import numpy as np
import pytest
import torch

from kernels import vq

faiss.omp_set_num_threads(1)


def _data(N, K, d, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, d, generator=g), torch.randn(K, d, generator=g)


def _agree_up_to_ties(x, E, got, want, metric, scale=None, tol=1e-4):
    """Indices equal, or different only where the two picks score within ``tol`` (relative) of each other."""
    diff = got != want
    if not bool(diff.any()):
        return True
    x64, E64 = x[diff].double(), E.double()
    if metric == "ip":
        a = (x64 * E64[got[diff]]).sum(1)
        b = (x64 * E64[want[diff]]).sum(1)
    else:
        r = scale.double() if scale is not None else torch.ones(E.shape[0], dtype=torch.float64)
        a = ((x64 - E64[got[diff]]) ** 2).sum(1) * r[got[diff]]
        b = ((x64 - E64[want[diff]]) ** 2).sum(1) * r[want[diff]]
    return bool(((a - b).abs() <= tol * (1 + b.abs())).all())


@pytest.mark.parametrize("N, K, d, chunk", [(500, 7, 3, None), (1000, 64, 32, 100), (700, 256, 16, None),
                                            (300, 1024, 8, 64), (50, 1, 5, None), (0, 10, 4, None)])
@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_nearest_codeword_equals_brute_force(N, K, d, chunk, metric):
    x, E = _data(N, K, d, N + K)
    idx, val = vq.nearest_codeword(x, E, metric, chunk=chunk)
    ref_i, ref_v = vq.nearest_codeword_reference(x, E, metric)
    assert idx.dtype == torch.int64 and idx.shape == (N,)
    assert _agree_up_to_ties(x, E, idx, ref_i, metric)
    torch.testing.assert_close(val, ref_v, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("N, K, d", [(2000, 64, 32), (1500, 512, 16), (800, 1024, 64)])
def test_nearest_codeword_ids_equal_faiss(N, K, d):
    x, E = _data(N, K, d, 7 * K)
    for metric, index in (("ip", faiss.IndexFlatIP(d)), ("l2", faiss.IndexFlatL2(d))):
        index.add(E.numpy())
        D, I = index.search(x.numpy(), 1)
        idx, val = vq.nearest_codeword(x, E, metric)
        assert _agree_up_to_ties(x, E, idx, torch.from_numpy(I[:, 0]).long(), metric)
        np.testing.assert_allclose(val.numpy(), D[:, 0], rtol=1e-4, atol=1e-4)


def test_ties_go_to_the_lowest_index_like_argmax():
    E = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]).repeat(100, 1)        # K = 300, many exact ties
    x = torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])
    assert vq.nearest_codeword(x, E, "ip")[0].tolist() == [0, 2, 0]
    wide = torch.zeros(4, 512)
    wide[:, 300] = 1.0
    wide[:, 301] = 1.0
    wide[0, 5] = 1.0
    assert vq._row_argmax(wide).tolist() == wide.argmax(1).tolist() == [5, 300, 300, 300]


@pytest.mark.parametrize("K", [16, 300])
def test_size_aware_assignment_equals_brute_force(K):
    x, E = _data(800, K, 12, K)
    counts = torch.rand(K, generator=torch.Generator().manual_seed(1)) * 10
    r = vq.size_factor(counts, s=2.0, floor=0.3)
    assert float(r.min()) >= 0.3 and float(r.max()) <= 1.0
    idx, val = vq.nearest_codeword(x, E, "l2", scale=r)
    ref_i, ref_v = vq.nearest_codeword_reference(x, E, "l2", scale=r)
    assert _agree_up_to_ties(x, E, idx, ref_i, "l2", scale=r)
    torch.testing.assert_close(val, ref_v, rtol=1e-4, atol=1e-4)
    # r = 1 everywhere is plain L2
    same = vq.nearest_codeword(x, E, "l2", scale=torch.ones(K))[0]
    assert _agree_up_to_ties(x, E, same, vq.nearest_codeword(x, E, "l2")[0], "l2")


def test_size_factor_formula():
    c = torch.tensor([0.0, 1.0, 3.0, 4.0])                 # mean 2
    assert vq.size_factor(c, s=1.0).tolist() == [0.0, 0.5, 1.0, 1.0]
    assert vq.size_factor(c, s=2.0, floor=0.25).tolist() == [0.25, 1.0, 1.0, 1.0]


@pytest.mark.parametrize("k", [1, 5, 64])
def test_codeword_search_and_top_clusters_equal_faiss(k):
    x, E = _data(600, 64, 16, k)
    for metric, index in (("ip", faiss.IndexFlatIP(16)), ("l2", faiss.IndexFlatL2(16))):
        index.add(E.numpy())
        D, I = index.search(x.numpy(), k)
        v, i = vq.codeword_search(x, E, k, metric, chunk=128)
        np.testing.assert_allclose(v.numpy(), D, rtol=1e-4, atol=1e-4)
        same = (i.numpy() == I)
        # where ids differ the scores must tie
        assert np.allclose(v.numpy()[~same], D[~same], atol=1e-4)
        assert same.mean() > 0.99
    s, c = vq.top_clusters(x, E, k)
    assert torch.equal(c, vq.codeword_search(x, E, k, "ip")[1])
    assert bool((s[:, :-1] >= s[:, 1:]).all())


@pytest.mark.parametrize("B, K, d", [(1, 3, 2), (512, 64, 32), (100, 5, 7), (0, 4, 3)])
def test_ema_update_equals_per_item_loop(B, K, d):
    torch.use_deterministic_algorithms(True)
    try:
        g = torch.Generator().manual_seed(B + K)
        W, C = torch.randn(K, d, generator=g), torch.rand(K, generator=g)
        idx = torch.randint(0, K, (B,), generator=g)
        vecs, wgt = torch.randn(B, d, generator=g), torch.rand(B, generator=g) * 5
        W1, C1, W2, C2 = W.clone(), C.clone(), W.clone(), C.clone()
        vq.ema_update(W1, C1, idx, vecs, wgt, 0.9)
        vq.ema_update_reference(W2, C2, idx, vecs, wgt, 0.9)
        torch.testing.assert_close(W1, W2, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(C1, C2, rtol=1e-6, atol=1e-6)
        # the codeword of a cluster hit by one unit-weight item from an empty start is that item
        W0, C0 = torch.zeros(K, d), torch.zeros(K)
        if B:
            vq.ema_update(W0, C0, idx[:1], vecs[:1], torch.ones(1), 0.5)
            torch.testing.assert_close(vq.codewords(W0, C0)[idx[0]], vecs[0])
    finally:
        torch.use_deterministic_algorithms(False)


def test_inverted_lists_layout():
    assign = torch.tensor([2, 0, 2, -1, 1, 2, 0])
    bias = torch.tensor([0.1, 0.5, 0.9, 3.0, 0.0, 0.9, 0.2])
    order, offsets = vq.inverted_lists(assign, 4, key=bias)
    assert offsets.tolist() == [0, 2, 3, 6, 6]
    assert order.tolist() == [1, 6, 4, 2, 5, 0]            # cluster 0: bias 0.5, 0.2 (desc); cluster 2: tie (2, 5) by id
    order2, _ = vq.inverted_lists(assign, 4)
    assert order2.tolist() == [1, 6, 4, 0, 2, 5]


@pytest.mark.parametrize("seed", range(5))
def test_merge_equals_full_sort_and_heap(seed):
    g = torch.Generator().manual_seed(seed)
    N, K, n = 3000, 40, 50
    assign = torch.randint(-1, K, (N,), generator=g)        # some items not indexed
    bias = torch.randn(N, generator=g)
    order, offsets = vq.inverted_lists(assign, K, key=bias)
    clusters = torch.randperm(K, generator=g)[:7]
    cscores = torch.randn(7, generator=g)
    items, scores = vq.merge_topn(clusters, cscores, order, offsets, bias, n)
    ref_i, ref_s = vq.merge_topn_reference(clusters, cscores, order, offsets, bias, n)
    assert items.tolist() == ref_i.tolist()
    torch.testing.assert_close(scores, ref_s)
    # brute force: every item of the selected clusters, full sort
    cs = torch.full((K,), float("nan"))
    cs[clusters] = cscores
    sel = torch.nonzero(torch.isin(assign, clusters)).squeeze(1)
    full = cs[assign[sel]] + bias[sel]
    brute = sel[torch.argsort(full, descending=True, stable=True)][:n]
    assert items.tolist() == brute.tolist()


def test_merge_small_lists_and_ties_by_id():
    assign = torch.tensor([0, 0, 1, 1])
    bias = torch.tensor([1.0, 1.0, 0.5, 0.5])
    order, offsets = vq.inverted_lists(assign, 2, key=bias)
    clusters, cs = torch.tensor([1, 0]), torch.tensor([0.5, 0.0])
    items, scores = vq.merge_topn(clusters, cs, order, offsets, bias, 10)
    assert items.tolist() == [0, 1, 2, 3] == vq.merge_topn_reference(clusters, cs, order, offsets, bias, 10)[0].tolist()
    empty = vq.merge_topn(torch.tensor([1]), torch.tensor([0.0]), *vq.inverted_lists(torch.tensor([0]), 2), torch.ones(1), 3)
    assert empty[0].numel() == 0


def test_probes_for_budget():
    sizes = torch.tensor([5, 0, 10, 3])
    order = torch.tensor([[2, 0, 3, 1], [1, 3, 0, 2], [0, 1, 3, 2]])
    assert vq.probes_for_budget(order, sizes, 12).tolist() == [2, 4, 4]
    assert vq.probes_for_budget(order, sizes, 10).tolist() == [1, 4, 4]
    assert vq.probes_for_budget(order, sizes, 100).tolist() == [4, 4, 4]



@pytest.mark.parametrize("size_s, beta", [(None, 1.0), (2.0, 1.0), (2.0, 0.0)])
def test_streaming_index_equals_a_per_item_loop(size_s, beta):
    """Eqs. eq-assign, eq-delta, eq-ema, eq-balance, one item at a time in float64, over a stream of batches."""
    g = torch.Generator().manual_seed(3)
    N, K, d, alpha, delta0, floor = 60, 5, 4, 0.9, 50.0, 0.5
    items = torch.randn(N, d, generator=g)
    index = vq.StreamingIndex(items[:K], N, alpha, beta, delta0, size_s, floor)
    W, C = items[:K].double().clone(), torch.ones(K, dtype=torch.float64)
    last, assign = {}, {}
    for t in range(12):
        ids = torch.randperm(N, generator=g)[:15].sort().values
        k = index.step(ids, items[ids], t)
        E = W / C[:, None]
        r = (size_s * C / C.mean()).clamp(floor, 1.0) if size_s is not None else torch.ones(K, dtype=torch.float64)
        ref_k = [int(torch.argmin(r * ((items[i].double() - E) ** 2).sum(1))) for i in ids.tolist()]
        assert k.tolist() == ref_k
        W *= alpha
        C *= alpha
        for i, kk in zip(ids.tolist(), ref_k):
            w = (t - last[i] if i in last else delta0) ** beta
            W[kk] += (1 - alpha) * w * items[i].double()
            C[kk] += (1 - alpha) * w
            last[i], assign[i] = t, kk
    torch.testing.assert_close(index.W.double(), W, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(index.C.double(), C, rtol=1e-5, atol=1e-5)
    assert index.assign.tolist() == [assign.get(i, -1) for i in range(N)]
    assert index.last_seen.tolist() == [last.get(i, -1) for i in range(N)]


def test_streaming_index_serves_an_item_in_the_step_it_first_appears():
    """The sanity check behind the chapter's immediacy row: assign[ids] is written by the same step() call, and
    items not yet seen stay out of the serving map (-1)."""
    g = torch.Generator().manual_seed(11)
    N, K, d = 40, 4, 3
    items = torch.randn(N, d, generator=g)
    index = vq.StreamingIndex(items[:K], N, 0.9, 1.0, 20.0, 2.0, 0.5)
    seen = torch.zeros(N, dtype=torch.bool)
    for t in range(6):
        ids = torch.randperm(N, generator=g)[:7]
        k = index.step(ids, items[ids], t)
        seen[ids] = True
        assert index.assign[ids].tolist() == k.tolist()
        assert index.last_seen[ids].tolist() == [t] * len(ids)
        assert bool((index.assign[~seen] == -1).all()) and bool((index.assign[seen] >= 0).all())


def test_streaming_index_rejects_repeated_ids():
    index = vq.StreamingIndex(torch.randn(3, 2), 10, 0.9, 1.0, 5.0)
    with pytest.raises(ValueError, match="ids: expected distinct item ids.*1 repeats"):
        index.step(torch.tensor([4, 2, 4]), torch.randn(3, 2), 0)
    assert index.assign.tolist() == [-1] * 10                      # nothing written on a rejected batch
    index.step(torch.tensor([4, 2]), torch.randn(2, 2), 0)         # merged, it goes through
    assert int((index.assign >= 0).sum()) == 2


def test_opened_clusters_equals_a_loop():
    g = torch.Generator().manual_seed(5)
    scores, sizes = torch.randn(7, 6, generator=g), torch.randint(0, 9, (6,), generator=g)
    opened = vq.opened_clusters(scores, sizes, 12)
    for u in range(7):
        gathered, want = 0, set()
        for k in sorted(range(6), key=lambda k: -float(scores[u, k])):
            want.add(k)
            gathered += int(sizes[k])
            if gathered >= 12:
                break
        assert set(torch.nonzero(opened[u]).squeeze(1).tolist()) == want


E4 = torch.randn(4, 3)
X = torch.randn(5, 3)


@pytest.mark.parametrize("call, match", [
    (lambda: vq.nearest_codeword(torch.randn(5, 4), E4), "x"),                       # dim mismatch
    (lambda: vq.nearest_codeword(X, torch.empty(0, 3)), "E"),                        # empty codebook
    (lambda: vq.nearest_codeword(X, torch.tensor([[float("nan"), 0.0, 0.0]])), "E"),  # non-finite codeword
    (lambda: vq.nearest_codeword(torch.tensor([[float("inf"), 0.0, 0.0]]), E4), "x"),  # non-finite vector
    (lambda: vq.nearest_codeword(X.double(), E4), "x"),
    (lambda: vq.nearest_codeword(X[0], E4), "x"),
    (lambda: vq.nearest_codeword(X, E4, "cosine"), "metric"),
    (lambda: vq.nearest_codeword(X, E4, "ip", scale=torch.ones(4)), "scale"),
    (lambda: vq.nearest_codeword(X, E4, "l2", scale=torch.ones(3)), "scale"),
    (lambda: vq.nearest_codeword(X, E4, "l2", scale=torch.zeros(4)), "scale"),
    (lambda: vq.nearest_codeword(X, E4, chunk=0), "chunk"),
    (lambda: vq.codeword_search(X, E4, 5), "k"),
    (lambda: vq.codeword_search(X, torch.randn(4, 2), 1), "x"),
    (lambda: vq.top_clusters(X, torch.empty(0, 3), 1), "E"),
    (lambda: vq.ema_update(torch.zeros(4, 3), torch.zeros(4), torch.tensor([4]), torch.randn(1, 3), torch.ones(1), 0.9), "idx"),
    (lambda: vq.ema_update(torch.zeros(4, 3), torch.zeros(4), torch.tensor([0]), torch.randn(1, 2), torch.ones(1), 0.9), "vecs"),
    (lambda: vq.ema_update(torch.zeros(4, 3), torch.zeros(3), torch.tensor([0]), torch.randn(1, 3), torch.ones(1), 0.9), "C"),
    (lambda: vq.ema_update(torch.zeros(4, 3), torch.zeros(4), torch.tensor([0]), torch.full((1, 3), float("nan")), torch.ones(1), 0.9), "vecs"),
    (lambda: vq.ema_update(torch.zeros(4, 3), torch.zeros(4), torch.tensor([0]), torch.randn(1, 3), torch.ones(2), 0.9), "wgt"),
    (lambda: vq.ema_update(torch.zeros(4, 3), torch.zeros(4), torch.tensor([0]), torch.randn(1, 3), torch.ones(1), 1.5), "alpha"),
    (lambda: vq.ema_update(torch.zeros(0, 3), torch.zeros(0), torch.tensor([0]), torch.randn(1, 3), torch.ones(1), 0.9), "W"),
    (lambda: vq.size_factor(torch.tensor([1.0, float("inf")]), 2.0), "counts"),
    (lambda: vq.size_factor(torch.ones(3), 0.0), "s"),
    (lambda: vq.inverted_lists(torch.tensor([0, 5]), 3), "assign"),
    (lambda: vq.inverted_lists(torch.tensor([0, 1]), 3, key=torch.ones(3)), "key"),
    (lambda: vq.merge_topn(torch.tensor([3]), torch.zeros(1), torch.tensor([0]), torch.tensor([0, 1, 1]), torch.ones(1), 2), "clusters"),
    (lambda: vq.merge_topn(torch.tensor([0]), torch.zeros(2), torch.tensor([0]), torch.tensor([0, 1, 1]), torch.ones(1), 2), "cluster_scores"),
    (lambda: vq.merge_topn(torch.tensor([0]), torch.zeros(1), torch.tensor([0]), torch.tensor([0, 1, 1]), torch.ones(1), 0), "n"),
    (lambda: vq.probes_for_budget(torch.tensor([[0, 1]]), torch.tensor([1, 2, 3]), 2), "sizes"),
    (lambda: vq.StreamingIndex(torch.empty(0, 3), 10, 0.9, 1.0, 50.0), "init"),
    (lambda: vq.StreamingIndex(E4, 10, 0.9, 1.0, 0.0), "delta0"),
    (lambda: vq.StreamingIndex(E4, 10, 0.9, 1.0, 5.0).step(torch.tensor([0, 10]), torch.randn(2, 3), 0), "ids"),
    (lambda: vq.StreamingIndex(E4, 10, 0.9, 1.0, 5.0).step(torch.tensor([0, 1]), torch.randn(2, 4), 0), "vecs"),
    (lambda: vq.StreamingIndex(E4, 10, 0.9, 1.0, 5.0).step(torch.tensor([3, 3]), torch.randn(2, 3), 0), "ids"),
    (lambda: vq.opened_clusters(torch.randn(2, 3), torch.tensor([1, 2]), 2), "sizes"),
])
def test_bad_input_names_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_bench_cases_build_and_run_once():
    cases = vq.bench_cases(quick=True)
    from kernels import native

    assert cases and all(len(c.fns) == (7 if native.available() else 5) for c in cases)
    for fn in cases[0].fns.values():
        fn()
