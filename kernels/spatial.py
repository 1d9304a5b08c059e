"""Statistics on a city grid: sliding sub-window means, one-observation KS tests and Poisson tail tests for
every cell at once, and pooling over compass sectors and distance rings.

First written for GeoPro-Net (B. An, X. Zhou et al., "GeoPro-Net: Learning Interpretable Spatiotemporal
Prediction Models through Statistically-Guided Geo-Prototyping", arXiv 2412.15353, AAAI 2025), whose
"Geo-concept convolution" is a convolution with a hypothesis test in place of the dot product; the equation
labels follow the chapter ``book/spatial/geopro_net.ipynb``. Nothing here is specific to that paper: a grid is
any ``[..., H, W]`` tensor, row 0 is the north edge and column 0 the west edge (``imshow``'s default layout).

* Sub-window means (eq-subwin). For a target cell c whose (2R+1)x(2R+1) window lies inside the grid, the
  means of all k x k sub-windows fully inside that window,

      x_{k,q}(c) = (1/k^2) sum_{(i,j) in W_{k,q}(c)} X(i,j),      q in a P x P lattice, P = 2R + 2 - k,

  computed as ONE ``avg_pool2d`` over the whole grid followed by ONE ``unfold`` that gathers each target's
  P x P block of pooled values (``subwindow_means``). ``window_values`` gathers the (2R+1)^2 raw values of each
  target's window, the local reference sample.
* One-observation two-sample KS test (eq-ks). ``scipy.stats.kstest([x], pool)`` with a pool of N values, of
  which n_<(x) are below x and n_<=(x) at most x, has the statistic D = max(n_</N, 1 - n_<=/N). With
  h = N D = max(n_<, N - n_<=) an integer, SciPy's exact two-sided p-value for sizes 1 and N is

      p = min(1, 2 (N - h + 1) / (N + 1)),

  a rank test: the smallest possible p is 2 / (N + 1), so a pool of N <= 39 values can never reject at
  alpha = 0.05. ``ks1_pvalue`` gets n_< and n_<= for every observation from ``searchsorted`` on the sorted
  pool (SciPy switches to an asymptotic p-value above N = 10,000; this function stays exact).
* Poisson tails (eq-poisson): p_low = P(X <= floor(x); mu) = Q(floor(x) + 1, mu), the regularised upper
  incomplete gamma function, and p_high = P(X > floor(x); mu) = 1 - p_low, equal to
  ``scipy.stats.poisson.cdf(x, mu)`` and ``.sf(x, mu)`` (``poisson_tails``). The incomplete gamma function
  is computed here in float64 (power series for P below a + 1, Lentz's continued fraction for Q above it), because
  ``torch.special.gammaincc`` is off by up to 4e-10 around a ~ x ~ 20. A test with a fixed mu only needs the
  critical counts k_low(mu) = max{k : p_low(k) < alpha} and k_high(mu) = min{k : p_high(k) < alpha}
  (``poisson_critical_counts``), which ``poisson_tail_flags`` compares with floor(x): the same decisions, with
  the tails evaluated once per mu instead of once per observation.
* Sector and ring pooling (eq-pool). Fixed 0/1 masks on the (2R+1)^2 window: 8 compass sectors (N, NE, ...,
  NW, by the bearing of each cell from the centre, clockwise from north, rounded to the nearest 45 degrees; the
  centre has no bearing and belongs to no sector) and 3 distance rings (d <= d_max/3, d <= 2 d_max/3, beyond,
  with d_max = R sqrt 2). ``region_pool`` averages a map over each mask, v_m = sum A_m M / sum A_m, as one
  ``einsum``.

Every public function validates its arguments and raises ``ValueError`` naming the argument with what was
expected and what was received. ``*_reference`` functions are the slow, obvious versions the tests compare
with; the tests also compare with ``scipy.stats.kstest``, ``scipy.stats.poisson`` and ``scipy.ndimage``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from kernels._validate import check_int, describe

SECTORS: tuple[str, ...] = ("N", "NE", "E", "SE", "S", "SW", "W", "NW")
RINGS: tuple[str, ...] = ("near", "middle", "far")
REGIONS: tuple[str, ...] = SECTORS + RINGS


# --------------------------------------------------------------------------------------------- validation
def _check_float(name: str, x: object, min_ndim: int = 0, *, finite: bool = True, allow_nan: bool = False) -> Tensor:
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.ndim < min_ndim:
        want = f"a floating-point tensor with at least {min_ndim} dimensions" if min_ndim else "a floating-point tensor"
        raise ValueError(f"{name}: expected {want}, received {describe(x)}")
    if finite and x.numel():
        bad = torch.isinf(x) if allow_nan else ~torch.isfinite(x)
        if bool(bad.any()):
            what = "infinite" if allow_nan else "non-finite"
            raise ValueError(f"{name}: expected finite values, received {int(bad.sum())} {what} entries")
    return x


def _check_alpha(alpha: float) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha: expected a significance level in (0, 1), received {alpha!r}")
    return float(alpha)


def _check_window(x: Tensor, radius: int, k: int | None = None) -> None:
    check_int("radius", radius, 0)
    if k is not None:
        check_int("k", k, 1)
        if k > 2 * radius + 1:
            raise ValueError(f"k: expected a sub-window no larger than the window, k <= 2*radius+1 = {2 * radius + 1}, "
                             f"received {k}")
    H, W = x.shape[-2:]
    if H < 2 * radius + 1 or W < 2 * radius + 1:
        raise ValueError(f"x: expected a grid [..., H, W] with H, W >= 2*radius+1 = {2 * radius + 1} (at least one "
                         f"target with a full window), received shape {tuple(x.shape)}")


# ----------------------------------------------------------------------------------------- sliding windows
def subwindow_means(x: Tensor, k: int, radius: int) -> Tensor:
    """Means of every k x k sub-window inside every target's (2R+1)^2 window (eq-subwin).

    ``x`` [..., H, W] (float). Returns [..., H - 2R, W - 2R, P, P] with P = 2R + 2 - k: entry [..., r, c, a, b]
    is the mean of the k x k block whose north-west corner is at grid cell (r + a, c + b), i.e. the sub-window
    at offset (a, b) inside the window of the target at grid cell (r + R, c + R). ``k = 2R + 1`` gives each
    target's whole-window mean (P = 1).
    """
    _check_float("x", x, 2)
    _check_window(x, radius, k)
    *lead, H, W = x.shape
    P = 2 * radius + 2 - k
    flat = x.reshape(-1, 1, H, W)
    pooled = F.avg_pool2d(flat, k, stride=1)                          # [B, 1, H-k+1, W-k+1]: every k x k mean
    blocks = F.unfold(pooled, kernel_size=P)                           # [B, P*P, (H-2R)*(W-2R)]
    out = blocks.reshape(-1, P, P, H - 2 * radius, W - 2 * radius).permute(0, 3, 4, 1, 2)
    return out.reshape(*lead, H - 2 * radius, W - 2 * radius, P, P)


def subwindow_means_reference(x: Tensor, k: int, radius: int) -> Tensor:
    """Eq. (eq-subwin) by loops over targets and sub-windows (slow; the tests' oracle)."""
    *lead, H, W = x.shape
    P = 2 * radius + 2 - k
    out = x.new_zeros(*lead, H - 2 * radius, W - 2 * radius, P, P)
    for r in range(H - 2 * radius):
        for c in range(W - 2 * radius):
            for a in range(P):
                for b in range(P):
                    out[..., r, c, a, b] = x[..., r + a:r + a + k, c + b:c + b + k].mean(dim=(-2, -1))
    return out


def window_values(x: Tensor, radius: int) -> Tensor:
    """The (2R+1)^2 values of every target's window: [..., H, W] -> [..., H - 2R, W - 2R, (2R+1)^2], row-major
    inside the window (north-west corner first)."""
    _check_float("x", x, 2, finite=False)
    _check_window(x, radius)
    *lead, H, W = x.shape
    S = 2 * radius + 1
    cols = F.unfold(x.reshape(-1, 1, H, W), kernel_size=S)             # [B, S*S, (H-2R)*(W-2R)]
    out = cols.reshape(-1, S * S, H - 2 * radius, W - 2 * radius).permute(0, 2, 3, 1)
    return out.reshape(*lead, H - 2 * radius, W - 2 * radius, S * S)


# -------------------------------------------------------------------------------------- one-observation KS
def ks1_pvalue(x: Tensor, pool: Tensor) -> Tensor:
    """Two-sided p-value of the two-sample KS test of the one-element sample {x} against ``pool`` (eq-ks).

    ``x`` [..., M] observations (finite); ``pool`` [..., N] the reference sample(s), NaN marking missing entries
    (so pools of different sizes share one tensor). A 1-D pool is shared by every observation; otherwise the
    leading dims of ``pool`` broadcast against those of ``x``. Returns float64 [..., M], equal to
    ``scipy.stats.kstest([x], pool_without_nans).pvalue`` (exactly, up to float rounding, for N <= 10,000,
    where SciPy uses its exact method); NaN where a pool has no value.
    """
    _check_float("x", x, 1)
    _check_float("pool", pool, 1, allow_nan=True)
    p64 = pool.double()
    n = (~torch.isnan(p64)).sum(-1, keepdim=True)                       # [..., 1] pool sizes
    srt = torch.sort(torch.nan_to_num(p64, nan=math.inf), dim=-1).values  # missing -> +inf, sorted to the end
    x64 = x.double().contiguous()
    if srt.ndim > 1:
        lead = torch.broadcast_shapes(srt.shape[:-1], x64.shape[:-1])
        srt = srt.expand(*lead, srt.shape[-1]).contiguous()
        x64 = x64.expand(*lead, x64.shape[-1]).contiguous()
        n = n.expand(*lead, 1)
    n_lt = torch.searchsorted(srt, x64, side="left")                    # n_<(x)   (+inf never counts)
    n_le = torch.searchsorted(srt, x64, side="right")                   # n_<=(x)
    h = torch.maximum(n_lt, n - n_le)                                    # N * D, an integer
    n64 = n.double()
    p = (2.0 * (n64 - h + 1.0) / (n64 + 1.0)).clamp(max=1.0)
    return torch.where(n > 0, p, torch.full_like(p, math.nan))


def ks1_pvalue_reference(x: float, pool: Tensor) -> float:
    """Eq. (eq-ks) for one observation, straight from the definitions of D and of the exact p-value."""
    vals = pool[~torch.isnan(pool)].double()
    N = vals.numel()
    D = max(float((vals < x).sum()) / N, 1.0 - float((vals <= x).sum()) / N)
    return min(1.0, 2.0 * (N * (1.0 - D) + 1.0) / (N + 1.0))


def ks_tail_flags(x: Tensor, pool: Tensor, alpha: float = 0.05, skip_zeros: bool = True) -> tuple[Tensor, Tensor]:
    """(low, high) bool [..., M]: x is significantly different from ``pool`` (``ks1_pvalue`` < alpha) and below /
    at or above the pool's mean. With ``skip_zeros``, zeros are dropped from the pool and an observation equal to
    0 never fires (GeoPro-Net's convention for sparse counts and densities)."""
    alpha = _check_alpha(alpha)
    _check_float("x", x, 1)
    _check_float("pool", pool, 1, allow_nan=True)
    if skip_zeros:
        pool = pool.masked_fill(pool == 0, math.nan)
    p = ks1_pvalue(x, pool)
    centre = torch.nanmean(pool.double(), dim=-1, keepdim=True)
    sig = p < alpha
    if skip_zeros:
        sig = sig & (x != 0)
    below = x.double() < centre
    return sig & below, sig & ~below


# ------------------------------------------------------------------------------------------ Poisson tails
def _lower_gamma_series(a: Tensor, x: Tensor, tol: float = 1e-17, max_iter: int = 100_000, chunk: int = 16) -> Tensor:
    """Regularised lower incomplete gamma P(a, x) by its power series; converges for any x, fast for x < a + 1.

    P(a, x) = x^a e^-x / Gamma(a+1) * sum_{n>=0} x^n / ((a+1)...(a+n)). The sum runs ``chunk`` terms at a time on
    the elements not yet converged (a term below ``tol`` times the sum), so indexing costs once per chunk."""
    total = torch.ones_like(x)
    idx = torch.arange(x.numel())
    av, xv = a.reshape(-1), x.reshape(-1)
    ta, tx, tt, ts = av, xv, torch.ones_like(xv), torch.ones_like(xv)
    n = 0
    while idx.numel() and n < max_iter:
        for _ in range(chunk):
            n += 1
            tt = tt * tx / (ta + n)
            ts = ts + tt
        total.view(-1)[idx] = ts
        keep = tt > tol * ts
        idx, ta, tx, tt, ts = idx[keep], ta[keep], tx[keep], tt[keep], ts[keep]
    return torch.exp(torch.xlogy(a, x) - x - torch.lgamma(a + 1.0)) * total


def _upper_gamma_cf(a: Tensor, x: Tensor, tol: float = 1e-15, max_iter: int = 100_000, chunk: int = 8) -> Tensor:
    """Regularised upper incomplete gamma Q(a, x) by its continued fraction (modified Lentz), for x >= a + 1,
    ``chunk`` steps at a time on the elements not yet converged."""
    tiny = 1e-300
    h_out = torch.empty_like(x)
    idx = torch.arange(x.numel())
    ta = a.reshape(-1)
    b = x.reshape(-1) + 1.0 - ta
    c = torch.full_like(b, 1.0 / tiny)
    d = 1.0 / b
    h = d.clone()
    i = 0
    while idx.numel() and i < max_iter:
        delta = h
        for _ in range(chunk):
            i += 1
            an = -i * (i - ta)
            b = b + 2.0
            d = an * d + b
            d = torch.where(d.abs() < tiny, torch.full_like(d, tiny), d)
            c = b + an / c
            c = torch.where(c.abs() < tiny, torch.full_like(c, tiny), c)
            d = 1.0 / d
            delta = d * c
            h = h * delta
        h_out.view(-1)[idx] = h
        keep = (delta - 1.0).abs() > tol
        idx, ta, b, c, d, h = idx[keep], ta[keep], b[keep], c[keep], d[keep], h[keep]
    return torch.exp(torch.xlogy(a, x) - x - torch.lgamma(a)) * h_out


def poisson_tails(x: Tensor, mu: Tensor) -> tuple[Tensor, Tensor]:
    """(p_low, p_high) = (P(X <= floor(x)), P(X > floor(x))) for X ~ Poisson(mu) (eq-poisson), float64.

    ``x`` and ``mu`` broadcast; ``mu >= 0``. Equal to ``scipy.stats.poisson.cdf(x, mu)`` and ``.sf(x, mu)``,
    including SciPy's flooring of a non-integer x, p_low = 0 for x < 0, and the point mass at 0 for mu = 0.
    """
    _check_float("x", x)
    _check_float("mu", mu)
    if mu.numel() and float(mu.min()) < 0:
        raise ValueError(f"mu: expected Poisson means >= 0, received min {float(mu.min())!r}")
    k, m = torch.broadcast_tensors(torch.floor(x.double()), mu.double())
    a = (k + 1.0).clamp(min=1.0)                                         # P(X <= k) = Q(k + 1, mu)
    series = m < a + 1.0
    p_low = torch.empty_like(m)
    p_high = torch.empty_like(m)
    if bool(series.any()):
        lower = _lower_gamma_series(a[series], m[series])                # P(k+1, mu) = P(X > k)
        p_high[series], p_low[series] = lower, 1.0 - lower
    if bool((~series).any()):
        upper = _upper_gamma_cf(a[~series], m[~series])                  # Q(k+1, mu) = P(X <= k)
        p_low[~series], p_high[~series] = upper, 1.0 - upper
    below = k < 0
    p_low = torch.where(below, torch.zeros_like(p_low), p_low)
    p_high = torch.where(below, torch.ones_like(p_high), p_high)
    return p_low, p_high


def poisson_tails_reference(x: float, mu: float) -> tuple[float, float]:
    """Eq. (eq-poisson) for one value by summing the probability mass function (slow; small mu only)."""
    k = math.floor(x)
    if k < 0:
        return 0.0, 1.0
    cdf = sum(math.exp(i * math.log(mu) - mu - math.lgamma(i + 1)) if mu > 0 else float(i == 0) for i in range(k + 1))
    return cdf, 1.0 - cdf


def poisson_critical_counts(mu: Tensor, alpha: float = 0.05) -> tuple[Tensor, Tensor]:
    """(k_low, k_high) int64, shaped like ``mu``: p_low(k) < alpha exactly when k <= k_low (k_low = -1: never),
    and p_high(k) < alpha exactly when k >= k_high, for X ~ Poisson(mu).

    Each is the first k at which a monotone predicate of the exact tails turns true, found by bisection in a
    bracket around the Cornish-Fisher estimate of the quantile, mu + z sqrt(mu) + (z^2 - 1) / 6, widened where it
    does not hold the answer."""
    alpha = _check_alpha(alpha)
    _check_float("mu", mu)
    if mu.numel() and float(mu.min()) < 0:
        raise ValueError(f"mu: expected Poisson means >= 0, received min {float(mu.min())!r}")
    m, inverse = torch.unique(mu.double(), return_inverse=True)         # the tails once per distinct mu

    def first_true(pred, z: float) -> Tensor:                             # smallest k >= -1 with pred(k); pred(-1) is False
        guess = torch.floor(m + z * torch.sqrt(m) + (z * z - 1.0) / 6.0)
        lo, hi = (guess - 4.0).clamp(min=-1.0), (guess + 4.0).clamp(min=0.0)
        while True:                                                        # widen until pred(lo) is False, pred(hi) True
            bad_lo, bad_hi = pred(lo) & (lo > -1), ~pred(hi)
            if not bool(bad_lo.any() | bad_hi.any()):
                break
            width = hi - lo
            lo = torch.where(bad_lo, (lo - 2 * width).clamp(min=-1.0), lo)
            hi = torch.where(bad_hi, hi + 2 * width, hi)
        while bool((hi - lo > 1).any()):
            mid = torch.floor((lo + hi) / 2)
            ok = pred(mid)
            hi, lo = torch.where(ok, mid, hi), torch.where(ok, lo, mid)
        return hi

    z = float(torch.special.ndtri(torch.tensor(1.0 - alpha, dtype=torch.float64)))
    k_high = first_true(lambda k: poisson_tails(k, m)[1] < alpha, z)
    k_low = first_true(lambda k: poisson_tails(k, m)[0] >= alpha, -z) - 1   # p_low increases with k
    return k_low.long()[inverse], k_high.long()[inverse]


def poisson_tail_flags(x: Tensor, mu: Tensor, alpha: float = 0.05, skip_zeros: bool = True) -> tuple[Tensor, Tensor]:
    """(low, high) bool: p_low(x; mu) < alpha, and p_high(x; mu) < alpha (eq-poisson), decided through the
    critical counts of ``mu`` (``mu`` broadcasts against ``x`` and is usually much smaller). With ``skip_zeros``
    an observation equal to 0 never fires."""
    alpha = _check_alpha(alpha)
    _check_float("x", x)
    k_low, k_high = poisson_critical_counts(mu, alpha)
    k = torch.floor(x.double())
    low, high = k <= k_low, k >= k_high
    if skip_zeros:
        nz = x != 0
        low, high = low & nz, high & nz
    return low, high


# --------------------------------------------------------------------------------------- sectors and rings
def sector_ring_masks(radius: int = 4) -> Tensor:
    """[11, 2R+1, 2R+1] float 0/1 masks on a target's window (eq-pool): the 8 compass sectors of ``SECTORS`` then
    the 3 rings of ``RINGS``. Row index grows southward, column index eastward; the bearing of a cell is
    atan2(east offset, north offset), clockwise from north."""
    check_int("radius", radius, 1)
    off = torch.arange(-radius, radius + 1, dtype=torch.float64)
    south, east = torch.meshgrid(off, off, indexing="ij")
    bearing = torch.rad2deg(torch.atan2(east, -south)) % 360.0
    sector = torch.round(bearing / 45.0).long() % 8
    centre = (south == 0) & (east == 0)
    d = torch.sqrt(south ** 2 + east ** 2)
    d_max = radius * math.sqrt(2.0)
    ring = (d > d_max / 3).long() + (d > 2 * d_max / 3).long()
    masks = [((sector == s) & ~centre) for s in range(8)] + [ring == r for r in range(3)]
    return torch.stack(masks).float()


def region_pool(maps: Tensor, masks: Tensor) -> Tensor:
    """Average of ``maps`` [..., S, S] over each mask of ``masks`` [M, S, S]: [..., M] (eq-pool),
    v_m = sum_ij A_m[i, j] M[i, j] / sum_ij A_m[i, j]."""
    _check_float("masks", masks, 3)
    if masks.ndim != 3:
        raise ValueError(f"masks: expected a tensor [M, S, S], received {describe(masks)}")
    _check_float("maps", maps, 2, finite=False)
    if tuple(maps.shape[-2:]) != tuple(masks.shape[-2:]):
        raise ValueError(f"maps: expected trailing dims {tuple(masks.shape[-2:])} (the masks' window), received "
                         f"shape {tuple(maps.shape)}")
    counts = masks.sum(dim=(-2, -1))
    if bool((counts <= 0).any()):
        raise ValueError("masks: expected every mask to cover at least one cell, received an empty mask")
    weights = (masks / counts[:, None, None]).to(maps.dtype)
    return torch.einsum("...ij,mij->...m", maps, weights)


# --------------------------------------------------------------------------------------------- benchmarks
def _scipy_ks_loop(x, pool) -> list:
    from scipy import stats

    return [stats.kstest([v], pool).pvalue for v in x]


def bench_cases(quick: bool = False) -> list:
    """``make bench``: the Geo-concept statistics of one day over a whole grid, a SciPy loop over cells (as a
    release written cell by cell computes them) against the vectorised kernels; and the three pieces alone."""
    import numpy as np
    from scipy import ndimage, stats

    from kernels.bench import Case, Target

    g = torch.Generator().manual_seed(0)
    side, R = (14, 4) if quick else (24, 4)
    with torch.random.fork_rng():                           # Gamma takes no generator: seed a forked state
        torch.manual_seed(0)
        x = torch.distributions.Gamma(2.0, 0.5).sample((side, side)).double()
    counts = torch.poisson(torch.full((side, side), 3.0), generator=g).double()
    pool = subwindow_means(x, 2 * R + 1, R).reshape(-1)                   # the city-wide pool: one value per target
    pool_np = pool.numpy()
    mu = float(counts.mean())
    sub3 = subwindow_means(x, 3, R)                                        # [T, T, 7, 7]
    sub3_np = sub3.reshape(-1, 49).numpy()
    csub_np = subwindow_means(counts, 3, R).reshape(-1, 49).numpy()

    def scipy_loop():                                                      # per cell: 49 kstest + 49 poisson calls
        return [(_scipy_ks_loop(row, pool_np), [stats.poisson.sf(v, mu) for v in crow])
                for row, crow in zip(sub3_np, csub_np)]

    def vectorised():
        s = subwindow_means(x, 3, R)
        c = subwindow_means(counts, 3, R)
        return ks1_pvalue(s.reshape(-1), pool), poisson_tails(c, torch.tensor(mu, dtype=torch.float64))

    n_tests = sub3_np.size
    cases = [Case(f"one day's 3x3 Geo-concept tests, {side}x{side} grid, {n_tests:,} KS + {n_tests:,} Poisson",
                  {"scipy loop over cells": scipy_loop, "vectorised kernels": vectorised},
                  baseline="scipy loop over cells",
                  targets=[Target("vectorised kernels", "scipy loop over cells", 20.0,
                                  "the concept tests of a whole grid in one call instead of one SciPy call per test")])]
    M = 200 if quick else 1_000
    xs = torch.rand(M, generator=g, dtype=torch.float64) * 12
    xs_np = xs.numpy()
    cases.append(Case(f"KS p-values, {M:,} observations vs a pool of {pool.numel()}", {
        "scipy kstest loop": lambda: _scipy_ks_loop(xs_np, pool_np),
        "ks1_pvalue": lambda: ks1_pvalue(xs, pool)}, baseline="scipy kstest loop"))
    ks, mus = torch.floor(xs * 2), torch.rand(M, generator=g, dtype=torch.float64) * 10
    ks_np, mus_np = ks.numpy(), mus.numpy()
    cases.append(Case(f"Poisson tails, {M:,} (x, mu) pairs", {
        "scipy poisson loop": lambda: [(stats.poisson.cdf(a, b), stats.poisson.sf(a, b)) for a, b in zip(ks_np, mus_np)],
        "scipy poisson (vectorised)": lambda: (stats.poisson.cdf(ks_np, mus_np), stats.poisson.sf(ks_np, mus_np)),
        "poisson_tails": lambda: poisson_tails(ks, mus)}, baseline="scipy poisson loop"))
    days = 8 if quick else 64
    grid = torch.rand(days, side, side, generator=g, dtype=torch.float64)
    grid_np = grid.numpy()
    P = 2 * R + 2 - 3
    cases.append(Case(f"3x3 sub-window means, {days} days x {side}x{side}", {
        "scipy.ndimage.uniform_filter + gather": lambda: np.ascontiguousarray(np.lib.stride_tricks.sliding_window_view(
            ndimage.uniform_filter(grid_np, size=(1, 3, 3), mode="constant")[:, 1:side - 1, 1:side - 1],
            (P, P), axis=(1, 2))),
        "subwindow_means (avg_pool + unfold)": lambda: subwindow_means(grid, 3, R)},
        baseline="scipy.ndimage.uniform_filter + gather"))
    return cases
