"""Masked multi-query target attention and the split-weight DIN scorer (ADS, Chai et al., "Adaptive Domain
Scaling for Personalized Sequential Modeling in Recommenders", SIGIR 2025, arXiv 2502.05523; DIN, Zhou et al.,
"Deep Interest Network for Click-Through Rate Prediction", KDD 2018).

A candidate item (or, in ADS, several queries generated from it) reads a user's behaviour sequence. With M
queries q_{b,m} in R^d, L keys k_{b,l} in R^d, values v_{b,l} in R^{d_v} and a padding mask mu_{b,l} in {0, 1}
(1 = a real behaviour), the chapter ``book/recsys/ads.ipynb`` writes

    S_{b,m,l}     = s * q_{b,m} . k_{b,l}            (dot scorer, s = 1 / sqrt(d) by default)     eq-ta-score
    alpha_{b,m,l} = mu_{b,l} exp(S_{b,m,l}) / sum_l' mu_{b,l'} exp(S_{b,m,l'}),   0 if sum_l mu_{b,l} = 0
    O_{b,m}       = sum_l alpha_{b,m,l} v_{b,l}                                                  eq-ta-pool

The guard in the second line is the book's choice: a user with no behaviour at all (every position padding)
gets weights and output exactly zero, not the NaN that a softmax over only -inf gives.

DIN's "activation unit" scores a (query, key) pair with a small MLP on their concatenation:

    S_{b,m,l} = w_2 . act( W_1 [q; k; q - k; q * k] + b_1 ) + b_2,     W_1 = [W_q | W_k | W_d | W_p] in R^{h x 4d}

Materialising the concatenation costs B*M*L*4d numbers. Splitting W_1 by blocks gives the same hidden layer
without it (eq-din-split):

    W_1 [q; k; q - k; q * k] = (W_q + W_d) q  +  (W_k - W_d) k  +  W_p (q * k),

a per-query term [B, M, h] and a per-key term [B, L, h], broadcast-added, plus the product term: the
elementwise products q * k [B, M, L, d] (a quarter of the concatenation) through one GEMM with W_p^T. The
GEMM does a quarter of the concatenated form's multiply-adds.

Public functions validate their arguments and raise ``ValueError`` naming the argument, what was expected and
what was received. ``*_reference`` functions are the slow, obvious oracles of ``tests/kernels/test_target_attention.py``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from kernels._validate import describe

IMPLS = ("bmm", "sdpa")
ACTS = ("relu", "sigmoid", "identity")


def _check_3d(name: str, x: object, want: str, B: int | None = None, last: int | None = None) -> Tensor:
    if not isinstance(x, Tensor) or x.ndim != 3 or not x.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor of shape {want}, received {describe(x)}")
    if B is not None and x.shape[0] != B:
        raise ValueError(f"{name}: expected shape {want} with B={B} (the batch of q), received shape {tuple(x.shape)}")
    if last is not None and x.shape[2] != last:
        raise ValueError(f"{name}: expected shape {want} with last dimension {last}, received shape {tuple(x.shape)}")
    return x


def _check_mask(mask: object, B: int, L: int) -> Tensor | None:
    if mask is None:
        return None
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != (B, L):
        raise ValueError(f"mask: expected a bool tensor of shape [B, L] = [{B}, {L}] (True = a real item), "
                         f"received {describe(mask)}")
    return mask


def _check_scale(scale: object, d: int) -> float:
    if scale is None:
        return 1.0 / math.sqrt(d)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise ValueError(f"scale: expected a finite number or None (1/sqrt(d)), received {scale!r}")
    return float(scale)


def _check_qkv(q: object, k: object, v: object, mask: object) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    q = _check_3d("q", q, "[B, M, d]")
    B, _, d = q.shape
    k = _check_3d("k", k, "[B, L, d]", B, d)
    v = _check_3d("v", v, "[B, L, d_v]", B)
    if v.shape[1] != k.shape[1]:
        raise ValueError(f"v: expected shape [B, L, d_v] with L={k.shape[1]} (the length of k), received shape {tuple(v.shape)}")
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"k, v: expected the dtype of q ({q.dtype}), received {k.dtype} and {v.dtype}")
    return q, k, v, _check_mask(mask, B, k.shape[1])


def masked_softmax(scores: Tensor, mask: Tensor | None) -> Tensor:
    """alpha of eq-ta-pool: softmax of ``scores`` [B, M, L] over L, restricted to ``mask`` [B, L] (True = a real
    item); a row whose mask is all False gets all-zero weights (not NaN), and so do its gradients.

    Masked scores are set to the dtype's lowest finite value instead of -inf: in a row with at least one real
    item their exponentials underflow to exactly 0, and in an all-padding row the softmax is uniform and the
    final multiplication by the mask zeroes it, so no NaN appears in the forward or the backward pass.
    """
    scores = _check_3d("scores", scores, "[B, M, L]")
    mask = _check_mask(mask, scores.shape[0], scores.shape[2])
    if mask is None:
        return torch.softmax(scores, dim=-1)
    m = mask[:, None, :]
    return torch.softmax(scores.masked_fill(~m, torch.finfo(scores.dtype).min), dim=-1) * m


def masked_attention_pool(scores: Tensor, v: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """eq-ta-pool for any scorer: weights = masked_softmax(scores, mask) [B, M, L] and output = weights @ v
    [B, M, d_v]. Returns (output, weights)."""
    scores = _check_3d("scores", scores, "[B, M, L]")
    v = _check_3d("v", v, "[B, L, d_v]", scores.shape[0])
    if v.shape[1] != scores.shape[2] or v.dtype != scores.dtype:
        raise ValueError(f"v: expected a {scores.dtype} tensor of shape [B, L, d_v] with L={scores.shape[2]}, "
                         f"received {describe(v)}")
    w = masked_softmax(scores, mask)
    return torch.bmm(w, v), w                              # [B, M, L] @ [B, L, d_v] -> [B, M, d_v]


def target_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, *, scale: float | None = None,
                     impl: str = "bmm", return_weights: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """Masked multi-query dot-product target attention, eq-ta-score then eq-ta-pool.

    q [B, M, d] (M queries per sample), k [B, L, d], v [B, L, d_v], mask [B, L] bool (True = a real item; None:
    all real) -> output [B, M, d_v]. ``scale`` multiplies the scores (default 1/sqrt(d)). ``impl="bmm"``: one
    batched GEMM for the scores, the guarded masked softmax, one batched GEMM for the pooling;
    ``impl="sdpa"``: ``torch.nn.functional.scaled_dot_product_attention``, with all-padding rows attended
    uniformly and then zeroed (SDPA alone returns NaN for them). ``return_weights=True`` (bmm only) also returns
    the weights [B, M, L].
    """
    q, k, v, mask = _check_qkv(q, k, v, mask)
    s = _check_scale(scale, q.shape[2])
    if impl not in IMPLS:
        raise ValueError(f"impl: expected one of {IMPLS}, received {impl!r}")
    if impl == "sdpa":
        if return_weights:
            raise ValueError("return_weights: expected False with impl='sdpa' (SDPA does not return weights), received True")
        if mask is None:
            return F.scaled_dot_product_attention(q, k, v, scale=s)
        any_real = mask.any(dim=1)                                        # [B]
        safe = mask | ~any_real[:, None]                                  # all-padding rows: attend to every position
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=safe[:, None, :], scale=s)
        return out * any_real[:, None, None].to(out.dtype)               # ... then zero them
    scores = torch.bmm(q, k.transpose(1, 2)) * s                          # [B, M, d] @ [B, d, L] -> [B, M, L]
    out, w = masked_attention_pool(scores, v, mask)
    return (out, w) if return_weights else out


def target_attention_reference(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, *,
                               scale: float | None = None) -> Tensor:
    """eq-ta-score and eq-ta-pool written out, one sample and one query at a time (slow; the tests' oracle)."""
    q, k, v, mask = _check_qkv(q, k, v, mask)
    s = _check_scale(scale, q.shape[2])
    B, M, _ = q.shape
    out = torch.zeros(B, M, v.shape[2], dtype=q.dtype, device=q.device)
    for b in range(B):
        real = mask[b] if mask is not None else torch.ones(k.shape[1], dtype=torch.bool, device=k.device)
        if not bool(real.any()):
            continue                                                     # no behaviour: output stays zero
        for m in range(M):
            e = torch.exp(s * (k[b, real] @ q[b, m]) - (s * (k[b, real] @ q[b, m])).max())
            out[b, m] = (e / e.sum()) @ v[b, real]
    return out


def _act(name: str):
    if name not in ACTS:
        raise ValueError(f"act: expected one of {ACTS}, received {name!r}")
    return {"relu": torch.relu, "sigmoid": torch.sigmoid, "identity": lambda x: x}[name]


def _check_din(q: object, k: object, w1: object, b1: object, w2: object, b2: object) -> tuple[Tensor, ...]:
    q = _check_3d("q", q, "[B, M, d]")
    B, _, d = q.shape
    k = _check_3d("k", k, "[B, L, d]", B, d)
    if k.dtype != q.dtype:
        raise ValueError(f"k: expected the dtype of q ({q.dtype}), received {k.dtype}")
    if not isinstance(w1, Tensor) or w1.ndim != 2 or w1.shape[1] != 4 * d or w1.dtype != q.dtype:
        raise ValueError(f"w1: expected a {q.dtype} tensor of shape [h, 4d] = [h, {4 * d}] (nn.Linear(4d, h).weight), "
                         f"received {describe(w1)}")
    h = w1.shape[0]
    for name, x, shape in (("b1", b1, (h,)), ("w2", w2, (h,))):
        if not isinstance(x, Tensor) or tuple(x.shape) != shape or x.dtype != q.dtype:
            raise ValueError(f"{name}: expected a {q.dtype} tensor of shape [{h}], received {describe(x)}")
    if not isinstance(b2, Tensor) or b2.numel() != 1 or b2.dtype != q.dtype:
        raise ValueError(f"b2: expected a {q.dtype} tensor with one element, received {describe(b2)}")
    return q, k, w1, b1, w2, b2


def din_scores(q: Tensor, k: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor, act: str = "relu") -> Tensor:
    """DIN activation-unit scores [B, M, L] for queries q [B, M, d] and keys k [B, L, d], by eq-din-split (the
    [B, M, L, 4d] concatenation is never built). w1 [h, 4d], b1 [h], w2 [h], b2 [1] are the weights of
    ``nn.Linear(4d, h)`` and ``nn.Linear(h, 1)``, in that layout; ``act`` is "relu", "sigmoid" or "identity"."""
    q, k, w1, b1, w2, b2 = _check_din(q, k, w1, b1, w2, b2)
    _act(act)
    B, M, d = q.shape
    L, h = k.shape[1], w1.shape[0]
    wq, wk, wd, wp = w1.split(d, dim=1)                                   # four [h, d] blocks of W_1
    q_term = torch.addmm(b1, q.reshape(B * M, d), (wq + wd).t())          # (W_q + W_d) q + b_1: [B*M, h]
    k_term = k.reshape(B * L, d) @ (wk - wd).t()                          # (W_k - W_d) k: [B*L, h]
    prod = (q[:, :, None, :] * k[:, None, :, :]).reshape(B * M * L, d)    # q * k: [B*M*L, d], a quarter of the concat
    hid = (prod @ wp.t()).view(B, M, L, h)                                # W_p (q * k): one GEMM -> [B, M, L, h]
    hid.add_(q_term.view(B, M, 1, h)).add_(k_term.view(B, 1, L, h))       # + per-query + per-key terms (broadcast)
    if act == "relu":
        hid.relu_()
    elif act == "sigmoid":
        hid.sigmoid_()
    return hid @ w2 + b2.reshape(())                                      # [B, M, L, h] @ [h] -> [B, M, L]


def din_scores_reference(q: Tensor, k: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor,
                         act: str = "relu") -> Tensor:
    """DIN scores with the concatenation [q; k; q - k; q * k] built explicitly: [B, M, L, 4d] (the naive form)."""
    q, k, w1, b1, w2, b2 = _check_din(q, k, w1, b1, w2, b2)
    f = _act(act)
    B, M, d = q.shape
    L = k.shape[1]
    qe = q[:, :, None, :].expand(B, M, L, d)
    ke = k[:, None, :, :].expand(B, M, L, d)
    x = torch.cat([qe, ke, qe - ke, qe * ke], dim=-1)                    # [B, M, L, 4d]
    return F.linear(f(F.linear(x, w1, b1)), w2[None], b2.reshape(1)).squeeze(-1)


def bench_cases(quick: bool = False) -> list:
    """``make bench``: masked multi-query attention (loop over queries, einsum, bmm, SDPA) and the DIN scorer
    (concatenation vs split weights), at the chapter's shapes and larger ones."""
    from kernels.bench import Case, Target

    g = torch.Generator().manual_seed(0)
    cases = []
    att = [(256, 4, 20, 16)] if quick else [(512, 1, 20, 16), (512, 4, 20, 16), (1024, 4, 50, 32), (1024, 4, 200, 64)]
    for B, M, L, d in att:
        q, k = torch.randn(B, M, d, generator=g), torch.randn(B, L, d, generator=g)
        lens = torch.randint(0, L + 1, (B,), generator=g)
        mask = torch.arange(L)[None, :] < lens[:, None]                  # some rows all padding
        s = 1.0 / math.sqrt(d)

        def loop(q=q, k=k, mask=mask, s=s):                              # the naive form: one query at a time
            outs = []
            for m in range(q.shape[1]):
                sc = (k * q[:, m, None, :]).sum(-1) * s                    # [B, L]
                w = torch.softmax(sc.masked_fill(~mask, float("-inf")), -1).nan_to_num(0.0)
                outs.append((w[:, :, None] * k).sum(1))
            return torch.stack(outs, 1)

        def einsum(q=q, k=k, mask=mask, s=s):
            w = masked_softmax(torch.einsum("bmd,bld->bml", q, k) * s, mask)
            return torch.einsum("bml,bld->bmd", w, k)

        cases.append(Case(f"masked target attention B={B} M={M} L={L} d={d}", {
            "loop over queries": loop, "einsum": einsum,
            "bmm (target_attention)": lambda q=q, k=k, mask=mask: target_attention(q, k, k, mask),
            "SDPA + guard": lambda q=q, k=k, mask=mask: target_attention(q, k, k, mask, impl="sdpa"),
        }, baseline="loop over queries", flops=4.0 * B * M * L * d,
            targets=[Target("bmm (target_attention)", "SDPA + guard", 1.0,
                            "the library peer: two batched GEMMs around the guarded softmax")]))
    din = [(256, 4, 20, 16, 16)] if quick else [(512, 1, 20, 16, 16), (512, 4, 20, 16, 16), (1024, 4, 50, 32, 32)]
    for B, M, L, d, h in din:
        q, k = torch.randn(B, M, d, generator=g), torch.randn(B, L, d, generator=g)
        w1, b1 = torch.randn(h, 4 * d, generator=g) / (2 * math.sqrt(d)), torch.zeros(h)
        w2, b2 = torch.randn(h, generator=g) / math.sqrt(h), torch.zeros(1)
        cases.append(Case(f"DIN scorer B={B} M={M} L={L} d={d} h={h}", {
            "concat [q,k,q-k,q*k]": lambda q=q, k=k, w1=w1, b1=b1, w2=w2, b2=b2: din_scores_reference(q, k, w1, b1, w2, b2),
            "split weights": lambda q=q, k=k, w1=w1, b1=b1, w2=w2, b2=b2: din_scores(q, k, w1, b1, w2, b2),
        }, baseline="concat [q,k,q-k,q*k]", flops=2.0 * B * M * L * (4 * d * h + h),
            targets=[Target("split weights", "concat [q,k,q-k,q*k]", 2.0,
                            "a quarter of the first layer's multiply-adds, no [B, M, L, 4d] tensor")]))
    return cases
