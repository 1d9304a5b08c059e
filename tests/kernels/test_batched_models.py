"""kernels.batched_models: one batched training of M models equals M separate trainings (one ``torch.nn`` module
and one ``torch.optim.Adam`` each, same initialisation, same steps) for logistic regressions and MLPs, with and
without early stopping; padding rows change nothing; early stopping is per model; a fitted logistic regression
matches scikit-learn's ``LogisticRegression`` with the same L2 penalty; ``pack`` against a loop; bad input."""

import numpy as np
import pytest
import torch

from kernels import batched_models as bm

F64 = torch.float64


def _data(M, L, F, seed, *, pad_from=None):
    """Random rows for M models; model m's labels follow its own direction, so the models differ."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(M, L, F, generator=g, dtype=F64)
    direction = torch.randn(M, F, generator=g, dtype=F64)
    p = torch.sigmoid((X * direction[:, None, :]).sum(-1))
    y = (torch.rand(M, L, generator=g, dtype=F64) < p).to(F64)
    a = torch.ones(M, L, dtype=F64)
    if pad_from is not None:                       # model m keeps its first pad_from[m] rows
        for m, n in enumerate(pad_from):
            a[m, n:] = 0
    return X, y, a, g


def _assert_same_fit(f1, f2, atol=1e-10):
    assert torch.equal(f1.best_step, f2.best_step)
    torch.testing.assert_close(f1.val_loss, f2.val_loss, rtol=0, atol=atol)
    for k in f1.params:
        torch.testing.assert_close(f1.params[k], f2.params[k], rtol=0, atol=atol)


# --------------------------------------------------------------------------- batched == one by one
@pytest.mark.parametrize("hidden", [0, 6])
@pytest.mark.parametrize("patience", [None, 10])
def test_batched_training_equals_one_by_one(hidden, patience):
    M, L, F = 5, 300, 4
    X, y, a, g = _data(M, L, F, seed=hidden + (patience or 0), pad_from=[300, 220, 300, 80, 150])
    Xv, yv, av, _ = _data(M, 120, F, seed=99, pad_from=[120, 60, 120, 40, 90])
    p0 = bm.init_params(M, F, hidden, generator=g)
    kw = dict(steps=150, lr=0.05, l2=1e-3, patience=patience)
    fast = bm.fit_many(p0, X, y, a, Xv, yv, av, **kw)
    slow = bm.fit_one_by_one(p0, X, y, a, Xv, yv, av, **kw)
    _assert_same_fit(fast, slow)
    # the histories agree wherever the lone run was still training
    seen = ~torch.isnan(slow.history)
    assert fast.history.shape[0] == slow.history.shape[0]
    torch.testing.assert_close(fast.history[seen], slow.history[seen], rtol=0, atol=1e-10)


@pytest.mark.parametrize("seed", range(4))
def test_random_shapes(seed):
    rng = np.random.default_rng(seed)
    M, L, F, H = (int(rng.integers(1, 7)), int(rng.integers(5, 60)), int(rng.integers(1, 6)),
                  int(rng.choice([0, 1, 3])))
    X, y, a, g = _data(M, L, F, seed, pad_from=[int(rng.integers(1, L + 1)) for _ in range(M)])
    p0 = bm.init_params(M, F, H, generator=g)
    assert bm.forward(p0, X).shape == (M, L)
    kw = dict(steps=40, lr=0.1, l2=float(rng.choice([0.0, 1e-2])), patience=int(rng.integers(1, 8)))
    _assert_same_fit(bm.fit_many(p0, X, y, a, X, y, a, **kw), bm.fit_one_by_one(p0, X, y, a, X, y, a, **kw))


def test_init_params_is_not_modified():
    X, y, a, g = _data(2, 30, 3, seed=1)
    p0 = bm.init_params(2, 3, 4, generator=g)
    copy = {k: v.clone() for k, v in p0.items()}
    bm.fit_many(p0, X, y, a, X, y, a, steps=5, patience=None)
    for k in p0:
        assert torch.equal(p0[k], copy[k])


# ----------------------------------------------------------------------------------------- padding
@pytest.mark.parametrize("hidden", [0, 5])
def test_padding_rows_have_no_effect(hidden):
    """Extra rows with weight 0 (and arbitrary, even huge, inputs and labels) leave the fit unchanged."""
    M, L, F, extra = 3, 100, 4, 37
    X, y, a, g = _data(M, L, F, seed=7)
    p0 = bm.init_params(M, F, hidden, generator=g)
    junk = torch.randn(M, extra, F, generator=g, dtype=F64) * 100
    Xp, yp = torch.cat([X, junk], 1), torch.cat([y, torch.ones(M, extra, dtype=F64)], 1)
    ap = torch.cat([a, torch.zeros(M, extra, dtype=F64)], 1)
    kw = dict(steps=60, lr=0.05, l2=1e-3, patience=8)
    _assert_same_fit(bm.fit_many(p0, X, y, a, X, y, a, **kw), bm.fit_many(p0, Xp, yp, ap, Xp, yp, ap, **kw),
                     atol=1e-12)


# ---------------------------------------------------------------------------------- early stopping
def test_early_stopping_is_per_model():
    """Model 0 is validated on its own training rows (keeps improving); model 1 on the same rows with flipped
    labels (gets worse at once). Each returns its own best step, and the batch runs until the last model's
    patience runs out."""
    M, L, F, patience = 2, 200, 3, 5
    X, y, a, g = _data(M, L, F, seed=3)
    X[1], y[1] = X[0], y[0]
    yv = y.clone()
    yv[1] = 1 - y[1]
    p0 = bm.init_params(M, F, 0, generator=g, dtype=F64)
    p0 = {k: v[:1].expand_as(v).clone() for k, v in p0.items()}          # same start for both
    fit = bm.fit_many(p0, X, y, a, X, yv, a, steps=400, lr=0.05, patience=patience)
    b0, b1 = int(fit.best_step[0]), int(fit.best_step[1])
    assert b1 < 5 < b0
    assert fit.steps == max(b0, b1) + patience                            # stopped when the last one ran out
    for m, b in enumerate((b0, b1)):
        assert fit.history[b, m] == fit.val_loss[m]
        after = fit.history[b + 1: b + patience + 1, m]
        assert bool((after >= fit.val_loss[m] - 1e-5).all())              # no improvement within patience
    # model 1's parameters are those of its best step (training to b1 steps alone ends there), not its last
    if b1 == 0:
        torch.testing.assert_close(fit.params["w"][1], p0["w"][1], rtol=0, atol=0)
    else:
        short = bm.fit_many({k: v[1:] for k, v in p0.items()}, X[1:], y[1:], a[1:], X[1:], yv[1:], a[1:],
                            steps=b1, lr=0.05, patience=None)
        torch.testing.assert_close(fit.params["w"][1], short.params["w"][0], rtol=0, atol=1e-12)
    # without patience both run all steps
    full = bm.fit_many(p0, X, y, a, X, yv, a, steps=50, lr=0.05, patience=None)
    assert full.steps == 50


def test_stopped_model_is_not_changed_by_longer_batch():
    """A model that stops early returns the same parameters whether or not others keep the batch running."""
    M, L, F = 3, 150, 4
    X, y, a, g = _data(M, L, F, seed=11)
    yv = y.clone()
    yv[2] = 1 - y[2]                                                      # model 2 stops early
    p0 = bm.init_params(M, F, 3, generator=g)
    kw = dict(steps=300, lr=0.05, patience=6)
    together = bm.fit_many(p0, X, y, a, X, yv, a, **kw)
    alone = bm.fit_many({k: v[2:] for k, v in p0.items()}, X[2:], y[2:], a[2:], X[2:], yv[2:], a[2:], **kw)
    assert together.steps > alone.steps
    assert int(together.best_step[2]) == int(alone.best_step[0])
    for k in p0:
        torch.testing.assert_close(together.params[k][2], alone.params[k][0], rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------------------ sklearn
def test_logistic_regression_matches_sklearn():
    """Mean BCE + lambda ||w||^2 (bias free) has the minimiser of sklearn's 0.5 ||w||^2 + C sum BCE with
    C = 1 / (2 lambda n)."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    M, n, F, lam = 3, 400, 4, 1e-2
    Xs, ys = [], []
    for m in range(M):
        x = rng.normal(size=(n, F))
        w = rng.normal(size=F) * 2
        Xs.append(x)
        ys.append((rng.random(n) < 1 / (1 + np.exp(-(x @ w + 0.5 * (m - 1))))).astype(float))
    X, y = torch.tensor(np.stack(Xs)), torch.tensor(np.stack(ys))
    a = torch.ones(M, n, dtype=F64)
    p0 = {"w": torch.zeros(M, F, dtype=F64), "b": torch.zeros(M, dtype=F64)}
    fit = bm.fit_many(p0, X, y, a, X, y, a, steps=3000, lr=0.02, l2=lam, patience=None)
    for m in range(M):
        ref = LogisticRegression(C=1 / (2 * lam * n), tol=1e-12, max_iter=10_000).fit(Xs[m], ys[m])
        np.testing.assert_allclose(fit.params["w"][m].numpy(), ref.coef_[0], rtol=0, atol=1e-3)
        np.testing.assert_allclose(float(fit.params["b"][m]), ref.intercept_[0], rtol=0, atol=1e-3)


