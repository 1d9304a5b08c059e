"""Many small models trained at once as one batched model: M logistic regressions or one-hidden-layer MLPs, each
on its own set of samples, trained by full-batch Adam with per-model early stopping, in one sequence of ``bmm``
calls instead of M training loops.

First written for LISA (B. An, X. Zhou, A. Vahedian, W. N. Street, J. Guan, J. Luo, "LISA: Learning-Integrated
Space Partitioning Framework for Traffic Accident Forecasting on Heterogeneous Spatiotemporal Data",
arXiv 2412.15365), where every growth step of a Partition Learner trains a *joint* model on S u C and a
*separate* model on C, and every baseline is an ensemble of per-region models; the equation labels follow the
chapter ``book/spatial/lisa.ipynb``. Nothing here is specific to that paper.

Layout. Model m owns the rows l < n_m of a packed batch: inputs X [M, L, F], targets y [M, L] in {0, 1} and
weights a [M, L] (a_{m,l} = 0 marks padding; :func:`pack` builds the three from index sets). The logit of row l
under model m is (eq-batched-model)

    logistic:  s_{m,l} = x_{m,l} . w_m + b_m                                  (params w [M, F], b [M])
    MLP:       s_{m,l} = v_m . tanh(W_m^T x_{m,l} + c_m) + b_m                (W [M, F, H], c [M, H], v [M, H], b [M])

computed for all m at once with ``torch.bmm``. Model m's loss is its weighted mean binary cross-entropy plus an
L2 penalty on its weights (not its biases) (eq-batched-loss):

    L_m = sum_l a_{m,l} BCE(s_{m,l}, y_{m,l}) / sum_l a_{m,l}  +  lambda ||weights_m||^2 .

Why one batched model equals M separate ones: the models share no parameter, so the gradient of the sum
L = sum_m L_m with respect to model m's parameters is the gradient of L_m alone; and Adam's update is elementwise
(its moments, bias corrections and step are per entry), so one Adam over the stacked parameters takes exactly the
steps M separate Adams would. Early stopping is per model: each keeps the parameters of its lowest validation
loss (the weighted mean BCE on a packed validation batch), and the batch stops once every model has gone
``patience`` steps without improving by more than ``min_delta``. A model that has stopped keeps training with the
others, but its returned parameters are those of its best step, which are those a lone run would return.

:func:`fit_one_by_one` is the slow, obvious version (one ``torch.nn`` module and one ``torch.optim.Adam`` per
model, on its own rows only) that the tests compare with; :func:`bench_cases` times the two for ``make bench``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from kernels._validate import check_int, describe

WEIGHT_KEYS = ("w", "W", "v")          # penalised by lambda; biases ("b", "c") are not


@dataclass
class Fit:
    """What :func:`fit_many` returns for M models.

    ``params``: the best parameters (lowest validation loss), stacked [M, ...]; ``val_loss`` [M]: that loss;
    ``best_step`` [M] int64: the step it was reached at (0 = the initial parameters); ``history`` [S + 1, M]: the
    validation loss before training and after each of the S steps run (rows past a model's stop keep counting).
    """

    params: dict[str, Tensor]
    val_loss: Tensor
    best_step: Tensor
    history: Tensor

    @property
    def steps(self) -> int:
        return self.history.shape[0] - 1


# --------------------------------------------------------------------------------------------- validation
def _check_params(params: object) -> tuple[int, int, int]:
    """(M, F, H) of a parameter dict (H = 0 for logistic regression)."""
    if not isinstance(params, dict) or not all(isinstance(v, Tensor) for v in params.values()):
        raise ValueError(f"params: expected a dict of tensors, received {type(params).__name__}")
    keys = set(params)
    if keys == {"w", "b"}:
        w, b = params["w"], params["b"]
        if w.ndim != 2 or b.shape != w.shape[:1] or not w.is_floating_point() or b.dtype != w.dtype:
            raise ValueError(f"params: expected w [M, F] and b [M] of one float dtype, received w "
                             f"{describe(w)} and b {describe(b)}")
        return w.shape[0], w.shape[1], 0
    if keys == {"W", "c", "v", "b"}:
        W, c, v, b = (params[k] for k in ("W", "c", "v", "b"))
        M, F_, H = W.shape if W.ndim == 3 else (None, None, None)
        if (W.ndim != 3 or c.shape != (M, H) or v.shape != (M, H) or b.shape != (M,) or not W.is_floating_point()
                or len({t.dtype for t in (W, c, v, b)}) != 1):
            raise ValueError("params: expected W [M, F, H], c [M, H], v [M, H], b [M] of one float dtype, received "
                             + ", ".join(f"{k} {describe(params[k])}" for k in ("W", "c", "v", "b")))
        return M, F_, H
    raise ValueError(f"params: expected keys {{'w', 'b'}} (logistic) or {{'W', 'c', 'v', 'b'}} (MLP), received "
                     f"{sorted(keys)}")


def _check_batch(prefix: str, X: object, y: object, a: object, M: int, F_: int, dtype: torch.dtype) -> None:
    if not isinstance(X, Tensor) or X.ndim != 3 or X.shape[0] != M or X.shape[2] != F_ or X.dtype != dtype:
        raise ValueError(f"{prefix}X: expected a {dtype} tensor [M={M}, L, F={F_}], received {describe(X)}")
    L = X.shape[1]
    for name, t in (("y", y), ("a", a)):
        if not isinstance(t, Tensor) or t.shape != (M, L) or t.dtype != dtype:
            raise ValueError(f"{prefix}{name}: expected a {dtype} tensor [M={M}, L={L}], received {describe(t)}")
    if bool(((y != 0) & (y != 1)).any()):
        raise ValueError(f"{prefix}y: expected targets in {{0, 1}}, received values in [{float(y.min())}, "
                         f"{float(y.max())}]")
    if bool((a < 0).any()) or bool((a.sum(1) <= 0).any()):
        raise ValueError(f"{prefix}a: expected non-negative weights with a positive sum for every model, received "
                         f"sums {a.sum(1).tolist()}")


# ---------------------------------------------------------------------------------------------- the model
def init_params(M: int, F_: int, hidden: int = 0, *, generator: torch.Generator | None = None,
                dtype: torch.dtype = torch.float64) -> dict[str, Tensor]:
    """M independent initialisations, each as ``torch.nn.Linear`` draws it (uniform in +-1/sqrt(fan_in))."""
    check_int("M", M, 1)
    check_int("F", F_, 1)
    check_int("hidden", hidden, 0)

    def u(*shape: int, fan_in: int) -> Tensor:
        return (torch.rand(*shape, generator=generator, dtype=dtype) * 2 - 1) / fan_in ** 0.5

    if hidden == 0:
        return {"w": u(M, F_, fan_in=F_), "b": u(M, fan_in=F_)}
    return {"W": u(M, F_, hidden, fan_in=F_), "c": u(M, hidden, fan_in=F_), "v": u(M, hidden, fan_in=hidden),
            "b": u(M, fan_in=hidden)}


def forward(params: dict[str, Tensor], X: Tensor) -> Tensor:
    """Logits [M, L] of every model on its own rows X [M, L, F] (eq-batched-model)."""
    M, F_, H = _check_params(params)
    dtype = next(iter(params.values())).dtype
    if not isinstance(X, Tensor) or X.ndim != 3 or X.shape[0] != M or X.shape[2] != F_ or X.dtype != dtype:
        raise ValueError(f"X: expected a {dtype} tensor [M={M}, L, F={F_}], received {describe(X)}")
    if H == 0:
        # s_{m,l} = x_{m,l} . w_m + b_m:  [M, L, F] @ [M, F, 1] -> [M, L, 1]
        return torch.bmm(X, params["w"].unsqueeze(-1)).squeeze(-1) + params["b"].unsqueeze(-1)
    # h_{m,l} = tanh(W_m^T x_{m,l} + c_m):  [M, L, F] @ [M, F, H] -> [M, L, H]
    h = torch.tanh(torch.bmm(X, params["W"]) + params["c"].unsqueeze(1))
    # s_{m,l} = v_m . h_{m,l} + b_m:  [M, L, H] @ [M, H, 1] -> [M, L]
    return torch.bmm(h, params["v"].unsqueeze(-1)).squeeze(-1) + params["b"].unsqueeze(-1)


def mean_bce(params: dict[str, Tensor], X: Tensor, y: Tensor, a: Tensor) -> Tensor:
    """[M] weighted mean binary cross-entropy of each model on its own rows (the data term of eq-batched-loss)."""
    bce = F.binary_cross_entropy_with_logits(forward(params, X), y, reduction="none")   # [M, L]
    return (a * bce).sum(1) / a.sum(1)


def _penalty(params: dict[str, Tensor]) -> Tensor:
    """[M] squared norm of each model's weights (biases not included)."""
    return sum(params[k].pow(2).flatten(1).sum(1) for k in WEIGHT_KEYS if k in params)


def pack(X: Tensor, y: Tensor, members: Sequence[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """Gather each model's rows into a padded batch.

    ``X`` [N, ..., F] and ``y`` [N, ...] (e.g. cells x days x features); ``members[m]`` (int64) indexes the
    first axis. Returns X [M, L, F], y [M, L] and 0/1 weights a [M, L], where model m's rows are its members'
    entries flattened (cells then days) and L is the largest such count; padding rows have a = 0.
    """
    if not isinstance(X, Tensor) or X.ndim < 2 or not X.is_floating_point():
        raise ValueError(f"X: expected a float tensor [N, ..., F], received {describe(X)}")
    if not isinstance(y, Tensor) or tuple(y.shape) != tuple(X.shape[:-1]):
        raise ValueError(f"y: expected a tensor of shape {tuple(X.shape[:-1])} (X without its last axis), "
                         f"received {describe(y)}")
    if not isinstance(members, (list, tuple)) or len(members) == 0:
        raise ValueError(f"members: expected a non-empty list of int64 index tensors, received "
                         f"{type(members).__name__}")
    N = X.shape[0]
    for m, idx in enumerate(members):
        if not isinstance(idx, Tensor) or idx.dtype != torch.int64 or idx.ndim != 1 or idx.numel() == 0:
            raise ValueError(f"members[{m}]: expected a non-empty 1-D int64 tensor, received {describe(idx)}")
        if bool((idx < 0).any()) or bool((idx >= N).any()):
            raise ValueError(f"members[{m}]: expected indices in [0, {N}), received [{int(idx.min())}, "
                             f"{int(idx.max())}]")
    per_row = int(torch.tensor(X.shape[1:-1]).prod()) if X.ndim > 2 else 1
    Fdim = X.shape[-1]
    L = max(int(idx.numel()) for idx in members) * per_row
    Xp = X.new_zeros(len(members), L, Fdim)
    yp = X.new_zeros(len(members), L)
    ap = X.new_zeros(len(members), L)
    for m, idx in enumerate(members):
        n = idx.numel() * per_row
        Xp[m, :n] = X[idx].reshape(n, Fdim)
        yp[m, :n] = y[idx].reshape(n).to(X.dtype)
        ap[m, :n] = 1
    return Xp, yp, ap


# ---------------------------------------------------------------------------------------------- training
def fit_many(params: dict[str, Tensor], X: Tensor, y: Tensor, a: Tensor, X_val: Tensor, y_val: Tensor,
             a_val: Tensor, *, steps: int, lr: float = 0.05, l2: float = 0.0, patience: int | None = 20,
             min_delta: float = 1e-5) -> Fit:
    """Train M models at once from ``params`` (not modified) by full-batch Adam on eq-batched-loss, with
    per-model early stopping on the validation batch (see the module docstring). ``patience=None`` runs all
    ``steps``. Returns a :class:`Fit`."""
    M, F_, _ = _check_params(params)
    dtype = next(iter(params.values())).dtype
    _check_batch("", X, y, a, M, F_, dtype)
    _check_batch("val ", X_val, y_val, a_val, M, F_, dtype)
    check_int("steps", steps, 1)
    if patience is not None:
        check_int("patience", patience, 1)
    if not (isinstance(lr, (int, float)) and lr > 0) or not (isinstance(l2, (int, float)) and l2 >= 0):
        raise ValueError(f"lr, l2: expected lr > 0 and l2 >= 0, received {lr!r} and {l2!r}")
    p = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    opt = torch.optim.Adam(list(p.values()), lr=lr)
    with torch.no_grad():
        best = mean_bce(p, X_val, y_val, a_val)
    best_p = {k: v.detach().clone() for k, v in p.items()}
    best_step = torch.zeros(M, dtype=torch.int64)
    history = [best.clone()]
    active = torch.ones(M, dtype=torch.bool)          # models whose patience has not run out
    for s in range(1, steps + 1):
        opt.zero_grad()
        # L = sum_m L_m: the gradient w.r.t. model m's parameters is that of L_m alone (eq-batched-loss)
        (mean_bce(p, X, y, a) + l2 * _penalty(p)).sum().backward()
        opt.step()
        with torch.no_grad():
            val = mean_bce(p, X_val, y_val, a_val)
            history.append(val)
            better = (val < best - min_delta) & active
            best = torch.where(better, val, best)
            best_step = torch.where(better, torch.tensor(s), best_step)
            for k, v in p.items():
                best_p[k] = torch.where(better.view(-1, *[1] * (v.ndim - 1)), v.detach(), best_p[k])
        if patience is not None:
            active &= s - best_step < patience        # a lone run would stop here: its best is final
            if not bool(active.any()):
                break
    return Fit(best_p, best, best_step, torch.stack(history))


def fit_one_by_one(params: dict[str, Tensor], X: Tensor, y: Tensor, a: Tensor, X_val: Tensor, y_val: Tensor,
                   a_val: Tensor, *, steps: int, lr: float = 0.05, l2: float = 0.0, patience: int | None = 20,
                   min_delta: float = 1e-5) -> Fit:
    """The slow, obvious version of :func:`fit_many`: one ``torch.nn`` module and one ``torch.optim.Adam`` per
    model, each trained alone on its own rows (a > 0) with its own early stopping. ``history`` rows past a
    model's stop hold NaN."""
    M, F_, H = _check_params(params)
    dtype = next(iter(params.values())).dtype
    _check_batch("", X, y, a, M, F_, dtype)
    _check_batch("val ", X_val, y_val, a_val, M, F_, dtype)
    out = {k: torch.empty_like(v) for k, v in params.items()}
    vals, bests, hists = [], [], []
    for m in range(M):
        keep, keep_v = a[m] > 0, a_val[m] > 0
        xm, ym, am = X[m][keep], y[m][keep], a[m][keep]
        xv, yv, av = X_val[m][keep_v], y_val[m][keep_v], a_val[m][keep_v]
        if H == 0:
            net = torch.nn.Linear(F_, 1).to(dtype)
            with torch.no_grad():
                net.weight.copy_(params["w"][m].unsqueeze(0))
                net.bias.copy_(params["b"][m].reshape(1))
            weights = [net.weight]
        else:
            net = torch.nn.Sequential(torch.nn.Linear(F_, H), torch.nn.Tanh(), torch.nn.Linear(H, 1)).to(dtype)
            with torch.no_grad():
                net[0].weight.copy_(params["W"][m].T)
                net[0].bias.copy_(params["c"][m])
                net[2].weight.copy_(params["v"][m].unsqueeze(0))
                net[2].bias.copy_(params["b"][m].reshape(1))
            weights = [net[0].weight, net[2].weight]
        opt = torch.optim.Adam(net.parameters(), lr=lr)

        def val_loss() -> Tensor:
            with torch.no_grad():
                bce = F.binary_cross_entropy_with_logits(net(xv).squeeze(-1), yv, reduction="none")
                return (av * bce).sum() / av.sum()

        def snapshot() -> dict[str, Tensor]:
            if H == 0:
                return {"w": net.weight[0].detach().clone(), "b": net.bias[0].detach().clone()}
            return {"W": net[0].weight.T.detach().clone(), "c": net[0].bias.detach().clone(),
                    "v": net[2].weight[0].detach().clone(), "b": net[2].bias[0].detach().clone()}

        best, best_s, best_snap, hist = val_loss(), 0, snapshot(), []
        hist.append(best)
        for s in range(1, steps + 1):
            opt.zero_grad()
            bce = F.binary_cross_entropy_with_logits(net(xm).squeeze(-1), ym, reduction="none")
            loss = (am * bce).sum() / am.sum() + l2 * sum(w.pow(2).sum() for w in weights)
            loss.backward()
            opt.step()
            v = val_loss()
            hist.append(v)
            if v < best - min_delta:
                best, best_s, best_snap = v, s, snapshot()
            if patience is not None and s - best_s >= patience:
                break
        for k in out:
            out[k][m] = best_snap[k]
        vals.append(best)
        bests.append(best_s)
        hists.append(torch.stack(hist))
    S = max(h.numel() for h in hists)
    history = torch.full((S, M), float("nan"), dtype=dtype)
    for m, h in enumerate(hists):
        history[: h.numel(), m] = h
    return Fit(out, torch.stack(vals), torch.tensor(bests, dtype=torch.int64), history)


# --------------------------------------------------------------------------------------------- benchmarks
def bench_cases(quick: bool = False) -> list:
    """``make bench``: M per-region models trained for a fixed number of full-batch Adam steps, one by one
    (a ``torch.nn`` module and an optimizer each, as a loop over regions does) against one batched model."""
    from kernels.bench import Case, Target

    M, rows, steps = (8, 500, 20) if quick else (32, 3_000, 100)
    g = torch.Generator().manual_seed(0)
    X = torch.randn(M, rows, 4, generator=g)
    y = (torch.rand(M, rows, generator=g) < torch.sigmoid(X[..., 0] * torch.linspace(-2, 2, M)[:, None])).float()
    a = torch.ones(M, rows)
    cases = []
    for hidden, label in ((0, "logistic regressions"), (8, "MLPs 4-8-1")):
        p0 = init_params(M, 4, hidden, generator=g, dtype=torch.float32)
        kw = dict(steps=steps, lr=0.05, patience=None)
        cases.append(Case(
            f"{M} {label}, {rows:,} rows each, {steps} full-batch Adam steps",
            {"one by one (nn.Module + Adam per model)": lambda p0=p0, kw=kw: fit_one_by_one(p0, X, y, a, X, y, a, **kw),
             "fit_many (one batched model)": lambda p0=p0, kw=kw: fit_many(p0, X, y, a, X, y, a, **kw)},
            baseline="one by one (nn.Module + Adam per model)",
            targets=[Target("fit_many (one batched model)", "one by one (nn.Module + Adam per model)", 5.0,
                            "M models in one sequence of bmm calls instead of M training loops")]))
    return cases
