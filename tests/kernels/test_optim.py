"""kernels.optim: AdaGrad++ / Adam++ against a readable reference, torch.optim at pinned eta, and bad input."""

import io
import itertools
import math

import pytest
import torch

from kernels.optim import AdaGradPP, AdamPP

SHAPES = [(7, 5), (5,), (3, 4, 2), (1,), (16, 9)]


def make_params(seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=dtype).requires_grad_() for s in SHAPES]


def set_grads(params, t, seed=1):
    """A deterministic gradient field: a curved convex part plus step-dependent noise."""
    g = torch.Generator().manual_seed(seed * 100_003 + t)
    for p in params:
        p.grad = (p.detach() ** 3 * 0.1 + p.detach() - 0.5 + 0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))


def run(opt_factory, steps=100, dtype=torch.float64, seed=0):
    params = make_params(seed, dtype)
    opt = opt_factory(params)
    etas = []
    for t in range(steps):
        set_grads(params, t)
        opt.step()
        etas.append(opt.eta)
    return params, opt, etas


VARIANTS = [dict(case=c, amsgrad=a, bias_correction=b, lam=l, weight_decay=w)
            for c, a, b, l, w in itertools.product([1, 2], [False, True], [False, True], [1.0, 0.99], [0.0, 0.1])
            if not (c == 1 and a)]


def _id(v):
    return "-".join(f"{k}={v[k]}" for k in v)


@pytest.mark.parametrize("variant", VARIANTS, ids=_id)
def test_fused_equals_reference_over_100_steps(variant):
    ref, opt_ref, eta_ref = run(lambda ps: AdamPP(ps, impl="reference", **variant))
    fast, opt_fast, eta_fast = run(lambda ps: AdamPP(ps, impl="fused", **variant))
    for a, b in zip(ref, fast):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-9)
    assert eta_fast == pytest.approx(eta_ref, rel=1e-6)


@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_adagradpp_fused_equals_reference_and_case1_adam_without_momentum(wd):
    ref, _, _ = run(lambda ps: AdaGradPP(ps, impl="reference", weight_decay=wd))
    fast, _, _ = run(lambda ps: AdaGradPP(ps, impl="fused", weight_decay=wd))
    same, _, _ = run(lambda ps: AdamPP(ps, betas=(0.0, 0.5), case=1, bias_correction=False, weight_decay=wd))
    for a, b, c in zip(ref, fast, same):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(c, a, rtol=1e-6, atol=1e-9)


def test_float32_fused_is_close_to_reference():
    ref, _, _ = run(lambda ps: AdamPP(ps, impl="reference"), dtype=torch.float32)
    fast, _, _ = run(lambda ps: AdamPP(ps, impl="fused"), dtype=torch.float32)
    for a, b in zip(ref, fast):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cls", [AdamPP, AdaGradPP])
def test_eta_starts_at_eps_never_decreases_and_grows(cls):
    _, opt, etas = run(lambda ps: cls(ps, eps=1e-6), steps=60)
    assert etas[0] == 1e-6
    assert all(b >= a for a, b in zip(etas, etas[1:]))
    assert etas[-1] > 1e-3


def test_distance_is_the_rms_displacement():
    params = make_params()
    opt = AdamPP(params, impl="fused")
    set_grads(params, 0)
    opt.step()
    flat = torch.cat([p.detach().flatten() for p in params])
    flat0 = torch.cat([opt.state[p]["x0"].flatten() for p in params])
    expected = float((flat - flat0).norm() / math.sqrt(flat.numel()))
    assert opt.distance() == pytest.approx(expected, rel=1e-12)
    opt.impl = "reference"
    assert opt.distance() == pytest.approx(expected, rel=1e-12)


def _pin_eta(opt, eta):
    """Hold eta fixed: the distance never exceeds it, so Eq. 2 keeps eta = eps."""
    opt.eta = opt.eps = eta
    opt.distance = lambda: 0.0
    return opt