# --------------------------------------------------------------------------------------------- pack
def test_pack_equals_loop():
    g = torch.Generator().manual_seed(0)
    N, T, F = 10, 3, 2
    X = torch.randn(N, T, F, generator=g)
    y = (torch.rand(N, T, generator=g) < 0.5).float()
    members = [torch.tensor([4, 1]), torch.tensor([0, 2, 9, 5]), torch.tensor([7])]
    Xp, yp, ap = bm.pack(X, y, members)
    assert Xp.shape == (3, 4 * T, F) and yp.shape == ap.shape == (3, 4 * T)
    for m, idx in enumerate(members):
        rows = [(int(c), t) for c in idx for t in range(T)]             # cells, then days
        for l, (c, t) in enumerate(rows):
            assert torch.equal(Xp[m, l], X[c, t]) and yp[m, l] == y[c, t] and ap[m, l] == 1
        assert bool((ap[m, len(rows):] == 0).all()) and bool((Xp[m, len(rows):] == 0).all())


# ---------------------------------------------------------------------------------------- bad input
def test_bad_input_raises_naming_the_argument():
    X, y, a, g = _data(2, 20, 3, seed=0)
    p0 = bm.init_params(2, 3, 0, generator=g)
    ok = dict(steps=5)

    def raises(match, fn, *args, **kwargs):
        with pytest.raises(ValueError, match=match):
            fn(*args, **kwargs)

    raises("^params:", bm.fit_many, {"w": p0["w"]}, X, y, a, X, y, a, **ok)
    raises("^params:", bm.fit_many, {"w": p0["w"], "b": p0["b"][:1]}, X, y, a, X, y, a, **ok)
    raises("^params:", bm.forward, {"W": torch.zeros(2, 3, 4), "c": torch.zeros(2, 5), "v": torch.zeros(2, 4),
                                    "b": torch.zeros(2)}, X)
    raises("^X:", bm.forward, p0, X.float())
    raises("^X:", bm.forward, p0, X[0])
    raises("^X:", bm.fit_many, p0, X[:, :, :2], y, a, X, y, a, **ok)
    raises("^X:", bm.fit_many, p0, X.float(), y, a, X, y, a, **ok)
    raises("^y:", bm.fit_many, p0, X, y * 2, a, X, y, a, **ok)
    raises("^y:", bm.fit_many, p0, X, y[:, :5], a, X, y, a, **ok)
    raises("^a:", bm.fit_many, p0, X, y, a * 0, X, y, a, **ok)
    raises("^a:", bm.fit_many, p0, X, y, -a, X, y, a, **ok)
    raises("^val X:", bm.fit_many, p0, X, y, a, X[:1], y, a, **ok)
    raises("^val a:", bm.fit_many, p0, X, y, a, X, y, torch.zeros_like(a), **ok)
    raises("^steps:", bm.fit_many, p0, X, y, a, X, y, a, steps=0)
    raises("^patience:", bm.fit_many, p0, X, y, a, X, y, a, steps=3, patience=0)
    raises("^lr, l2:", bm.fit_many, p0, X, y, a, X, y, a, steps=3, lr=-1.0)
    raises("^lr, l2:", bm.fit_many, p0, X, y, a, X, y, a, steps=3, l2=-1.0)
    raises("^M:", bm.init_params, 0, 3)
    raises("^hidden:", bm.init_params, 2, 3, -1)
    raises("^X:", bm.pack, torch.zeros(5, dtype=torch.int64), torch.zeros(5), [torch.tensor([0])])
    raises("^y:", bm.pack, torch.zeros(5, 2), torch.zeros(4), [torch.tensor([0])])
    raises("^members:", bm.pack, torch.zeros(5, 2), torch.zeros(5), [])
    raises(r"^members\[0\]:", bm.pack, torch.zeros(5, 2), torch.zeros(5), [torch.tensor([5])])
    raises(r"^members\[1\]:", bm.pack, torch.zeros(5, 2), torch.zeros(5), [torch.tensor([0]), torch.tensor([0.0])])


def test_bench_cases_build_and_run_quick():
    cases = bm.bench_cases(quick=True)
    assert len(cases) == 2
    for case in cases:
        outs = [fn() for fn in case.fns.values()]
        _assert_same_fit(outs[0], outs[1], atol=1e-4)
