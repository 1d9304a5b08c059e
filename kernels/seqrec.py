"""Per-sample generated linear maps over a behaviour sequence: the personalised re-encoding of PSRG in ADS
(Chai et al., "Adaptive Domain Scaling for Personalized Sequential Modeling in Recommenders", SIGIR 2025,
arXiv 2502.05523).

A generator turns each sample's scenario features into a weight matrix W_b [d_in, d_out] and a bias
c_b [d_out]; every item of that sample's sequence x_b [L, d_in] goes through the same map (chapter
``book/recsys/ads.ipynb``, eq-psrg-apply):

    Y_{b,l} = x_{b,l} W_b + c_b,          Y [B, L, d_out]

Written per sample it is B small GEMMs; :func:`gen_linear` does them as ONE batched GEMM with the bias fused,
``torch.baddbmm(c[:, None, :], x, W)``. The low-rank variant (not in the paper; a cheaper generator) has
W_b = U_b V_b^T with U_b [d_in, r], V_b [d_out, r], and is applied without ever forming W_b (eq-lowrank):

    Y_b = (x_b U_b) V_b^T + c_b,          2 L r (d_in + d_out) instead of 2 L d_in d_out multiply-adds.

Public functions validate their arguments and raise ``ValueError`` naming the argument, what was expected and
what was received. :func:`gen_linear_reference` (a loop over samples) is the tests' oracle.
"""

from __future__ import annotations

import torch
from torch import Tensor

from kernels._validate import describe


def _check(x: object, weight: object, bias: object, *, lowrank: Tensor | None = None) -> tuple[int, int, int, int]:
    if not isinstance(x, Tensor) or x.ndim != 3 or not x.is_floating_point():
        raise ValueError(f"x: expected a floating-point tensor of shape [B, L, d_in], received {describe(x)}")
    B, L, d_in = x.shape
    if lowrank is None:
        if not isinstance(weight, Tensor) or weight.ndim != 3 or tuple(weight.shape[:2]) != (B, d_in) or weight.dtype != x.dtype:
            raise ValueError(f"weight: expected a {x.dtype} tensor of shape [B, d_in, d_out] = [{B}, {d_in}, d_out], "
                             f"received {describe(weight)}")
        d_out = weight.shape[2]
    else:
        u, v = weight, lowrank
        if not isinstance(u, Tensor) or u.ndim != 3 or tuple(u.shape[:2]) != (B, d_in) or u.dtype != x.dtype:
            raise ValueError(f"u: expected a {x.dtype} tensor of shape [B, d_in, r] = [{B}, {d_in}, r], received {describe(u)}")
        r = u.shape[2]
        if not isinstance(v, Tensor) or v.ndim != 3 or v.shape[0] != B or v.shape[2] != r or v.dtype != x.dtype:
            raise ValueError(f"v: expected a {x.dtype} tensor of shape [B, d_out, r] = [{B}, d_out, {r}], received {describe(v)}")
        d_out = v.shape[1]
    if bias is not None and (not isinstance(bias, Tensor) or tuple(bias.shape) != (B, d_out) or bias.dtype != x.dtype):
        raise ValueError(f"bias: expected None or a {x.dtype} tensor of shape [B, d_out] = [{B}, {d_out}], received {describe(bias)}")
    return B, L, d_in, d_out


def gen_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """eq-psrg-apply: x [B, L, d_in], one generated weight [B, d_in, d_out] and bias [B, d_out] per sample ->
    [B, L, d_out], as one batched GEMM with the bias fused (``torch.baddbmm``)."""
    _check(x, weight, bias)
    if bias is None:
        return torch.bmm(x, weight)                                     # [B, L, d_in] @ [B, d_in, d_out]
    return torch.baddbmm(bias[:, None, :], x, weight)                   # c_b broadcast over L, + x_b W_b