def _same_trajectory(make_ours, make_theirs, before_step=lambda theirs, t: None, steps=50):
    """Run our optimizer (eta pinned) and a torch.optim one on identical gradients; return both params."""
    ours, theirs = make_params(), make_params()
    opt, ref = make_ours(ours), make_theirs(theirs)
    for t in range(steps):
        before_step(ref, t)
        set_grads(ours, t)
        set_grads(theirs, t)
        opt.step()
        ref.step()
    return ours, theirs


@pytest.mark.parametrize("impl", ["reference", "fused"])
def test_pinned_adagradpp_is_torch_adagrad_at_lr_eta(impl):
    eta = 0.05
    ours, theirs = _same_trajectory(lambda ps: _pin_eta(AdaGradPP(ps, eps=eta, delta=1e-10, impl=impl), eta),
                                    lambda ps: torch.optim.Adagrad(ps, lr=eta, eps=1e-10))
    for a, b in zip(theirs, ours):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("impl", ["reference", "fused"])
def test_pinned_adampp_case2_amsgrad_is_torch_amsgrad_with_lr_eta_over_sqrt_t(impl):
    """Case 2 with the max is AMSGrad (bias-corrected) at step size eta / sqrt(t + 1)."""
    eta, delta = 0.05, 1e-8

    def rescale(adam, t):
        for group in adam.param_groups:
            group["lr"], group["eps"] = eta / math.sqrt(t + 1), delta / math.sqrt(t + 1)

    ours, theirs = _same_trajectory(
        lambda ps: _pin_eta(AdamPP(ps, eps=eta, delta=delta, amsgrad=True, bias_correction=True, impl=impl), eta),
        lambda ps: torch.optim.Adam(ps, lr=eta, eps=delta, amsgrad=True, foreach=False), before_step=rescale)
    for a, b in zip(theirs, ours):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("impl", ["reference", "fused"])
def test_pinned_primary_configuration_is_torch_adam_with_lr_eta_over_sqrt_t(impl):
    """The chapter's primary configuration (Case 2 without the max, lambda = 1, bias correction) with eta held
    fixed is torch.optim.Adam (bias-corrected) at step size eta / sqrt(t + 1) and eps delta / sqrt(t + 1)."""
    eta, delta = 0.05, 1e-8

    def rescale(adam, t):
        for group in adam.param_groups:
            group["lr"], group["eps"] = eta / math.sqrt(t + 1), delta / math.sqrt(t + 1)

    ours, theirs = _same_trajectory(
        lambda ps: _pin_eta(AdamPP(ps, eps=eta, delta=delta, case=2, amsgrad=False, lam=1.0, bias_correction=True,
                                   impl=impl), eta),
        lambda ps: torch.optim.Adam(ps, lr=eta, eps=delta, amsgrad=False, foreach=False), before_step=rescale)
    for a, b in zip(theirs, ours):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-12)


def _oracle(steps, eps=1e-6, beta1=0.9, beta2=0.999, delta=1e-8):
    """Adam++ (Case 2 practical, bias correction) in plain Python floats, from the equations alone: the
    parameters as one flat list, the same gradient field as set_grads. Returns eta_t and x_T."""
    params = make_params()
    x = [float(v) for p in params for v in p.detach().flatten()]
    x0, m, v, eta = list(x), [0.0] * len(x), [0.0] * len(x), eps
    shapes = [p.shape for p in params]
    etas = []
    for t in range(steps):
        r = math.sqrt(sum((a - b) ** 2 for a, b in zip(x, x0)) / len(x))                  # Eq. 1
        eta = max(eta, r)                                                                  # Eq. 2
        tensors, k = [], 0
        for shape in shapes:
            n = math.prod(shape)
            tensors.append(torch.tensor(x[k:k + n], dtype=torch.float64).reshape(shape).requires_grad_())
            k += n
        set_grads(tensors, t)
        g = [float(u) for p in tensors for u in p.grad.flatten()]
        for i in range(len(x)):
            m[i] = beta1 * m[i] + (1 - beta1) * g[i]                                       # Eq. 3, lambda = 1
            v[i] = beta2 * v[i] + (1 - beta2) * g[i] ** 2                                  # Eq. 4, Case 2
            mhat, vhat = m[i] / (1 - beta1 ** (t + 1)), v[i] / (1 - beta2 ** (t + 1))
            s = math.sqrt((t + 1) * vhat) + delta                                          # Eq. 5
            x[i] -= eta * mhat / s                                                         # Eq. 6, c = 1
        etas.append(eta)
    return etas, x


