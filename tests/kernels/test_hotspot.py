"""kernels.hotspot: local Moran's I against a closed form on a 3 x 3 grid and against a loop reference (with a
mask, random shapes); the permutation p-values against the loop reference on the same draws; the draws are
uniform k-subsets of the other cells; p-values under an iid null; Manhattan dilation against
scipy.ndimage.binary_dilation; the bad-input errors."""

import math

import numpy as np
import pytest
import torch
from scipy import ndimage, stats

from kernels import hotspot


def test_statistic_closed_form_single_peak():
    """y = 1 at the centre of a 3 x 3 grid, 0 elsewhere: n = 9, z_centre = sqrt 8, z_other = -1/sqrt 8 and
    sum z^2 = n, so I_centre = (8/9) z_c z_o = -8/9, I_corner = (8/9) z_o (2 z_o + z_c)/3 = -2/9 and
    I_edge = (8/9) z_o (4 z_o + z_c)/5 = -4/45."""
    y = torch.zeros(3, 3, dtype=torch.float64)
    y[1, 1] = 1
    out = hotspot.local_morans_i(y, permutations=0)
    want = torch.tensor([[-2 / 9, -4 / 45, -2 / 9], [-4 / 45, -8 / 9, -4 / 45], [-2 / 9, -4 / 45, -2 / 9]],
                        dtype=torch.float64)
    torch.testing.assert_close(out.I, want, rtol=0, atol=1e-14)
    torch.testing.assert_close(out.z[1, 1], torch.tensor(math.sqrt(8), dtype=torch.float64), rtol=0, atol=1e-14)
    assert out.k.tolist() == [[3, 5, 3], [5, 8, 5], [3, 5, 3]]
    assert out.quadrant.tolist() == [[2, 2, 2], [2, 4, 2], [2, 2, 2]]          # LH around an HL peak
    assert bool((out.p == 1).all())


def test_statistic_closed_form_two_blocks():
    """Left column 1, rest 0 on a 3 x 3 grid: the statistic's sign says clustered (I > 0) on both sides of
    the edge cells and the quadrants are HH on the left, LL on the right."""
    y = torch.zeros(3, 3, dtype=torch.float64)
    y[:, 0] = 1
    out = hotspot.local_morans_i(y, permutations=0)
    zh, zl = math.sqrt(2), -1 / math.sqrt(2)                           # mean 1/3, sd sqrt(2)/3
    # (0, 0): neighbours (1, 0) high, (0, 1) and (1, 1) low; sum z^2 = 9
    assert out.I[0, 0].item() == pytest.approx(8 * zh * (zh + 2 * zl) / 3 / 9, abs=1e-14)
    # (1, 2): all five neighbours low
    assert out.I[1, 2].item() == pytest.approx(8 * zl * zl / 9, abs=1e-14)
    assert out.quadrant[:, 2].tolist() == [3, 3, 3]


