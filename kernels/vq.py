"""Vector-quantisation index kernels for Streaming VQ (Bin, Cui et al., "Real-time Indexing for Large-scale
Recommendation by Streaming Vector Quantization Retriever", KDD 2025, arXiv 2501.08695).

The paper's equations are known to this book through a secondary restatement (see the chapter); numbering
follows the chapter ``book/recsys/streaming_vq.ipynb``.

* Nearest-codeword assignment, optionally size-aware (eq-assign):

      k*(v) = argmin_k  r_k ||v - e_k||^2,      ||v - e_k||^2 = ||v||^2 - 2 v.e_k + ||e_k||^2,

  computed per row-chunk with ONE GEMM against precomputed codeword norms. Without the size factor r the
  ||v||^2 term is constant per row and dropped; with it, it is kept (r_k multiplies the whole distance).
  Inner-product search (``metric="ip"``) ranks by v.e_k instead: user -> top clusters (eq-serve).
* Popularity-corrected EMA of the codebook (eq-ema), with numerator W, count C and codewords e_k = W_k / C_k:

      W_k <- alpha W_k + (1 - alpha) sum_{j -> k} w_j v_j,     C_k <- alpha C_k + (1 - alpha) sum_{j -> k} w_j,

  done with two ``index_add_`` calls (w_j = delta_j^beta is the caller's choice).
* :class:`StreamingIndex` puts these together into the index of the paper: assign every appearing item,
  write the item -> cluster map, update the codebook (Eqs. eq-assign, eq-delta, eq-ema, eq-balance).
* Serving (eq-merge): inverted lists in CSR form, each sorted by the item bias b_i, and the exact top-N of
  u.e_{k(i)} + b_i over the selected clusters by a K-way merge. Because u.e_k is constant inside a list, the
  first N items of every list are the only candidates, so the vectorised merge scores at most N items per
  list and sorts them once; :func:`merge_topn_reference` is the heap merge of the paper's description.

The top-1 reduction runs through NumPy's SIMD ``argmax`` on the CPU (PyTorch's ``argmax`` is a scalar loop there);
the GEMM is PyTorch's. ``impl="native"`` computes the same assignment in the book's compiled kernel
(``kernels.native.assign``), so that the [N, K] score matrix is never written out: on a CPU with AVX-512 and a
codebook of at most 256 KiB, the scores of a few rows at a time are accumulated in registers and the running
argmax taken there (no GEMM); otherwise scores tile by tile by GEMM, codeword-major, with the running argmax taken
while each tile is in cache. Without a compiler it falls back to the eager path with one warning. Chapters compute
with the eager path, so that their outputs do not depend on a compiler.

Every public function validates its arguments and raises ``ValueError`` naming the argument, what was
expected and what was received. Slow, obvious references (``*_reference``) are the tests' oracles; the tests
also compare search results with ``faiss.IndexFlatIP`` / ``faiss.IndexFlatL2``.
"""

from __future__ import annotations

import heapq

import numpy as np
import torch
from torch import Tensor

from kernels._validate import check_int, describe

METRICS = ("l2", "ip")


def _check_matrix(name: str, x: object, dim: int | None = None, *, allow_empty: bool = True) -> Tensor:
    if not isinstance(x, Tensor) or x.ndim != 2 or x.dtype != torch.float32:
        want = f"[N, {dim}]" if dim is not None else "[N, d]"
        raise ValueError(f"{name}: expected a float32 tensor of shape {want}, received {describe(x)}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{name}: expected shape [N, {dim}] (the codebook's dimension), received shape {tuple(x.shape)}")
    if x.shape[1] < 1:
        raise ValueError(f"{name}: expected at least one column, received shape {tuple(x.shape)}")
    if not allow_empty and x.shape[0] < 1:
        raise ValueError(f"{name}: expected at least one row (a non-empty codebook), received shape {tuple(x.shape)}")
    # one vectorised sum is non-finite if any entry is (or, rarely, if it overflows): only then count exactly
    if x.numel() and not torch.isfinite(x.sum()) and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name}: expected finite values, received {int((~torch.isfinite(x)).sum())} non-finite entries")
    return x