@pytest.mark.parametrize("impl", ["reference", "fused"])
def test_multi_step_eta_and_iterates_equal_an_oracle_written_from_the_equations(impl):
    steps = 40
    etas, x = _oracle(steps)
    params, opt, got = run(lambda ps: AdamPP(ps, impl=impl), steps=steps)
    assert got == pytest.approx(etas, rel=1e-9, abs=1e-15)
    assert etas[0] == 1e-6 and etas[-1] > 100 * etas[0], "the oracle's eta did not grow: the test would be weak"
    flat = [float(u) for p in params for u in p.detach().flatten()]
    assert flat == pytest.approx(x, rel=1e-8, abs=1e-10)


@pytest.mark.parametrize("impl", ["reference", "fused"])
def test_state_dict_round_trip_continues_the_same_trajectory(impl):
    params = make_params()
    opt = AdamPP(params, impl=impl, amsgrad=True, weight_decay=0.01)
    for t in range(10):
        set_grads(params, t)
        opt.step()
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    clone = [p.detach().clone().requires_grad_() for p in params]
    opt2 = AdamPP(clone, impl=impl, amsgrad=True, weight_decay=0.01)
    buf.seek(0)
    opt2.load_state_dict(torch.load(buf, weights_only=True))
    assert opt2.eta == opt.eta and opt2.t == opt.t == 10
    for t in range(10, 20):
        set_grads(params, t)
        set_grads(clone, t)
        opt.step()
        opt2.step()
    for a, b in zip(params, clone):
        assert torch.equal(a, b)
    assert opt2.eta == opt.eta


def test_closure_is_called_and_its_loss_returned():
    w = torch.tensor([3.0, -2.0], requires_grad=True)
    opt = AdamPP([w])

    def closure():
        opt.zero_grad()
        loss = (w ** 2).sum()
        loss.backward()
        return loss

    losses = [float(opt.step(closure).detach()) for _ in range(200)]
    assert losses[0] == 13.0 and losses[-1] < 1e-2


def test_trains_a_real_module_and_reports_state_memory():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    x = torch.randn(256, 8)
    y = x[:, :1] * 2 - x[:, 1:2]
    opt = AdamPP(model.parameters())
    first = None
    for _ in range(300):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    assert loss.item() < 0.1 * first
    n = sum(p.numel() for p in model.parameters())
    assert opt.state_bytes() == 3 * 4 * n  # x0, m, v in float32


def test_params_without_grad_are_left_alone():
    a, b = make_params()[:2]
    opt = AdamPP([a, b])
    b0 = b.detach().clone()
    a.grad = torch.ones_like(a)
    opt.step()
    assert torch.equal(b, b0)


@pytest.mark.parametrize("kwargs, name", [
    (dict(lr=-1.0), "lr"), (dict(betas=(1.0, 0.9)), "betas"), (dict(betas=(0.9,)), "betas"),
    (dict(eps=0.0), "eps"), (dict(eps=float("inf")), "eps"), (dict(delta=-1e-8), "delta"),
    (dict(lam=0.0), "lam"), (dict(lam=1.5), "lam"), (dict(case=3), "case"), (dict(amsgrad=1), "amsgrad"),
    (dict(bias_correction="yes"), "bias_correction"), (dict(weight_decay=-0.1), "weight_decay"),
    (dict(impl="triton"), "impl"),
])
def test_invalid_hyperparameters_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=f"^{name}:"):
        AdamPP(make_params(), **kwargs)


def test_sparse_gradients_are_refused_clearly():
    emb = torch.nn.Embedding(10, 3, sparse=True)
    opt = AdamPP(emb.parameters())
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(ValueError, match="sparse gradients are not supported"):
        opt.step()


def test_load_state_dict_from_another_optimizer_is_refused():
    params = make_params()
    adam = torch.optim.Adam(params)
    with pytest.raises(ValueError, match="plusplus"):
        AdamPP(params).load_state_dict(adam.state_dict())