@pytest.mark.parametrize("seed", range(5))
def test_statistic_equals_loop_on_random_masked_grids(seed):
    rng = np.random.default_rng(seed)
    H, W = int(rng.integers(3, 12)), int(rng.integers(3, 12))
    y = rng.gamma(1.5, 1.0, size=(H, W))
    mask = rng.random((H, W)) < 0.75
    mask[0, :3] = True
    out = hotspot.local_morans_i(torch.from_numpy(y), torch.from_numpy(mask), permutations=0)
    I_ref, _ = hotspot.local_morans_i_reference(y, mask)
    np.testing.assert_allclose(out.I.numpy(), I_ref, rtol=0, atol=1e-12)
    assert bool((out.I[~torch.from_numpy(mask)] == 0).all())
    # the lag against scipy.ndimage.convolve with a queen ring
    ring = np.ones((3, 3))
    ring[1, 1] = 0
    zm = np.where(mask, out.z.numpy(), 0)
    k = ndimage.convolve(mask.astype(float), ring, mode="constant")
    lag = np.where(mask & (k > 0), ndimage.convolve(zm, ring, mode="constant") / np.maximum(k, 1), 0)
    np.testing.assert_allclose(out.lag.numpy(), lag, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(out.k.numpy(), np.where(mask, k, 0))


@pytest.mark.parametrize("seed", range(3))
def test_p_values_equal_loop_on_the_same_draws(seed):
    rng = np.random.default_rng(10 + seed)
    H, W, P = 6, 7, 199
    y = rng.gamma(1.5, 1.0, size=(H, W))
    y[1:3, 1:3] += 4                                                    # a hot spot
    mask = rng.random((H, W)) < 0.85
    yt, mt = torch.from_numpy(y), torch.from_numpy(mask)
    out = hotspot.local_morans_i(yt, mt, P, torch.Generator().manual_seed(seed), chunk=P)
    draws = hotspot.conditional_draws(out.k[mt], P, torch.Generator().manual_seed(seed))
    _, p_ref = hotspot.local_morans_i_reference(y, mask, draws.numpy())
    np.testing.assert_allclose(out.p.numpy(), p_ref, rtol=0, atol=1e-12)
    assert out.p[1:3, 1:3].max() < 0.05 or not mask[1:3, 1:3].all()


def test_chunking_does_not_change_the_test_statistic_distribution():
    """Chunks draw fresh numbers, so p differs draw for draw, but each p stays a multiple of 1/(P+1) in
    (0, 0.5 + 1/(P+1)] and a strong hot spot is significant either way."""
    y = torch.rand(10, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y[2:5, 2:5] += 3
    for chunk in (7, 64, 999):
        p = hotspot.local_morans_i(y, None, 999, torch.Generator().manual_seed(1), chunk=chunk).p
        G = p * 1000 - 1
        torch.testing.assert_close(G, G.round(), rtol=0, atol=1e-9)
        assert float(p.min()) > 0 and float(p.max()) <= 0.501
        assert float(p[3, 3]) < 0.01


def test_draws_are_uniform_subsets_of_the_other_cells():
    n, P = 7, 20_000
    k = torch.tensor([0, 1, 3, 6, 2, 3, 5])
    d = hotspot.conditional_draws(k, P, torch.Generator().manual_seed(0))
    assert d.shape == (P, n, 6)
    for c in range(n):
        kc = int(k[c])
        rows = d[:, c, :kc]
        assert bool((d[:, c, kc:] == -1).all())
        if kc == 0:
            continue
        assert bool((rows != c).all()) and bool((rows >= 0).all()) and bool((rows < n).all())
        assert all(len(set(r)) == kc for r in rows[:500].tolist())              # without replacement
        if 0 < kc < n - 1:
            # every k-subset of the n-1 others equally likely: chi-square on the subset counts
            keys = [tuple(sorted(r)) for r in rows.tolist()]
            uniq, counts = np.unique(np.array(keys), axis=0, return_counts=True)
            assert len(uniq) == math.comb(n - 1, kc)
            assert stats.chisquare(counts).pvalue > 1e-3


def test_p_values_under_an_iid_null():
    """Folded one-sided p: about 2 alpha of the cells below alpha (a binomial band), and p ~ U(0, 1/2)."""
    hits, ps = 0, []
    for s in range(6):
        g = torch.Generator().manual_seed(s)
        y = torch.randn(20, 20, generator=g, dtype=torch.float64)
        p = hotspot.local_morans_i(y, None, 199, g).p.reshape(-1)
        hits += int((p < 0.05).sum())
        ps.append(p)
    n = 6 * 400
    rate = hits / n
    assert abs(rate - 0.1) < 4 * math.sqrt(0.1 * 0.9 / n) + 0.01
    allp = torch.cat(ps).numpy()
    assert abs(allp.mean() - 0.25) < 0.02


@pytest.mark.parametrize("seed", range(4))
def test_manhattan_dilate_equals_scipy(seed):
    rng = np.random.default_rng(seed)
    region = rng.random((int(rng.integers(3, 15)), int(rng.integers(3, 15)))) < 0.08
    cross = ndimage.generate_binary_structure(2, 1)
    for r in range(4):
        want = ndimage.binary_dilation(region, cross, iterations=r) if r else region
        np.testing.assert_array_equal(hotspot.manhattan_dilate(torch.from_numpy(region), r).numpy(), want)


def test_bad_input_raises_naming_the_argument():
    y = torch.rand(4, 4, dtype=torch.float64)

    def raises(match, fn, *args, **kwargs):
        with pytest.raises(ValueError, match=match):
            fn(*args, **kwargs)

    raises("^y:", hotspot.local_morans_i, torch.rand(4))
    raises("^y:", hotspot.local_morans_i, torch.ones(4, 4, dtype=torch.int64))
    raises("^y:", hotspot.local_morans_i, torch.full((4, 4), float("nan")))
    raises("^y:", hotspot.local_morans_i, torch.ones(4, 4))
    raises("^mask:", hotspot.local_morans_i, y, torch.ones(4, 4))
    raises("^mask:", hotspot.local_morans_i, y, torch.ones(3, 4, dtype=torch.bool))
    raises("^mask:", hotspot.local_morans_i, y, torch.zeros(4, 4, dtype=torch.bool))
    raises("^permutations:", hotspot.local_morans_i, y, None, -1)
    raises("^chunk:", hotspot.local_morans_i, y, None, 9, None, 0)
    raises("^k:", hotspot.conditional_draws, torch.tensor([1.0, 2.0]), 3)
    raises("^k:", hotspot.conditional_draws, torch.tensor([1, 2]), 3)
    raises("^permutations:", hotspot.conditional_draws, torch.tensor([1, 1]), 0)
    raises("^region:", hotspot.manhattan_dilate, torch.ones(3, 3), 1)
    raises("^r:", hotspot.manhattan_dilate, torch.ones(3, 3, dtype=torch.bool), -1)


def test_bench_cases_build_and_run_quick():
    (case,) = hotspot.bench_cases(quick=True)
    for fn in case.fns.values():
        fn()
