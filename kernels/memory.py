"""Product-key memory: exact top-k search over N = n_r * n_c slots at the cost of two sqrt(N)-sized GEMMs, the
weighted read of the selected value rows with sparse gradients, and memory reads computed once per request.

The memory of LMN (Lu et al., "Large Memory Network for Recommendation", WWW 2025 Companion, arXiv 2502.05558;
chapter ``book/recsys/lmn.ipynb``) is a product-key memory (Lample et al., "Large Memory Layers with Product
Keys", NeurIPS 2019). Slot (a, b) of an n_r x n_c grid has the implicit key [K^r_a ; K^c_b] (row sub-key, then
column sub-key) and the value V_{a n_c + b}. For a query q = [q^r ; q^c] (split like the keys):

    s^r = q^r K^r^T  [n_r],   s^c = q^c K^c^T  [n_c]                                   eq-pk-score
    A = TopK(s^r, k),  B = TopK(s^c, k),   I = TopK_{(a, b) in A x B} (s^r_a + s^c_b)   eq-pk-topk
    w = softmax(s_I),  o = sum_{i in I} w_i V_i                                         eq-pk-read

eq-pk-topk is exact: the score of slot (a, b) is q . [K^r_a ; K^c_b] = s^r_a + s^c_b, and if a pair (a, b) is among
the k best of all N, every row a' in A with a' != a beats a with the same column, so a must be in A unless A
already holds k rows better than a, in which case (a, b) is beaten by k pairs (a', b) and is not in the top k.
The same holds for columns. So the k best of the k^2 candidates are the k best of all N slots (up to ties), found
with 2 sqrt(N) d_k / 2 + k^2 work per query instead of N d_k.

The read (eq-pk-read) is ``torch.nn.functional.embedding_bag(idx, V, per_sample_weights=w, mode="sum")``: one bag
of k rows per query, with ``sparse=True`` a gradient that touches only the selected rows (for
``torch.optim.SparseAdam``). The reads of a request depend only on the user side, so a request scoring C
candidates computes them once and gathers them for every candidate (:func:`per_request`).

Public functions validate their arguments and raise ``ValueError`` naming the argument, what was expected and
what was received. ``*_reference`` functions are the slow, obvious oracles of ``tests/kernels/test_memory.py``.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from kernels._validate import check_int, describe


def _check_keys(q: object, keys_r: object, keys_c: object, k: object) -> tuple[Tensor, Tensor, Tensor, int]:
    if not isinstance(q, Tensor) or q.ndim != 2 or not q.is_floating_point():
        raise ValueError(f"q: expected a floating-point tensor of shape [Q, d_k], received {describe(q)}")
    for name, key in (("keys_r", keys_r), ("keys_c", keys_c)):
        if not isinstance(key, Tensor) or key.ndim != 2 or key.dtype != q.dtype or key.shape[0] < 1:
            raise ValueError(f"{name}: expected a {q.dtype} tensor of shape [n, d_half] with n >= 1, "
                             f"received {describe(key)}")
    if keys_r.shape[1] + keys_c.shape[1] != q.shape[1]:
        raise ValueError(f"keys_r, keys_c: expected sub-key widths that add up to d_k = {q.shape[1]} (the width of q), "
                         f"received {keys_r.shape[1]} + {keys_c.shape[1]}")
    check_int("k", k, 1)
    n = keys_r.shape[0] * keys_c.shape[0]
    if k > n:
        raise ValueError(f"k: expected k <= N = n_r * n_c = {n}, received {k}")
    return q, keys_r, keys_c, k


def full_keys(keys_r: Tensor, keys_c: Tensor) -> Tensor:
    """The N = n_r * n_c implicit keys, materialised: row a * n_c + b is [K^r_a ; K^c_b]  -> [N, d_r + d_c]."""
    for name, key in (("keys_r", keys_r), ("keys_c", keys_c)):
        if not isinstance(key, Tensor) or key.ndim != 2 or not key.is_floating_point():
            raise ValueError(f"{name}: expected a floating-point tensor of shape [n, d_half], received {describe(key)}")
    if keys_c.dtype != keys_r.dtype:
        raise ValueError(f"keys_c: expected the dtype of keys_r ({keys_r.dtype}), received {keys_c.dtype}")
    n_r, n_c = keys_r.shape[0], keys_c.shape[0]
    return torch.cat([keys_r[:, None, :].expand(n_r, n_c, -1),
                      keys_c[None, :, :].expand(n_r, n_c, -1)], dim=2).reshape(n_r * n_c, -1)


def pkm_topk(q: Tensor, keys_r: Tensor, keys_c: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """eq-pk-score and eq-pk-topk: the k best slots for every query, by two sub-key GEMMs.

    q [Q, d_k]; keys_r [n_r, d_r] and keys_c [n_c, d_c] with d_r + d_c = d_k (q's first d_r columns meet the row
    sub-keys); k <= n_r * n_c. Returns (scores [Q, k], descending, differentiable in q and the keys; idx [Q, k]
    int64, slot a * n_c + b). Each axis keeps min(k, n) sub-keys, so the search stays exact on thin grids.
    """
    q, keys_r, keys_c, k = _check_keys(q, keys_r, keys_c, k)
    d_r, n_c = keys_r.shape[1], keys_c.shape[0]
    k_r, k_c = min(k, keys_r.shape[0]), min(k, n_c)
    s_r = q[:, :d_r] @ keys_r.t()                                     # eq-pk-score: [Q, d_r] @ [d_r, n_r] -> [Q, n_r]
    s_c = q[:, d_r:] @ keys_c.t()                                     #              [Q, d_c] @ [d_c, n_c] -> [Q, n_c]
    v_r, a = s_r.topk(k_r, dim=1)                                     # A: the k best rows      [Q, k_r]
    v_c, b = s_c.topk(k_c, dim=1)                                     # B: the k best columns   [Q, k_c]
    cand = (v_r[:, :, None] + v_c[:, None, :]).reshape(q.shape[0], k_r * k_c)   # s^r_a + s^c_b on A x B: [Q, k_r*k_c]
    scores, j = cand.topk(k, dim=1)                                   # eq-pk-topk: the k best of the k^2 candidates
    idx = a.gather(1, j // k_c) * n_c + b.gather(1, j % k_c)          # back to slot ids a * n_c + b: [Q, k]
    return scores, idx


def pkm_topk_reference(q: Tensor, keys_r: Tensor, keys_c: Tensor, k: int, chunk: int = 1024) -> tuple[Tensor, Tensor]:
    """Brute force: materialise the N full keys, score all of them (``chunk`` queries at a time), ``topk``.

    The naive form that eq-pk-topk replaces: N d_k multiply-adds per query and a [chunk, N] score matrix.
    """
    q, keys_r, keys_c, k = _check_keys(q, keys_r, keys_c, k)
    check_int("chunk", chunk, 1)
    keys = full_keys(keys_r, keys_c)                                  # [N, d_k]
    out_s, out_i = [], []
    for lo in range(0, q.shape[0], chunk):
        s, i = (q[lo:lo + chunk] @ keys.t()).topk(k, dim=1)            # [chunk, N] -> [chunk, k]
        out_s.append(s)
        out_i.append(i)
    if not out_s:
        return q.new_zeros(0, k), torch.zeros(0, k, dtype=torch.int64, device=q.device)
    return torch.cat(out_s), torch.cat(out_i)


def _check_bag(values: object, idx: object, w: object) -> tuple[Tensor, Tensor, Tensor]:
    if not isinstance(values, Tensor) or values.ndim != 2 or not values.is_floating_point():
        raise ValueError(f"values: expected a floating-point tensor of shape [N, d_v], received {describe(values)}")
    if not isinstance(idx, Tensor) or idx.ndim != 2 or idx.dtype != torch.int64:
        raise ValueError(f"idx: expected an int64 tensor of shape [Q, k], received {describe(idx)}")
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= values.shape[0]):
        raise ValueError(f"idx: expected slot ids in [0, {values.shape[0]}) (the rows of values), "
                         f"received ids from {int(idx.min())} to {int(idx.max())}")
    if not isinstance(w, Tensor) or tuple(w.shape) != tuple(idx.shape) or w.dtype != values.dtype:
        raise ValueError(f"w: expected a {values.dtype} tensor of shape {list(idx.shape)} (the shape of idx), "
                         f"received {describe(w)}")
    return values, idx, w


def weighted_bag(values: Tensor, idx: Tensor, w: Tensor, sparse: bool = True) -> Tensor:
    """eq-pk-read: o_q = sum_j w[q, j] values[idx[q, j]]  -> [Q, d_v], by ``F.embedding_bag`` (one bag per row).

    values [N, d_v], idx [Q, k] int64, w [Q, k]. With ``sparse=True`` the gradient of ``values`` is a sparse
    tensor holding only the selected rows (what ``torch.optim.SparseAdam`` steps); the [Q, k, d_v] gather is
    never materialised. The gradient of ``w`` is exact either way.
    """
    values, idx, w = _check_bag(values, idx, w)
    if not isinstance(sparse, bool):
        raise ValueError(f"sparse: expected a bool, received {type(sparse).__name__}")
    return F.embedding_bag(idx, values, per_sample_weights=w, mode="sum", sparse=sparse)


def weighted_bag_reference(values: Tensor, idx: Tensor, w: Tensor) -> Tensor:
    """eq-pk-read as a gather and a weighted sum: materialises [Q, k, d_v]; its backward writes a dense [N, d_v]
    gradient (the naive form)."""
    values, idx, w = _check_bag(values, idx, w)
    return (values[idx] * w[..., None]).sum(1)                        # [Q, k, d_v] -> [Q, d_v]


def per_request(read: Callable[..., Tensor], *request_inputs: Tensor, rows: Tensor) -> Tensor:
    """Request-level reuse: ``read`` runs once on the R requests' user-side inputs (each [R, ...]) and its output
    [R, ...] is gathered for the scored rows: ``rows`` [n] int64 names each row's request. The result equals
    ``read(*(x[rows] for x in request_inputs))`` (:func:`per_request_reference`) for any row-wise ``read``, with R
    instead of n memory reads."""
    if not callable(read):
        raise ValueError(f"read: expected a callable, received {type(read).__name__}")
    if not request_inputs:
        raise ValueError("request_inputs: expected at least one tensor of shape [R, ...], received none")
    R = None
    for i, x in enumerate(request_inputs):
        if not isinstance(x, Tensor) or x.ndim < 1 or (R is not None and x.shape[0] != R):
            raise ValueError(f"request_inputs[{i}]: expected a tensor of shape [R, ...]"
                             f"{'' if R is None else f' with R = {R}'}, received {describe(x)}")
        R = x.shape[0]
    if not isinstance(rows, Tensor) or rows.ndim != 1 or rows.dtype != torch.int64:
        raise ValueError(f"rows: expected an int64 tensor of shape [n], received {describe(rows)}")
    if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= R):
        raise ValueError(f"rows: expected request ids in [0, {R}), received ids from {int(rows.min())} to {int(rows.max())}")
    out = read(*request_inputs)
    if not isinstance(out, Tensor) or out.ndim < 1 or out.shape[0] != R:
        raise ValueError(f"read: expected it to return a tensor of shape [R, ...] with R = {R}, received {describe(out)}")
    return out.index_select(0, rows)                                  # [R, ...] -> [n, ...]


def per_request_reference(read: Callable[..., Tensor], *request_inputs: Tensor, rows: Tensor) -> Tensor:
    """The naive form: the user-side inputs repeated for every scored row, one read per row (n reads)."""
    return read(*(x[rows] for x in request_inputs))


def bench_cases(quick: bool = False) -> list:
    """``make bench``: product-key top-k against brute force over the materialised keys (and faiss
    ``IndexFlatIP`` on them) as N grows; the product-key search alone from N = 2^10 to 2^20 (flat up to the sqrt(N)
    sub-key GEMMs); the read as gather-sum vs ``embedding_bag``; one training step of a 2^20-row value table with
    dense Adam vs SparseAdam; per-request reuse vs one read per candidate."""
    from kernels.bench import Case

    g = torch.Generator().manual_seed(0)
    d_k, k = 32, 8
    Q = 256 if quick else 1024
    cases = []

    def keys(n: int) -> tuple[Tensor, Tensor]:
        m = int(math.isqrt(n))
        return torch.randn(m, d_k // 2, generator=g), torch.randn(n // m, d_k // 2, generator=g)

    q = torch.randn(Q, d_k, generator=g)
    for n in ([2**10] if quick else [2**10, 2**14, 2**16]):
        kr, kc = keys(n)
        fns = {"brute force (materialised keys)": lambda kr=kr, kc=kc: pkm_topk_reference(q, kr, kc, k, chunk=256),
               "product keys (pkm_topk)": lambda kr=kr, kc=kc: pkm_topk(q, kr, kc, k)}
        try:
            import faiss

            index = faiss.IndexFlatIP(d_k)
            index.add(full_keys(kr, kc).numpy())
            qn = q.numpy()
            fns["faiss IndexFlatIP"] = lambda index=index: index.search(qn, k)
        except ImportError:  # pragma: no cover - faiss is in requirements.txt
            pass
        cases.append(Case(f"top-{k} search, Q={Q} d_k={d_k} N=2^{int(math.log2(n))}", fns,
                          baseline="brute force (materialised keys)",
                          flops={"brute force (materialised keys)": 2.0 * Q * n * d_k, "faiss IndexFlatIP": 2.0 * Q * n * d_k,
                                 "product keys (pkm_topk)": 2.0 * Q * 2 * math.isqrt(n) * d_k / 2}))
    sweep = {}
    for e in ([10, 14] if quick else [10, 14, 18, 20]):
        kr, kc = keys(2**e)
        sweep[f"pkm_topk N=2^{e}"] = lambda kr=kr, kc=kc: pkm_topk(q, kr, kc, k)
    cases.append(Case(f"product-key search alone as N grows, Q={Q} d_k={d_k} k={k}", sweep, baseline="pkm_topk N=2^10"))

    n_v, d_v = (2**14, 32) if quick else (2**20, 32)
    idx = torch.randint(0, n_v, (Q * 5, k), generator=g)
    w = torch.softmax(torch.randn(Q * 5, k, generator=g), 1)
    V = torch.randn(n_v, d_v, generator=g)
    cases.append(Case(f"weighted read, {Q * 5} bags of {k} rows from [{n_v}, {d_v}]", {
        "gather + weighted sum": lambda: weighted_bag_reference(V, idx, w),
        "embedding_bag (weighted_bag)": lambda: weighted_bag(V, idx, w)}, baseline="gather + weighted sum"))

    def step_fn(sparse: bool):
        table = torch.nn.Parameter(torch.randn(n_v, d_v, generator=g) * 0.1)
        opt = (torch.optim.SparseAdam if sparse else torch.optim.Adam)([table], lr=1e-3)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            weighted_bag(table, idx, w, sparse=sparse).square().sum().backward()
            opt.step()
        return step

    cases.append(Case(f"training step of a [{n_v}, {d_v}] value table, {Q * 5 * k} rows read", {
        "dense grad + Adam": step_fn(False), "sparse grad + SparseAdam": step_fn(True)}, baseline="dense grad + Adam"))

    R, C, L = (64, 10, 10) if quick else (512, 100, 10)
    kr, kc = keys(2**12)
    Wq = torch.randn(d_k, d_k, generator=g) / math.sqrt(d_k)
    V12 = torch.randn(2**12, d_v, generator=g)
    user = torch.randn(R, L, d_k, generator=g)                        # one query per behaviour of each request

    def read(u: Tensor) -> Tensor:                                    # [r, L, d_k] -> [r, L, d_v]
        qq = F.layer_norm(u.reshape(-1, d_k) @ Wq, (d_k,))
        s, i = pkm_topk(qq, kr, kc, k)
        return weighted_bag(V12, i, torch.softmax(s, 1), sparse=False).view(u.shape[0], L, d_v)

    rows = torch.arange(R).repeat_interleave(C)
    cases.append(Case(f"memory reads for {R} requests x {C} candidates (L={L} reads each)", {
        "one read per candidate": lambda: per_request_reference(read, user, rows=rows),
        "once per request (per_request)": lambda: per_request(read, user, rows=rows)},
        baseline="one read per candidate"))
    return cases
