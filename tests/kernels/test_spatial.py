"""kernels.spatial: sub-window means against loops and scipy.ndimage, the one-observation KS test against
scipy.stats.kstest and the Poisson tails against scipy.stats.poisson (10^4 random cases each, within 1e-10),
the critical counts against brute force, firing rates under the null, the compass of the sector masks, and the
bad-input errors."""

import math

import numpy as np
import pytest
import torch
from scipy import ndimage, stats

from kernels import spatial


# ------------------------------------------------------------------------------------- sub-window means
@pytest.mark.parametrize("lead, H, W, k, R", [((), 9, 9, 3, 4), ((2,), 12, 15, 5, 4), ((2, 3), 7, 6, 1, 2),
                                             ((3,), 10, 11, 9, 4), ((), 5, 5, 3, 1), ((1,), 3, 3, 3, 1)])
def test_subwindow_means_equal_loops(lead, H, W, k, R):
    g = torch.Generator().manual_seed(H * W + k)
    x = torch.randn(*lead, H, W, generator=g, dtype=torch.float64)
    got = spatial.subwindow_means(x, k, R)
    P = 2 * R + 2 - k
    assert got.shape == (*lead, H - 2 * R, W - 2 * R, P, P)
    torch.testing.assert_close(got, spatial.subwindow_means_reference(x, k, R), rtol=0, atol=1e-12)


def test_subwindow_means_equal_scipy_uniform_filter():
    rng = np.random.default_rng(3)
    x = rng.gamma(2.0, 0.5, size=(4, 20, 17))
    R, k = 4, 5
    got = spatial.subwindow_means(torch.from_numpy(x), k, R).numpy()
    filt = ndimage.uniform_filter(x, size=(1, k, k), mode="constant")        # centred k x k means
    h = k // 2
    for r in range(20 - 2 * R):
        for c in range(17 - 2 * R):
            for a in range(2 * R + 2 - k):
                for b in range(2 * R + 2 - k):
                    np.testing.assert_allclose(got[:, r, c, a, b], filt[:, r + a + h, c + b + h], rtol=0, atol=1e-12)


def test_whole_window_mean_and_window_values():
    x = torch.arange(2 * 11 * 10, dtype=torch.float32).reshape(2, 11, 10)
    vals = spatial.window_values(x, 3)                                     # [2, 5, 4, 49]
    assert vals.shape == (2, 5, 4, 49)
    torch.testing.assert_close(vals[1, 2, 3], x[1, 2:9, 3:10].reshape(-1))
    torch.testing.assert_close(spatial.subwindow_means(x, 7, 3)[..., 0, 0], vals.mean(-1))


# -------------------------------------------------------------------------------------------------- KS
def _random_ks_cases(n_cases, max_n, seed):
    rng = np.random.default_rng(seed)
    pools, xs = [], []
    for i in range(n_cases):
        N = int(rng.integers(1, max_n + 1))
        if i % 3 == 0:
            pool = rng.integers(0, 12, N).astype(float)                   # heavy ties
        else:
            pool = rng.gamma(2.0, 1.5, N)
        x = float(rng.choice(pool)) if i % 4 == 0 else float(rng.gamma(2.0, 1.5) if i % 3 else rng.integers(-1, 14))
        pools.append(pool)
        xs.append(x)
    return pools, xs


def test_ks1_pvalue_equals_scipy_kstest_on_10k_cases():
    pools, xs = _random_ks_cases(10_000, 400, 0)
    padded = np.full((len(pools), 400), np.nan)
    for i, p in enumerate(pools):
        padded[i, :len(p)] = p
    got = spatial.ks1_pvalue(torch.tensor(xs, dtype=torch.float64)[:, None], torch.from_numpy(padded))[:, 0].numpy()
    want = np.array([stats.kstest([x], p).pvalue for x, p in zip(xs, pools)])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)
    assert (want < 0.05).mean() > 0.05                                    # the cases exercise both outcomes