def gen_linear_lowrank(x: Tensor, u: Tensor, v: Tensor, bias: Tensor | None = None) -> Tensor:
    """eq-lowrank: the map W_b = U_b V_b^T (u [B, d_in, r], v [B, d_out, r]) applied as (x_b U_b) V_b^T + c_b,
    two batched GEMMs through the rank-r bottleneck; W_b is never formed."""
    _check(x, u, bias, lowrank=v)
    t = torch.bmm(x, u)                                                 # [B, L, d_in] @ [B, d_in, r] -> [B, L, r]
    vt = v.transpose(1, 2)                                              # [B, r, d_out]
    return torch.bmm(t, vt) if bias is None else torch.baddbmm(bias[:, None, :], t, vt)


def gen_linear_reference(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """eq-psrg-apply one sample at a time (slow; the tests' oracle and the benchmark's naive form)."""
    B, L, _, d_out = _check(x, weight, bias)
    biases = bias.unbind(0) if bias is not None else [None] * B
    rows = []
    for xb, wb, cb in zip(x.unbind(0), weight.unbind(0), biases):       # unbind, not x[b]: its backward is one
        y = xb @ wb                                                     # stack, not B full-size zero tensors
        rows.append(y + cb if cb is not None else y)                    # [L, d_in] @ [d_in, d_out] (+ c_b)
    return torch.stack(rows) if rows else x.new_zeros(0, L, d_out)


def bench_cases(quick: bool = False) -> list:
    """``make bench``: eq-psrg-apply as a loop over samples, an einsum, one ``baddbmm``, and the low-rank
    form, forward only and forward + backward (the training step), over a few (B, L, d)."""
    from kernels.bench import Case, Target

    g = torch.Generator().manual_seed(0)
    grid = [(256, 20, 16, 4)] if quick else [(512, 20, 16, 4), (1024, 50, 32, 8), (1024, 200, 64, 8)]
    cases = []
    for B, L, d, r in grid:
        x, W, c = torch.randn(B, L, d, generator=g), torch.randn(B, d, d, generator=g), torch.randn(B, d, generator=g)
        u, v = torch.randn(B, d, r, generator=g), torch.randn(B, d, r, generator=g)
        cases.append(Case(f"generated linear map, forward, B={B} L={L} d={d}", {
            "loop over samples": lambda x=x, W=W, c=c: gen_linear_reference(x, W, c),
            "einsum": lambda x=x, W=W, c=c: torch.einsum("bld,bde->ble", x, W) + c[:, None, :],
            "baddbmm (gen_linear)": lambda x=x, W=W, c=c: gen_linear(x, W, c),
            f"low rank r={r}": lambda x=x, u=u, v=v, c=c: gen_linear_lowrank(x, u, v, c),
        }, baseline="loop over samples", flops={"loop over samples": 2.0 * B * L * d * d, "einsum": 2.0 * B * L * d * d,
                                                "baddbmm (gen_linear)": 2.0 * B * L * d * d,
                                                f"low rank r={r}": 4.0 * B * L * d * r},
            targets=[Target("baddbmm (gen_linear)", "loop over samples", 5.0,
                            "one batched GEMM instead of B Python-level GEMMs"),
                     Target("baddbmm (gen_linear)", "einsum", 1.0, "the library peer lowers to the same bmm")]))
        xg, Wg, cg = (t.clone().requires_grad_() for t in (x, W, c))
        ug, vg = u.clone().requires_grad_(), v.clone().requires_grad_()
        cases.append(Case(f"generated linear map, forward + backward, B={B} L={L} d={d}", {
            # default arguments bind this shape's tensors (a bare closure would see the last grid entry's)
            "loop over samples": lambda xg=xg, Wg=Wg, cg=cg: gen_linear_reference(xg, Wg, cg).sum().backward(),
            "einsum": lambda xg=xg, Wg=Wg, cg=cg: (torch.einsum("bld,bde->ble", xg, Wg) + cg[:, None, :]).sum().backward(),
            "baddbmm (gen_linear)": lambda xg=xg, Wg=Wg, cg=cg: gen_linear(xg, Wg, cg).sum().backward(),
            f"low rank r={r}": lambda xg=xg, ug=ug, vg=vg, cg=cg: gen_linear_lowrank(xg, ug, vg, cg).sum().backward(),
        }, baseline="loop over samples", targets=[Target("baddbmm (gen_linear)", "loop over samples", 5.0,
                                                         "one batched GEMM each way instead of B small ones")]))
    return cases
