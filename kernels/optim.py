"""AdaGrad++ and Adam++: parameter-free adaptive optimizers as ``torch.optim.Optimizer`` subclasses.

Paper: Y. Tao, H. Yuan, X. Zhou, Y. Cao, Q. Gu, "Towards Simple and Provable Parameter-Free Adaptive
Gradient Methods", arXiv 2412.19444 (2024), Algorithms 1 and 2. The update rules are reconstructed from
secondary sources (no full text and no official code could be read); every unverified choice is a flag.

With x in R^d all parameters flattened (d is global over every parameter of the optimizer), x_0 the
initial point and g_t the gradient at x_t:

    r_t   = ||x_t - x_0||_2 / sqrt(d)                       RMS distance travelled          (Eq. 1)
    eta_t = max(eta_{t-1}, r_t),   eta_{-1} = eps           never decreases; step 0 uses eps (Eq. 2)
    m_t   = beta1_t m_{t-1} + (1 - beta1_t) g_t,  beta1_t = beta1 * lam^t                     (Eq. 3)
    v_t   = beta2_t v_{t-1} + (1 - beta2_t) g_t^2                                           (Eq. 4)
            beta2_t = beta2        (Case 2: exponential mean of g^2, Adam-type)
            beta2_t = t / (t + 1)  (Case 1: arithmetic mean of g^2, so (t+1) v_t = sum_i g_i^2)
    s_t   = sqrt((t + 1) * vbar_t) + delta,  vbar_t = max(vbar_{t-1}, v_t) if amsgrad else v_t (Eq. 5)
    x_{t+1} = (1 - c eta_t wd) x_t - c eta_t * mhat_t / s_t                                  (Eq. 6)

where c is ``lr`` (the "base learning rate", 1 by default, so that LR schedulers can scale it), ``wd`` is
decoupled weight decay (AdamW++), and with ``bias_correction`` mhat_t = m_t / (1 - beta1^{t+1}) and, in
Case 2, v_t is replaced by v_t / (1 - beta2^{t+1}). AdaGrad++ is Case 1 with beta1 = 0 (mhat = g). Case 1
stores the *mean* of g^2 rather than the sum, so that both cases share one state layout.

Two implementations of the same update:

- ``impl="reference"``: a per-tensor loop that reads like Eqs. 1-6, with the distance in float64;
- ``impl="fused"`` (default): Eqs. 3-6 are exactly an Adam/AMSGrad step with per-step scalars
  (beta1_t, beta2_t, a rescaled learning rate and epsilon), so one call of PyTorch's multi-tensor fused Adam
  kernel (``torch._fused_adam_``, the kernel behind ``torch.optim.Adam(fused=True)``) updates every tensor
  in a single pass; the distance of Eq. 1 is one extra read of x and x_0;
- ``impl="native"``: the same scalars in the book's compiled kernel (``kernels.native``), which also sums the
  squared distance of the *new* iterate from x_0 while it writes it, so the next step's Eq. 1 costs no extra
  pass: 8 streams of the model size per step against Adam's 7. Without a compiler it falls back to "fused"
  (one warning). The chapters train with "fused", so that their outputs do not depend on a compiler.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable

import torch
from torch import Tensor
from torch.optim import Optimizer

from kernels._validate import check_int

IMPLS = ("reference", "fused", "native")


def _check(name: str, value: Any, ok: bool, expected: str) -> None:
    if not ok:
        raise ValueError(f"{name}: expected {expected}, received {value!r}")


class AdamPP(Optimizer):
    """Adam++ (Algorithm 2): Adam whose learning rate is the RMS distance travelled from x_0.

    Args:
        params: parameters or parameter groups (``lr`` and ``weight_decay`` may differ per group;
            eta is global over all of them).
        lr: the base multiplier c of Eq. 6 (the paper's default is 1.0; not a learning rate to tune).
        betas: (beta1, beta2) of Eqs. 3-4.
        eps: initial step size eta_{-1} of Eq. 2 (the paper's "eps", also called eta_0). Not Adam's eps:
            the denominator floor is ``delta``.
        delta: floor added to s_t in Eq. 5.
        lam: momentum decay lambda of Eq. 3 (theory needs lam < 1; practice uses 1). [unverified: exponent t]
        case: 2 (Adam-type exponential mean, default) or 1 (AdaGrad-type sum of g^2).
        amsgrad: use the running max of v_t (Case 2 as proven) instead of v_t (Case 2 "practical").
        bias_correction: Adam-style correction of m and (Case 2) v. [unverified: whether the paper does]
        weight_decay: decoupled weight decay (AdamW++), scaled by c * eta_t. [unverified scaling]
        impl: "fused" (one multi-tensor kernel call) or "reference" (readable per-tensor loop).
    """

    def __init__(self, params: Iterable[Tensor] | Iterable[dict[str, Any]], lr: float = 1.0,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-6, delta: float = 1e-8,
                 lam: float = 1.0, case: int = 2, amsgrad: bool = False, bias_correction: bool = True,
                 weight_decay: float = 0.0, impl: str = "fused") -> None:
        _check("lr", lr, isinstance(lr, (int, float)) and lr >= 0, "a number >= 0")
        _check("betas", betas, isinstance(betas, (tuple, list)) and len(betas) == 2
               and all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas), "(beta1, beta2) in [0, 1)")
        _check("eps", eps, isinstance(eps, (int, float)) and eps > 0 and math.isfinite(eps), "a finite number > 0")
        _check("delta", delta, isinstance(delta, (int, float)) and delta >= 0, "a number >= 0")
        _check("lam", lam, isinstance(lam, (int, float)) and 0 < lam <= 1, "0 < lam <= 1")
        _check("case", case, case in (1, 2) and not isinstance(case, bool), "1 or 2")
        _check("amsgrad", amsgrad, isinstance(amsgrad, bool), "a bool")
        _check("bias_correction", bias_correction, isinstance(bias_correction, bool), "a bool")
        _check("weight_decay", weight_decay, isinstance(weight_decay, (int, float)) and weight_decay >= 0,
               "a number >= 0")
        _check("impl", impl, impl in IMPLS, f"one of {IMPLS}")
        defaults = dict(lr=lr, betas=tuple(betas), delta=delta, lam=lam, case=case, amsgrad=amsgrad,
                        bias_correction=bias_correction, weight_decay=weight_decay)
        super().__init__(params, defaults)
        self.eps = float(eps)
        self.eta = float(eps)  # Eq. 2, a Python float: float64 whatever the parameters' dtype
        self.t = 0             # steps taken
        if impl == "native":
            from kernels import native

            if not native.available():
                import warnings

                warnings.warn(f"AdamPP(impl='native'): {native.status()}; using impl='fused'", stacklevel=2)
                impl = "fused"
        self.impl = impl
        self._step_tensor = torch.zeros((), dtype=torch.float32)
        self._next_sq: tuple[float, tuple] | None = None  # native: ||x_t - x_0||^2 and the versions it is valid for

    # -- state that is global over all parameters -------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        sd["plusplus"] = {"eta": self.eta, "t": self.t, "eps": self.eps}
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        if "plusplus" not in state_dict:
            raise ValueError("state_dict: expected the key 'plusplus' (eta, t) saved by AdamPP.state_dict()")
        glob = state_dict.pop("plusplus")
        super().load_state_dict(state_dict)
        self.eta, self.t, self.eps = float(glob["eta"]), int(glob["t"]), float(glob["eps"])

    def _params(self) -> list[Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    def _init_state(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                st = self.state[p]
                if "x0" not in st:
                    st["x0"] = p.detach().clone(memory_format=torch.preserve_format)
                    st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    if group["amsgrad"]:
                        st["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    # -- Eqs. 1-2 ---------------------------------------------------------------------------------
    @torch.no_grad()
    def distance(self) -> float:
        """r_t of Eq. 1: RMS distance of the current iterate from x_0 (float64)."""
        params = self._params()
        d = sum(p.numel() for p in params)
        if self.impl == "reference":
            sq = sum(((p.double() - self.state[p]["x0"].double()) ** 2).sum() for p in params)
            return math.sqrt(float(sq) / d)
        norms = torch.stack([torch.dist(p, self.state[p]["x0"]) for p in params]).double()
        return math.sqrt(float(norms.square().sum()) / d)

    # -- one step -----------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for i, p in enumerate(self._params()):
            if p.grad is not None and p.grad.is_sparse:
                raise ValueError(f"params[{i}].grad: sparse gradients are not supported by {type(self).__name__}; "
                                 f"received layout {p.grad.layout}")
        self._init_state()
        self.eta = max(self.eta, self._cached_distance())  # Eq. 2, from the iterate before this step's update
        sumsq, complete = 0.0, True
        for group in self.param_groups:
            if self.impl == "reference":
                self._reference_update(group)
            elif self.impl == "native":
                part = self._native_update(group)
                complete = complete and part is not None
                sumsq += part or 0.0
            else:
                self._fused_update(group)
        if self.impl == "native" and complete:
            self._next_sq = (sumsq, tuple(p._version for p in self._params()))
        else:
            self._next_sq = None
        self.t += 1
        return loss

    def _cached_distance(self) -> float:
        """Eq. 1: from the native kernel's running sum when the parameters are as it left them, else a pass."""
        cached = self._next_sq
        params = self._params()
        if cached is not None and cached[1] == tuple(p._version for p in params):
            return math.sqrt(cached[0] / sum(p.numel() for p in params))
        return self.distance()

    def _scalars(self, group: dict[str, Any]) -> dict[str, float]:
        """Per-step scalars of Eqs. 3-6 for this group."""
        t, (beta1, beta2) = self.t, group["betas"]
        bc = group["bias_correction"]
        return {
            "step": group["lr"] * self.eta,                                   # c * eta_t
            "beta1_t": beta1 * group["lam"] ** t,                             # Eq. 3
            "beta2_t": beta2 if group["case"] == 2 else t / (t + 1),          # Eq. 4
            "m_corr": 1 - beta1 ** (t + 1) if bc and beta1 > 0 else 1.0,      # mhat = m / m_corr
            "v_corr": 1 - beta2 ** (t + 1) if bc and group["case"] == 2 else 1.0,
        }

    def _reference_update(self, group: dict[str, Any]) -> None:
        k = self._scalars(group)
        for p in group["params"]:
            if p.grad is None:
                continue
            g, st = p.grad, self.state[p]
            m, v = st["exp_avg"], st["exp_avg_sq"]
            m.mul_(k["beta1_t"]).add_(g, alpha=1 - k["beta1_t"])                # Eq. 3
            v.mul_(k["beta2_t"]).addcmul_(g, g, value=1 - k["beta2_t"])         # Eq. 4
            vbar = torch.maximum(st["max_exp_avg_sq"], v, out=st["max_exp_avg_sq"]) if group["amsgrad"] else v
            s = ((self.t + 1) * vbar / k["v_corr"]).sqrt_().add_(group["delta"])  # Eq. 5
            if group["weight_decay"]:
                p.mul_(1 - k["step"] * group["weight_decay"])                     # Eq. 6, decoupled decay
            p.addcdiv_(m, s, value=-k["step"] / k["m_corr"])                       # Eq. 6

    def _fused_update(self, group: dict[str, Any]) -> None:
        """Eqs. 3-6 as one Adam kernel call.

        The kernel computes  x <- (1 - lr wd) x - lr / b1 * m / (sqrt(v) / sqrt(b2) + eps_k)  with
        b1 = 1 - beta1_t^(t+1), b2 = 1 - beta2_t^(t+1). Matching it to Eq. 6 with
        kappa = (t+1) / v_corr gives  lr = step * b1 / (m_corr sqrt(kappa b2)),  eps_k = delta / sqrt(kappa b2),
        and wd_k = step * wd / lr.
        """
        ps = [p for p in group["params"] if p.grad is not None]
        if not ps:
            return
        k, n, root, lr = self._fused_scalars(group)
        if lr == 0.0:  # c = 0: no movement, but the moments still update
            return self._reference_update(group)
        wd = group["weight_decay"]
        self._step_tensor.fill_(float(n))
        st = [self.state[p] for p in ps]
        kernel = torch._fused_adamw_ if wd else torch._fused_adam_
        kernel(ps, [p.grad for p in ps], [s["exp_avg"] for s in st], [s["exp_avg_sq"] for s in st],
               [s["max_exp_avg_sq"] for s in st] if group["amsgrad"] else [],
               [self._step_tensor] * len(ps), amsgrad=group["amsgrad"], lr=lr, beta1=k["beta1_t"],
               beta2=k["beta2_t"], weight_decay=k["step"] * wd / lr if wd else 0.0, eps=group["delta"] / root,
               maximize=False, grad_scale=None, found_inf=None)

    def _fused_scalars(self, group: dict[str, Any]) -> tuple[dict[str, float], int, float, float]:
        """The step's scalars, n = t + 1, and the rescaling root and lr that map Eq. 6 onto Adam's kernel (the
        identity in :meth:`_fused_update`'s docstring); shared by the fused and the native paths."""
        k = self._scalars(group)
        n = self.t + 1
        b1 = 1 - k["beta1_t"] ** n
        b2 = 1 - k["beta2_t"] ** n
        root = math.sqrt(n / k["v_corr"] * b2)
        return k, n, root, k["step"] * b1 / (k["m_corr"] * root)

    def _native_update(self, group: dict[str, Any]) -> float | None:
        """Eqs. 3-6 in the compiled kernel with the scalars of :meth:`_fused_update`; returns the group's
        ||x_{t+1} - x_0||^2, or None when some parameter had no gradient (then the sum would be incomplete)."""
        from kernels import native

        ps = [p for p in group["params"] if p.grad is not None]
        if len(ps) != len(group["params"]) or any(not (p.is_contiguous() and p.grad.is_contiguous()) for p in ps):
            self._fused_update(group)
            return None
        k, n, root, lr = self._fused_scalars(group)
        if lr == 0.0:
            self._reference_update(group)
            return None
        wd = group["weight_decay"]
        st = [self.state[p] for p in ps]
        return native.adampp_step(ps, [p.grad for p in ps], [s["exp_avg"] for s in st], [s["exp_avg_sq"] for s in st],
                                  [s["max_exp_avg_sq"] for s in st] if group["amsgrad"] else [],
                                  [s["x0"] for s in st], lr, k["beta1_t"], k["beta2_t"], group["delta"] / root,
                                  k["step"] * wd / lr if wd else 0.0, n, bool(group["amsgrad"]))

    def state_bytes(self) -> int:
        """Bytes of optimizer state (x0, moments), for comparison with torch.optim.Adam."""
        return sum(t.numel() * t.element_size() for st in self.state.values() for t in st.values()
                   if isinstance(t, Tensor))


class AdaGradPP(AdamPP):
    """AdaGrad++ (Algorithm 1): AdaGrad whose learning rate is the RMS distance travelled from x_0.

    x_{t+1} = x_t - c eta_t g_t / (sqrt(sum_i g_i^2) + delta): Adam++ Case 1 without momentum.
    """

    def __init__(self, params: Iterable[Tensor] | Iterable[dict[str, Any]], lr: float = 1.0,
                 eps: float = 1e-6, delta: float = 1e-8, weight_decay: float = 0.0, impl: str = "fused") -> None:
        super().__init__(params, lr=lr, betas=(0.0, 0.0), eps=eps, delta=delta, lam=1.0, case=1,
                         amsgrad=False, bias_correction=False, weight_decay=weight_decay, impl=impl)


def transformer_like_params(d_model: int = 256, layers: int = 6, vocab: int = 1024,
                            seed: int = 0) -> list[Tensor]:
    """About 50 tensors shaped like a small transformer (8 per layer + embedding + final norm), with
    random gradients attached: the benchmark workload (5.0M parameters at the defaults)."""
    for name, v in (("d_model", d_model), ("layers", layers), ("vocab", vocab)):
        check_int(name, v, 1)
    g = torch.Generator().manual_seed(seed)
    shapes = [(vocab, d_model)]
    for _ in range(layers):
        shapes += [(3 * d_model, d_model), (3 * d_model,), (d_model, d_model), (d_model,),
                   (4 * d_model, d_model), (4 * d_model,), (d_model, 4 * d_model), (d_model,)]
    shapes.append((d_model,))
    params = [torch.randn(s, generator=g).mul_(0.02).requires_grad_() for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=g).mul_(1e-3)
    return params


def step_benchmark(d_model: int = 256, layers: int = 6, vocab: int = 1024) -> tuple[list[Any], dict[str, Optimizer]]:
    """The kernel spotlight's workload: two ``Case``s timing one step of each optimizer over the same
    transformer-like parameters, and the optimizers themselves (for their state size).

    Case 1 compares the single-pass kernels (fused Adam, Adam++ fused, AdaGrad++ fused, and Adam++ native when
    the compiled kernel is available); case 2 compares
    Adam++ fused with the unfused paths (the per-tensor reference and torch's foreach Adam). They are kept
    apart because the unfused paths allocate and free model-sized temporaries on every call, which
    measurably slows whatever runs next in an interleaved round. Bytes are counted as streams of the model
    size: Adam reads x, g, m, v and writes x, m, v (7); the ++ methods also read x and x_0 (9), except the native
    kernel, which reads x_0 in the update's own pass (8).
    """
    from kernels.bench import Case, Target

    # Each optimizer gets its own copy of the parameters: sharing them would let one optimizer's steps
    # inflate another's distance from x_0, and with it eta.
    make = lambda: transformer_like_params(d_model, layers, vocab)
    params = make()
    n = sum(p.numel() for p in params)
    opts: dict[str, Optimizer] = {
        "Adam fused": torch.optim.Adam(params, lr=1e-3, fused=True),
        "Adam++ fused": AdamPP(make()),
        "AdaGrad++ fused": AdaGradPP(make()),
        "Adam++ native": AdamPP(make(), impl="native"),
        "Adam++ reference": AdamPP(make(), impl="reference"),
        "Adam foreach": torch.optim.Adam(make(), lr=1e-3, foreach=True),
    }
    streams = {name: (8 if name == "Adam++ native" else 9) if "++" in name else 7 for name in opts}
    size = f"{len(params)} tensors / {n / 1e6:.2f}M fp32 parameters"
    single = ["Adam fused", "Adam++ fused", "AdaGrad++ fused"] + (["Adam++ native"] if opts["Adam++ native"].impl == "native" else [])
    groups = [("single-pass kernels", single, "Adam fused"),
              ("fused vs unfused paths", ["Adam++ reference", "Adam foreach", "Adam++ fused"], "Adam++ reference")]
    best = single[-1] if single[-1] == "Adam++ native" else "Adam++ fused"
    goal = Target(best, "Adam fused", 1 / 1.2, "Adam++ reads x_0 besides Adam's 7 streams: 8/7 = 1.14x is the floor "
                  "of a single pass; a separate distance pass costs 9/7 = 1.29x")
    cases = [Case(f"optimizer step, {title}, {size}", {k: opts[k].step for k in names}, baseline=base,
                  bytes_moved={k: 4.0 * n * streams[k] for k in names}, targets=[goal] if i == 0 else [])
             for i, (title, names, base) in enumerate(groups)]
    return cases, opts


def bench_cases(quick: bool = False) -> list:
    """``make bench``: one optimizer step, Adam++ (fused, reference) and AdaGrad++ against torch's Adam."""
    return step_benchmark(*((64, 1, 256) if quick else (256, 6, 1024)))[0]