def test_ks1_pvalue_equals_scipy_for_large_pools_and_the_reference():
    pools, xs = _random_ks_cases(40, 10_000, 1)
    for x, p in zip(xs, pools):
        pt = torch.from_numpy(p)
        got = float(spatial.ks1_pvalue(torch.tensor([x], dtype=torch.float64), pt)[0])
        assert abs(got - stats.kstest([x], p).pvalue) < 1e-10
        assert abs(got - spatial.ks1_pvalue_reference(x, pt)) < 1e-12


def test_ks1_pvalue_broadcasts_and_treats_nan_as_missing():
    g = torch.Generator().manual_seed(5)
    pool = torch.rand(3, 1, 50, generator=g, dtype=torch.float64)
    x = torch.rand(3, 4, 7, generator=g, dtype=torch.float64)
    got = spatial.ks1_pvalue(x, pool)
    assert got.shape == (3, 4, 7)
    for i in range(3):
        for j in range(4):
            torch.testing.assert_close(got[i, j], spatial.ks1_pvalue(x[i, j], pool[i, 0]))
    holes = pool.clone()
    holes[..., ::5] = math.nan
    dropped = spatial.ks1_pvalue(x[0, 0], pool[0, 0, [i for i in range(50) if i % 5]])
    torch.testing.assert_close(spatial.ks1_pvalue(x[0, 0], holes[0, 0]), dropped)
    empty = torch.full((4,), math.nan, dtype=torch.float64)
    assert torch.isnan(spatial.ks1_pvalue(x[0, 0], empty)).all()          # no pool, no p-value


def test_ks_smallest_p_is_two_over_n_plus_one():
    for N in (10, 39, 40, 100):
        pool = torch.arange(1, N + 1, dtype=torch.float64)
        p = spatial.ks1_pvalue(torch.tensor([N + 5.0, -3.0], dtype=torch.float64), pool)
        torch.testing.assert_close(p, torch.full((2,), 2.0 / (N + 1), dtype=torch.float64))
        assert bool((p < 0.05).all()) == (N >= 40)                        # N <= 39 can never reject


def test_ks_firing_rate_under_the_null_and_never_on_two_valued_features():
    g = torch.Generator().manual_seed(11)
    pool = torch.distributions.Gamma(1.5, 0.5).sample((999,)).double()
    x = torch.distributions.Gamma(1.5, 0.5).sample((20_000,)).double()
    low, high = spatial.ks_tail_flags(x, pool, 0.05)
    for rate in (low.double().mean(), high.double().mean()):              # each tail: 24/1000 in expectation
        assert abs(float(rate) - 0.024) < 4 * math.sqrt(0.024 * 0.976 / 20_000) + 0.01
    weekend = torch.tensor([1.0] * 700 + [2.0] * 299, dtype=torch.float64)  # a two-valued feature, heavy ties
    wl, wh = spatial.ks_tail_flags(torch.tensor([1.0, 2.0], dtype=torch.float64), weekend, 0.05)
    assert not bool(wl.any() | wh.any())
    del g


def test_ks_tail_flags_direction_and_zeros():
    pool = torch.tensor([0.0, 0.0, 0.0] + list(range(1, 101)), dtype=torch.float64)
    low, high = spatial.ks_tail_flags(torch.tensor([0.0, 0.5, 50.0, 200.0], dtype=torch.float64), pool, 0.05)
    assert low.tolist() == [False, True, False, False]                    # 0 never fires; zeros are not in the pool
    assert high.tolist() == [False, False, False, True]
    x = torch.tensor([0.0, -1.0], dtype=torch.float64)                   # without skipping, zeros are ordinary values
    low2, _ = spatial.ks_tail_flags(x, pool, 0.05, skip_zeros=False)
    assert low2.tolist() == (spatial.ks1_pvalue(x, pool) < 0.05).tolist() == [False, True]