def _check_vector(name: str, x: object, n: int, dtype: torch.dtype | tuple[torch.dtype, ...]) -> Tensor:
    dtypes = dtype if isinstance(dtype, tuple) else (dtype,)
    if not isinstance(x, Tensor) or x.ndim != 1 or x.shape[0] != n or x.dtype not in dtypes:
        want = " or ".join(str(d) for d in dtypes)
        raise ValueError(f"{name}: expected a {want} tensor of shape [{n}], received {describe(x)}")
    if x.is_floating_point() and x.numel() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name}: expected finite values, received {int((~torch.isfinite(x)).sum())} non-finite entries")
    return x


def _check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise ValueError(f"metric: expected one of {METRICS}, received {metric!r}")
    return metric


def _check_scale(scale: Tensor | None, K: int, metric: str) -> Tensor | None:
    if scale is None:
        return None
    if metric != "l2":
        raise ValueError(f"scale: the size factor multiplies a squared L2 distance; expected None for metric {metric!r}")
    _check_vector("scale", scale, K, torch.float32)
    if K and float(scale.min()) <= 0:
        raise ValueError(f"scale: expected positive factors r_k > 0, received min {float(scale.min()):.3g}")
    return scale


def default_chunk(K: int) -> int:
    """Rows per GEMM chunk: the [chunk, K] score block stays about 2 MB (cache sized), 512..4096 rows."""
    return max(512, min(4096, (1 << 19) // max(K, 1)))


def _row_argmax(S: Tensor) -> Tensor:
    """First-occurrence argmax over the last dim. On the CPU, ``Tensor.argmax`` is a scalar loop (about 1 ns per
    element at one thread) while NumPy's ``argmax`` over contiguous rows is SIMD-vectorised (5-15x faster here),
    so a contiguous CPU block goes through NumPy, zero-copy; ties resolve to the first index either way."""
    if S.device.type != "cpu" or not S.is_contiguous():
        return S.argmax(1)
    return torch.from_numpy(np.argmax(S.detach().numpy(), axis=1).astype(np.int64, copy=False))


def _scores(xc: Tensor, E: Tensor, metric: str, bias: Tensor | None, scale: Tensor | None) -> Tensor:
    """Score block to MAXIMISE for one chunk: x.e (ip); x.e - ||e||^2/2 (l2, no scale); -r ||x - e||^2 (l2, r)."""
    if metric == "ip":
        return xc @ E.T
    if scale is None:
        return torch.addmm(bias, xc, E.T)                              # bias = -||e||^2 / 2
    S = torch.addmm(bias, xc, E.T)                                     # bias = -r ||e||^2, E pre-scaled by 2 r
    return S.addr_((xc * xc).sum(1), scale, alpha=-1.0)                # - r_k ||x||^2


def _prepare(E: Tensor, metric: str, scale: Tensor | None) -> tuple[Tensor, Tensor | None]:
    if metric == "ip":
        return E, None
    sq = (E * E).sum(1)
    if scale is None:
        return E, -0.5 * sq
    return E * (2.0 * scale)[:, None], -scale * sq


IMPLS = ("eager", "native")
_warned_native = False


def native_block(K: int) -> int:
    """Rows per tile of the native kernel: the [K, block] score tile stays about 1 MB, 256..2048 rows."""
    return max(256, min(2048, (1 << 18) // max(K, 1)))


def _use_native(impl: str, scale: Tensor | None) -> bool:
    """Whether to take the compiled path; warns once when it was asked for and cannot be built."""
    global _warned_native
    if impl not in IMPLS:
        raise ValueError(f"impl: expected one of {IMPLS}, received {impl!r}")
    if impl == "eager" or scale is not None:   # the size-aware score needs the per-row ||x||^2 term: eager only
        return False
    from kernels import native

    if native.available():
        return True
    if not _warned_native:
        import warnings

        warnings.warn(f"vq.nearest_codeword(impl='native'): {native.status()}", stacklevel=3)
        _warned_native = True
    return False


def nearest_codeword(x: Tensor, E: Tensor, metric: str = "l2", scale: Tensor | None = None,
                     chunk: int | None = None, impl: str = "eager") -> tuple[Tensor, Tensor]:
    """Top-1 codeword of every row of ``x`` [N, d] among ``E`` [K, d] (Eq. eq-assign): (index int64 [N], value [N]).

    ``metric="l2"``: value is the squared distance ||x - e||^2 (clamped at 0); with ``scale`` r [K] the index
    minimises r_k ||x - e_k||^2 and the value is that product. ``metric="ip"``: the index maximises x.e_k and the
    value is the inner product. Ties go to the lowest index. One GEMM per chunk of ``chunk`` rows.
    ``impl="native"``: the compiled single-pass kernel (its path chosen from K and d by
    ``kernels/csrc/native.cpp: assign_path``; ``chunk`` rows per tile on the GEMM path, default
    :func:`native_block`); with ``scale``, or without a compiler, the eager path.
    """
    metric = _check_metric(metric)
    _check_matrix("E", E, allow_empty=False)
    K, d = E.shape
    _check_matrix("x", x, d)
    scale = _check_scale(scale, K, metric)
    if chunk is not None:
        chunk = check_int("chunk", chunk, 1)
    Ew, bias = _prepare(E, metric, scale)
    N = x.shape[0]
    if _use_native(impl, scale):
        from kernels import native

        idx, val = native.assign(x.contiguous(), Ew.contiguous(), bias, chunk or native_block(K))
    else:
        chunk = chunk or default_chunk(K)
        idx = torch.empty(N, dtype=torch.int64)
        val = torch.empty(N, dtype=torch.float32)
        for s in range(0, N, chunk):
            xc = x[s:s + chunk]
            S = _scores(xc, Ew, metric, bias, scale)
            k = _row_argmax(S)
            idx[s:s + chunk] = k
            val[s:s + chunk] = S.gather(1, k[:, None]).squeeze(1)
    if metric == "l2":
        val = ((x * x).sum(1) - 2.0 * val) if scale is None else -val
        val.clamp_(min=0.0)
    return idx, val


def codeword_search(x: Tensor, E: Tensor, k: int, metric: str = "ip", scale: Tensor | None = None,
                    chunk: int | None = None) -> tuple[Tensor, Tensor]:
    """Top-``k`` codewords per row, best first, as faiss returns them: (values [N, k], indices int64 [N, k]).

    ``metric="ip"``: largest inner products (user -> top clusters, Eq. eq-serve), like ``faiss.IndexFlatIP``;
    ``metric="l2"``: smallest squared distances (times ``scale`` if given), like ``faiss.IndexFlatL2``.
    """
    metric = _check_metric(metric)
    _check_matrix("E", E, allow_empty=False)
    K, d = E.shape
    _check_matrix("x", x, d)
    check_int("k", k, 1)
    if k > K:
        raise ValueError(f"k: expected 1 <= k <= K = {K} codewords, received {k}")
    scale = _check_scale(scale, K, metric)
    chunk = default_chunk(K) if chunk is None else check_int("chunk", chunk, 1)
    Ew, bias = _prepare(E, metric, scale)
    vals, idxs = [], []
    for s in range(0, x.shape[0], chunk):
        xc = x[s:s + chunk]
        v, i = torch.topk(_scores(xc, Ew, metric, bias, scale), k, dim=1)
        if metric == "l2":
            v = ((xc * xc).sum(1, keepdim=True) - 2.0 * v) if scale is None else -v
            v = v.clamp_(min=0.0)
        vals.append(v)
        idxs.append(i)
    if not vals:
        return torch.empty(0, k), torch.empty(0, k, dtype=torch.int64)
    return torch.cat(vals), torch.cat(idxs)


def top_clusters(u: Tensor, E: Tensor, m: int) -> tuple[Tensor, Tensor]:
    """The ``m`` clusters with the largest u.e_k for every user row (Eq. eq-serve): (scores, ids) [B, m]."""
    return codeword_search(u, E, m, metric="ip")


def nearest_codeword_reference(x: Tensor, E: Tensor, metric: str = "l2", scale: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Slow, obvious oracle: broadcast differences in float64, then argmin / argmax (N K d memory)."""
    _check_matrix("E", E, allow_empty=False)
    _check_matrix("x", x, E.shape[1])
    _check_metric(metric)
    x64, E64 = x.double(), E.double()
    if metric == "ip":
        S = (x64[:, None, :] * E64[None, :, :]).sum(-1)
        v, i = S.max(1)
        return i, v.float()
    D = ((x64[:, None, :] - E64[None, :, :]) ** 2).sum(-1)
    if scale is not None:
        D = D * scale.double()[None, :]
    v, i = D.min(1)
    return i, v.float()


def size_factor(counts: Tensor, s: float, floor: float = 0.0) -> Tensor:
    """Size-aware factor of Eq. eq-balance: r_k = clamp(s c_k / mean(c), floor, 1).

    A cluster holding less than 1/s of the mean count looks nearer (r_k < 1) and attracts items; ``floor`` > 0
    keeps a nearly empty cluster from attracting everything.
    """
    if not isinstance(counts, Tensor) or counts.ndim != 1 or counts.numel() < 1 or not counts.is_floating_point():
        raise ValueError(f"counts: expected a non-empty float tensor of shape [K], received {describe(counts)}")
    if not bool(torch.isfinite(counts).all()) or float(counts.min()) < 0:
        raise ValueError("counts: expected finite, non-negative counts")
    if not s > 0:
        raise ValueError(f"s: expected a positive number, received {s!r}")
    if not 0 <= floor <= 1:
        raise ValueError(f"floor: expected 0 <= floor <= 1, received {floor!r}")
    mean = counts.mean().clamp(min=torch.finfo(counts.dtype).tiny)
    return (s * counts / mean).clamp(min=floor, max=1.0)


def _check_ema(W: Tensor, C: Tensor, idx: Tensor, vecs: Tensor, wgt: Tensor, alpha: float) -> None:
    _check_matrix("W", W, allow_empty=False)
    K, d = W.shape
    _check_vector("C", C, K, torch.float32)
    _check_matrix("vecs", vecs, d)
    B = vecs.shape[0]
    _check_vector("idx", idx, B, torch.int64)
    _check_vector("wgt", wgt, B, torch.float32)
    if B and (int(idx.min()) < 0 or int(idx.max()) >= K):
        raise ValueError(f"idx: expected cluster ids in [0, {K}), received min {int(idx.min())}, max {int(idx.max())}")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha: expected 0 <= alpha <= 1, received {alpha!r}")


def ema_update(W: Tensor, C: Tensor, idx: Tensor, vecs: Tensor, wgt: Tensor, alpha: float) -> None:
    """Eq. eq-ema in place: W <- alpha W + (1 - alpha) index_add(w v), C <- alpha C + (1 - alpha) index_add(w).

    ``idx`` [B] int64 are the clusters the batch's items were assigned to, ``vecs`` [B, d] their vectors and
    ``wgt`` [B] their weights (delta^beta for the popularity correction). Rows never hit only decay.
    """
    _check_ema(W, C, idx, vecs, wgt, alpha)
    w = (1.0 - alpha) * wgt
    W.mul_(alpha).index_add_(0, idx, vecs * w[:, None])
    C.mul_(alpha).index_add_(0, idx, w)


def ema_update_reference(W: Tensor, C: Tensor, idx: Tensor, vecs: Tensor, wgt: Tensor, alpha: float) -> None:
    """Per-item Python loop of Eq. eq-ema, in place (the test oracle)."""
    _check_ema(W, C, idx, vecs, wgt, alpha)
    W *= alpha
    C *= alpha
    for j in range(vecs.shape[0]):
        k = int(idx[j])
        W[k] += (1.0 - alpha) * float(wgt[j]) * vecs[j]
        C[k] += (1.0 - alpha) * float(wgt[j])


def codewords(W: Tensor, C: Tensor, eps: float = 1e-12) -> Tensor:
    """e_k = W_k / C_k (a count below ``eps`` is treated as ``eps``)."""
    _check_matrix("W", W, allow_empty=False)
    _check_vector("C", C, W.shape[0], torch.float32)
    return W / C.clamp(min=eps)[:, None]


class StreamingIndex:
    """The Streaming VQ index (Eqs. eq-assign, eq-delta, eq-ema, eq-balance): no training phase, no rebuild.

    Every step, each distinct item that appears is assigned to its nearest codeword (L2, scaled by the
    size factor r_k of Eq. eq-balance when ``size_s`` is given) and written into the item -> cluster map
    ``assign`` at once; the codewords then follow by the EMA of Eq. eq-ema with weights delta^beta, where
    delta is the number of steps since the item was last seen (``delta0`` for a first appearance).
    """

    def __init__(self, init: Tensor, n_items: int, alpha: float, beta: float, delta0: float,
                 size_s: float | None = None, size_floor: float = 0.0) -> None:
        _check_matrix("init", init, allow_empty=False)
        check_int("n_items", n_items, 1)
        if not delta0 > 0:
            raise ValueError(f"delta0: expected a positive number of steps, received {delta0!r}")
        self.W, self.C = init.clone(), torch.ones(init.shape[0])
        self.alpha, self.beta, self.delta0 = alpha, beta, delta0
        self.size_s, self.size_floor = size_s, size_floor
        self.last_seen = torch.full((n_items,), -1, dtype=torch.int64)
        self.assign = torch.full((n_items,), -1, dtype=torch.int64)     # the serving index: -1 = never seen

    def codewords(self) -> Tensor:
        return codewords(self.W, self.C)

    def step(self, ids: Tensor, vecs: Tensor, t: int) -> Tensor:
        """One batch at step ``t``: ``ids`` [B] distinct int64 item ids, ``vecs`` [B, d] their vectors.
        Returns the clusters [B] they were assigned to; ``assign[ids]`` is written in this same call (the real-time
        index write). Repeated ids raise ``ValueError``: the caller merges repeats of an item within a batch."""
        _check_matrix("vecs", vecs, self.W.shape[1])
        _check_vector("ids", ids, vecs.shape[0], torch.int64)
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.assign.shape[0]):
            raise ValueError(f"ids: expected item ids in [0, {self.assign.shape[0]}), received min {int(ids.min())}, "
                             f"max {int(ids.max())}")
        n_distinct = int(torch.unique(ids).numel())
        if n_distinct != ids.numel():       # a repeated id would enter Eq. eq-ema twice in one step
            raise ValueError(f"ids: expected distinct item ids (merge repeats within a batch first), received "
                             f"{ids.numel()} ids with {ids.numel() - n_distinct} repeats")
        r = size_factor(self.C, self.size_s, self.size_floor) if self.size_s is not None else None   # eq-balance
        k, _ = nearest_codeword(vecs, self.codewords(), "l2", scale=r)                               # eq-assign
        last = self.last_seen[ids]
        delta = torch.where(last < 0, torch.tensor(float(self.delta0)), (t - last).float())                 # eq-delta
        ema_update(self.W, self.C, k, vecs, delta.pow(self.beta), self.alpha)                        # eq-ema
        self.last_seen[ids], self.assign[ids] = t, k
        return k


def opened_clusters(scores: Tensor, sizes: Tensor, budget: int) -> Tensor:
    """Which clusters each user opens at a candidate budget (Eq. eq-serve): [U, K] bool.

    ``scores`` [U, K] are u.e_k; clusters are opened best first (stable on ties) until at least ``budget``
    items are gathered (:func:`probes_for_budget`)."""
    _check_matrix("scores", scores)
    order = torch.argsort(scores, dim=1, descending=True, stable=True)
    need = probes_for_budget(order, sizes, budget)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(order.shape[1]).expand_as(order))
    return rank < need[:, None]


def inverted_lists(assign: Tensor, K: int, key: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """CSR inverted lists of an item -> cluster map: (order [N], offsets [K + 1]).

    Items of cluster k are ``order[offsets[k]:offsets[k + 1]]``, sorted by ``key`` descending (ties by item id),
    or by item id when ``key`` is None. Items with ``assign < 0`` (not yet indexed) are left out.
    """
    check_int("K", K, 1)
    if not isinstance(assign, Tensor) or assign.ndim != 1 or assign.dtype != torch.int64:
        raise ValueError(f"assign: expected an int64 tensor of shape [N], received {describe(assign)}")
    N = assign.shape[0]
    if N and int(assign.max()) >= K:
        raise ValueError(f"assign: expected cluster ids < K = {K} (or -1), received max {int(assign.max())}")
    ids = torch.arange(N)
    if key is not None:
        _check_vector("key", key, N, (torch.float32, torch.float64))
        ids = ids[torch.argsort(key, descending=True, stable=True)]    # by key desc, ties by id (stable)
    live = ids[assign[ids] >= 0]
    order = live[torch.argsort(assign[live], stable=True)]             # group by cluster, keep the key order
    counts = torch.bincount(assign[live], minlength=K)
    offsets = torch.zeros(K + 1, dtype=torch.int64)
    offsets[1:] = counts.cumsum(0)
    return order, offsets


def _check_merge(clusters: Tensor, cluster_scores: Tensor, order: Tensor, offsets: Tensor, bias: Tensor, n: int) -> None:
    if not isinstance(offsets, Tensor) or offsets.ndim != 1 or offsets.dtype != torch.int64 or offsets.numel() < 2:
        raise ValueError(f"offsets: expected an int64 tensor of shape [K + 1], received {describe(offsets)}")
    K = offsets.numel() - 1
    if not isinstance(order, Tensor) or order.ndim != 1 or order.dtype != torch.int64 or order.numel() != int(offsets[-1]):
        raise ValueError(f"order: expected an int64 tensor of shape [{int(offsets[-1])}], received {describe(order)}")
    if not isinstance(clusters, Tensor) or clusters.ndim != 1 or clusters.dtype != torch.int64:
        raise ValueError(f"clusters: expected an int64 tensor of shape [m], received {describe(clusters)}")
    if clusters.numel() and (int(clusters.min()) < 0 or int(clusters.max()) >= K):
        raise ValueError(f"clusters: expected ids in [0, {K}), received min {int(clusters.min())}, max {int(clusters.max())}")
    _check_vector("cluster_scores", cluster_scores, clusters.numel(), torch.float32)
    if not isinstance(bias, Tensor) or bias.ndim != 1 or bias.dtype != torch.float32:
        raise ValueError(f"bias: expected a float32 tensor of shape [N items], received {describe(bias)}")
    if order.numel() and int(order.max()) >= bias.numel():
        raise ValueError(f"bias: expected at least {int(order.max()) + 1} entries, received {bias.numel()}")
    check_int("n", n, 1)


def merge_topn(clusters: Tensor, cluster_scores: Tensor, order: Tensor, offsets: Tensor, bias: Tensor,
               n: int) -> tuple[Tensor, Tensor]:
    """Exact top-``n`` items of score(i) = cluster_score[k(i)] + bias[i] over the selected ``clusters`` (Eq. eq-merge).

    Lists must be sorted by ``bias`` descending (from :func:`inverted_lists` with ``key=bias``). The score is
    constant plus bias inside a list, so only the first n items of each list can make the top n: score them
    and sort them once. Returns (item ids, scores), best first; ties by item id, as in the heap merge.
    """
    _check_merge(clusters, cluster_scores, order, offsets, bias, n)
    starts, ends = offsets[clusters], offsets[clusters + 1]
    take = (ends - starts).clamp(max=n)
    if int(take.sum()) == 0:
        return torch.empty(0, dtype=torch.int64), torch.empty(0)
    rep = torch.repeat_interleave(torch.arange(clusters.numel()), take)
    first = torch.repeat_interleave(take.cumsum(0) - take, take)
    pos = starts[rep] + torch.arange(rep.numel()) - first
    items = order[pos]
    scores = cluster_scores[rep] + bias[items]
    by_id = torch.argsort(items)                                           # ties by item id: stable sort
    items, scores = items[by_id], scores[by_id]
    top = torch.argsort(scores, descending=True, stable=True)[:n]
    return items[top], scores[top]


def merge_topn_reference(clusters: Tensor, cluster_scores: Tensor, order: Tensor, offsets: Tensor, bias: Tensor,
                         n: int) -> tuple[Tensor, Tensor]:
    """The heap K-way merge of the paper's serving description (one head per selected list), in Python."""
    _check_merge(clusters, cluster_scores, order, offsets, bias, n)
    cs, off, od, b = cluster_scores.tolist(), offsets.tolist(), order.tolist(), bias.tolist()
    score = lambda j, item: float(torch.tensor(cs[j], dtype=torch.float32) + torch.tensor(b[item], dtype=torch.float32))
    heap = []
    for j, c in enumerate(clusters.tolist()):
        if off[c] < off[c + 1]:
            item = od[off[c]]
            heap.append((-score(j, item), item, j, off[c]))
    heapq.heapify(heap)
    out_i, out_s = [], []
    while heap and len(out_i) < n:
        s, item, j, p = heapq.heappop(heap)
        out_i.append(item)
        out_s.append(-s)
        c = int(clusters[j])
        if p + 1 < off[c + 1]:
            nxt = od[p + 1]
            heapq.heappush(heap, (-score(j, nxt), nxt, j, p + 1))
    return torch.tensor(out_i, dtype=torch.int64), torch.tensor(out_s, dtype=torch.float32)


def probes_for_budget(cluster_order: Tensor, sizes: Tensor, budget: int) -> Tensor:
    """How many of each user's ranked clusters to open so that at least ``budget`` items are gathered
    (whole clusters, in score order; all K if the index holds fewer items). ``cluster_order`` [U, K] int64 are
    cluster ids best first, ``sizes`` [K] items per cluster; returns [U] int64 in 1..K."""
    if not isinstance(cluster_order, Tensor) or cluster_order.ndim != 2 or cluster_order.dtype != torch.int64:
        raise ValueError(f"cluster_order: expected an int64 tensor of shape [U, K], received {describe(cluster_order)}")
    K = cluster_order.shape[1]
    _check_vector("sizes", sizes, K, torch.int64)
    check_int("budget", budget, 1)
    cum = sizes[cluster_order].cumsum(1)                                # [U, K] items gathered after j + 1 clusters
    need = (cum < budget).sum(1) + 1
    return need.clamp(max=K)


def bench_cases(quick: bool = False) -> list:
    """``make bench``: top-1 assignment (Eq. eq-assign), naive ``torch.cdist`` + argmin vs the chunked GEMM vs
    faiss ``IndexFlatIP`` / ``IndexFlatL2`` exhaustive search, at one thread, over a few (N, K, d)."""
    import faiss

    from kernels import native
    from kernels.bench import Case, Target

    faiss.omp_set_num_threads(torch.get_num_threads())
    configs = [(20_000, 64, 32), (20_000, 1024, 32)] if quick else \
        [(100_000, 64, 32), (100_000, 256, 64), (100_000, 1024, 32), (20_000, 1024, 64)]
    cases = []
    for N, K, d in configs:
        g = torch.Generator().manual_seed(N + K + d)
        x = torch.randn(N, d, generator=g)
        E = torch.randn(K, d, generator=g)
        xn, En = x.numpy(), E.numpy()
        ip, l2 = faiss.IndexFlatIP(d), faiss.IndexFlatL2(d)
        ip.add(En)
        l2.add(En)
        cases.append(Case(f"top-1 codeword, N={N:,}, K={K}, d={d}", {
            "torch.cdist + argmin": lambda x=x, E=E: torch.cdist(x, E).argmin(1),
            "fast ip (GEMM)": lambda x=x, E=E: nearest_codeword(x, E, "ip"),
            "fast l2 (GEMM + norms)": lambda x=x, E=E: nearest_codeword(x, E, "l2"),
            **({"native ip (fused argmax)": lambda x=x, E=E: nearest_codeword(x, E, "ip", impl="native"),
                "native l2 (fused argmax)": lambda x=x, E=E: nearest_codeword(x, E, "l2", impl="native")}
               if native.available() else {}),
            "faiss IndexFlatIP": lambda xn=xn, ip=ip: ip.search(xn, 1),
            "faiss IndexFlatL2": lambda xn=xn, l2=l2: l2.search(xn, 1),
        }, baseline="torch.cdist + argmin", flops=2.0 * N * K * d,
            targets=[Target(f"{'native' if native.available() else 'fast'} {m} "
                            f"({'fused argmax' if native.available() else 'GEMM' if m == 'ip' else 'GEMM + norms'})",
                            f"faiss IndexFlat{m.upper()}", 1.0, "the same FLOPs as faiss; the argmax taken in "
                            "registers or on each tile in cache instead of a second pass") for m in ("ip", "l2")]))
    return cases