# --------------------------------------------------------------------------------------------- Poisson
def test_poisson_tails_equal_scipy_on_10k_cases():
    rng = np.random.default_rng(2)
    n = 10_000
    x = np.concatenate([rng.uniform(-3, 60, n // 2), rng.integers(0, 400, n // 2).astype(float)])
    mu = np.concatenate([rng.uniform(0, 60, n // 2), rng.uniform(0, 400, n // 2)])
    mu[::97] = 0.0
    lo, hi = spatial.poisson_tails(torch.from_numpy(x), torch.from_numpy(mu))
    np.testing.assert_allclose(lo.numpy(), stats.poisson.cdf(x, mu), rtol=0, atol=1e-10)
    np.testing.assert_allclose(hi.numpy(), stats.poisson.sf(x, mu), rtol=0, atol=1e-10)


def test_poisson_tails_where_torch_gammaincc_is_inaccurate_and_far_out():
    k = torch.tensor([20.0, 20.0, 150.0, 1000.0, 9500.0, 3.0, 0.0], dtype=torch.float64)
    mu = torch.tensor([20.7, 21.3, 160.0, 1010.0, 9400.0, 300.0, 1e-9], dtype=torch.float64)
    lo, hi = spatial.poisson_tails(k, mu)
    np.testing.assert_allclose(lo.numpy(), stats.poisson.cdf(k.numpy(), mu.numpy()), rtol=0, atol=1e-10)
    np.testing.assert_allclose(hi.numpy(), stats.poisson.sf(k.numpy(), mu.numpy()), rtol=0, atol=1e-10)
    for kk, mm in [(3.7, 2.5), (0.0, 0.0), (5.0, 0.0), (-0.5, 3.0), (12.0, 7.25)]:
        ref = spatial.poisson_tails_reference(kk, mm)
        got = spatial.poisson_tails(torch.tensor(kk, dtype=torch.float64), torch.tensor(mm, dtype=torch.float64))
        assert abs(float(got[0]) - ref[0]) < 1e-12 and abs(float(got[1]) - ref[1]) < 1e-12


@pytest.mark.parametrize("alpha", [0.05, 0.01, 0.3])
def test_poisson_critical_counts_equal_brute_force(alpha):
    rng = np.random.default_rng(int(alpha * 100))
    mu = np.concatenate([[0.0, 1e-6, 0.05, 1.0, 3.0], rng.uniform(0, 40, 200), rng.uniform(100, 2000, 20)])
    k_low, k_high = spatial.poisson_critical_counts(torch.from_numpy(mu), alpha)
    for m, kl, kh in zip(mu, k_low.tolist(), k_high.tolist()):
        ks = np.arange(0, int(m + 20 * math.sqrt(m) + 60))
        lows = ks[stats.poisson.cdf(ks, m) < alpha]
        assert kl == (int(lows.max()) if lows.size else -1)
        assert kh == int(ks[stats.poisson.sf(ks, m) < alpha].min())


def test_poisson_flags_equal_pvalue_decisions_and_null_rates():
    g = torch.Generator().manual_seed(4)
    mu = torch.rand(300, 1, generator=g, dtype=torch.float64) * 20
    x = torch.poisson(mu.expand(300, 200).contiguous(), generator=g) + torch.rand(300, 200, generator=g, dtype=torch.float64)
    low, high = spatial.poisson_tail_flags(x, mu, 0.05, skip_zeros=False)
    p_lo, p_hi = spatial.poisson_tails(x, mu)
    assert torch.equal(low, p_lo < 0.05) and torch.equal(high, p_hi < 0.05)
    n = x.numel()
    k_low, k_high = spatial.poisson_critical_counts(mu, 0.05)
    exact_low = stats.poisson.cdf(k_low.numpy(), mu.numpy()).mean()        # P(K <= k_low) < alpha: conservative
    exact_high = stats.poisson.sf(k_high.numpy() - 1, mu.numpy()).mean()   # P(K >= k_high) >= alpha: p_high = P(X > k)
    sd = 4 * math.sqrt(0.05 * 0.95 / n)                                    # leaves out the observed count itself
    assert abs(float(low.double().mean()) - exact_low) < sd and exact_low < 0.05
    assert abs(float(high.double().mean()) - exact_high) < sd and exact_high > 0.05
    z_low, _ = spatial.poisson_tail_flags(torch.zeros(3, dtype=torch.float64), torch.full((3,), 9.0, dtype=torch.float64))
    assert not bool(z_low.any())                                           # 0 never fires with skip_zeros


# ------------------------------------------------------------------------------------- sectors and rings
def test_sector_masks_point_the_right_way_and_partition_the_window():
    R = 4
    m = spatial.sector_ring_masks(R)
    assert m.shape == (11, 9, 9)
    name = lambda r, c: [spatial.SECTORS[s] for s in range(8) if m[s, r, c]]
    assert name(R - 1, R + 1) == ["NE"] and name(0, 2 * R) == ["NE"]      # up and right on the map: north-east
    assert name(R - 2, R) == ["N"] and name(R, R + 3) == ["E"] and name(R + 1, R - 1) == ["SW"]
    assert name(R, 0) == ["W"] and name(2 * R, R) == ["S"] and name(R - 1, R - 1) == ["NW"]
    assert name(R, R) == []                                                 # the centre has no bearing
    sectors, rings = m[:8].sum(0), m[8:].sum(0)
    assert torch.equal(sectors + (torch.arange(81).reshape(9, 9) == 40).float(), torch.ones(9, 9))
    assert torch.equal(rings, torch.ones(9, 9))
    size = m[:8].sum(dim=(1, 2)).tolist()                                   # a square grid is 4-fold symmetric:
    assert size[0::2] == [8.0] * 4 and size[1::2] == [12.0] * 4             # N, E, S, W hold 8 cells, diagonals 12
    assert m[8, R, R] == 1 and m[10, 0, 0] == 1 and m[9, R, R + 2] == 1     # near holds the centre, far the corners


def test_region_pool_equals_a_loop():
    g = torch.Generator().manual_seed(8)
    masks = spatial.sector_ring_masks(3)
    maps = torch.rand(2, 5, 7, 7, generator=g)
    got = spatial.region_pool(maps, masks)
    assert got.shape == (2, 5, 11)
    for i in range(11):
        want = (maps * masks[i]).sum(dim=(-2, -1)) / masks[i].sum()
        torch.testing.assert_close(got[..., i], want)


# -------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("call, name", [
    (lambda: spatial.subwindow_means(torch.zeros(9, 9, dtype=torch.int64), 3, 4), "x"),
    (lambda: spatial.subwindow_means(torch.zeros(9, 9), 11, 4), "k"),
    (lambda: spatial.subwindow_means(torch.zeros(9, 9), 0, 4), "k"),
    (lambda: spatial.subwindow_means(torch.zeros(8, 9), 3, 4), "x"),
    (lambda: spatial.subwindow_means(torch.zeros(9, 9), 3, -1), "radius"),
    (lambda: spatial.window_values(torch.zeros(4), 1), "x"),
    (lambda: spatial.ks1_pvalue(torch.tensor([math.nan]), torch.ones(5)), "x"),
    (lambda: spatial.ks1_pvalue(torch.ones(2), torch.tensor([1.0, math.inf])), "pool"),
    (lambda: spatial.ks1_pvalue(torch.ones(2), [1.0, 2.0]), "pool"),
    (lambda: spatial.ks_tail_flags(torch.ones(2), torch.ones(5), alpha=1.5), "alpha"),
    (lambda: spatial.poisson_tails(torch.ones(3), torch.tensor([1.0, -2.0, 1.0])), "mu"),
    (lambda: spatial.poisson_tails(torch.ones(3, dtype=torch.int32), torch.ones(3)), "x"),
    (lambda: spatial.poisson_critical_counts(torch.ones(3), alpha=0), "alpha"),
    (lambda: spatial.sector_ring_masks(0), "radius"),
    (lambda: spatial.region_pool(torch.ones(2, 7, 7), spatial.sector_ring_masks(4)), "maps"),
    (lambda: spatial.region_pool(torch.ones(9, 9), torch.ones(9, 9)), "masks"),
])
def test_bad_input_raises_value_error_naming_the_argument(call, name):
    with pytest.raises(ValueError, match=rf"^{name}:"):
        call()


def test_bench_cases_build_and_run_quickly():
    cases = spatial.bench_cases(quick=True)
    assert len(cases) == 4
    for case in cases:
        for fn in case.fns.values():
            fn()
