"""Hot spots on a grid: local Moran's I with a conditional-permutation test, and Manhattan dilation of a region.

Local Moran's I is L. Anselin, "Local Indicators of Spatial Association -- LISA", Geographical Analysis 27(2),
1995, eq. 12, in the convention of PySAL's ``esda.Moran_Local``. It was first written here for the LISA framework
(B. An, X. Zhou et al., "LISA: Learning-Integrated Space Partitioning Framework for Traffic Accident Forecasting
on Heterogeneous Spatiotemporal Data", arXiv 2412.15365), which seeds every partition at the significant hot spots
of the historical accident map; the equation labels follow the chapter ``book/spatial/lisa.ipynb``. Nothing here
is specific to that paper: a grid is any ``[H, W]`` tensor with a boolean ``mask`` of the cells that take part.

* Statistic (eq-moran). Over the n cells in ``mask``: z_c = (y_c - mean y) / sd y (population sd, ddof 0), the
  spatial lag lag_c = (1 / k_c) sum_{j in N(c)} z_j over the k_c queen neighbours of c that are in the mask
  (row-standardised weights), and

      I_c = (n - 1) z_c lag_c / sum_j z_j^2 .

  The lag is one ``conv2d`` of the masked z with a 3 x 3 ring of ones, divided by the same convolution of the
  mask (``queen_lag``). A cell with no neighbour in the mask (an island) has lag 0 and I 0.
* Conditional permutation test (eq-perm). For permutation p and cell c, draw k_c distinct cells uniformly from
  the n - 1 others (c held fixed), I^(p)_c = (n - 1) z_c mean(z over the draw) / sum_j z_j^2, and with
  G_c = #{p : I^(p)_c >= I_c} over P permutations the folded pseudo p-value

      p_c = (min(G_c, P - G_c) + 1) / (P + 1),

  ``esda``'s ``p_sim``: one-sided in whichever direction I_c lies, so under an iid null about 2 alpha of the cells
  have p_c < alpha. The draws are made for all cells and a chunk of permutations at once by Floyd's algorithm
  (``conditional_draws``): k steps, each one random integer per (permutation, cell), give a uniform k-subset
  without replacement; cells with k_c < k_max use only their first k_c steps' range. ``esda`` draws
  differently (one shuffle per cell), so its p-values match this test in distribution, not draw for draw.
* Quadrants: HH (1) z > 0 and lag > 0, LH (2), LL (3), HL (4), ``esda``'s codes; 0 for cells outside the mask.
* Manhattan dilation (eq-ring): the cells within L1 distance r of a region, as r repeated 3 x 3 cross max-pools
  (``manhattan_dilate``), equal to ``scipy.ndimage.binary_dilation`` with a cross and r iterations.

``local_morans_i_reference`` is the slow, obvious version (Python loops over cells and neighbours, and over
permutations for the p-value, on the same draws) that the tests compare with.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from kernels._validate import check_int, describe

QUEEN = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]


@dataclass
class LocalMoran:
    """What :func:`local_morans_i` returns, every field [H, W] (cells outside the mask: 0, p 1, quadrant 0).

    ``I``: local Moran's I (eq-moran); ``p``: folded pseudo p-value (eq-perm; 1 without permutations);
    ``z``: standardised values; ``lag``: their row-standardised queen lag; ``k``: neighbours in the mask (int64);
    ``quadrant``: 1 HH, 2 LH, 3 LL, 4 HL (int64)."""

    I: Tensor
    p: Tensor
    z: Tensor
    lag: Tensor
    k: Tensor
    quadrant: Tensor


def _check_grid(y: object, mask: object) -> tuple[Tensor, Tensor]:
    if not isinstance(y, Tensor) or y.ndim != 2 or not y.is_floating_point():
        raise ValueError(f"y: expected a float tensor [H, W], received {describe(y)}")
    if not bool(torch.isfinite(y).all()):
        raise ValueError(f"y: expected finite values, received {int((~torch.isfinite(y)).sum())} non-finite entries")
    if mask is None:
        mask = torch.ones_like(y, dtype=torch.bool)
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool or mask.shape != y.shape:
        raise ValueError(f"mask: expected a bool tensor of shape {tuple(y.shape)}, received {describe(mask)}")
    if int(mask.sum()) < 3:
        raise ValueError(f"mask: expected at least 3 cells in the mask, received {int(mask.sum())}")
    return y, mask


def queen_lag(z: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Row-standardised queen lag of ``z`` [H, W] over the cells in ``mask`` (eq-moran), and the neighbour count
    k [H, W] (int64). Both are 0 outside the mask; lag is 0 on islands (k = 0)."""
    z, mask = _check_grid(z, mask)
    ring = torch.ones(1, 1, 3, 3, dtype=z.dtype)
    ring[0, 0, 1, 1] = 0
    m = mask.to(z.dtype)
    # sum_{j in N(c)} z_j and k_c: [H, W] -> [1, 1, H, W] -> conv with the 3x3 ring (zero padding = off the grid)
    s = F.conv2d((z * m)[None, None], ring, padding=1)[0, 0]
    k = F.conv2d(m[None, None], ring, padding=1)[0, 0].round()
    lag = torch.where((k > 0) & mask, s / k.clamp(min=1), torch.zeros_like(z))
    return lag, (k * m).to(torch.int64)


def conditional_draws(k: Tensor, permutations: int, generator: torch.Generator | None = None) -> Tensor:
    """Indices [P, n, k_max] (int64) of the cells drawn for each permutation and cell (eq-perm).

    ``k`` [n] int64 is each cell's neighbour count. Row (p, c) holds k_c distinct indices into 0..n-1, never c,
    uniform over such subsets (Floyd's algorithm, vectorised over permutations and cells); its entries past k_c
    are -1."""
    if not isinstance(k, Tensor) or k.ndim != 1 or k.dtype != torch.int64:
        raise ValueError(f"k: expected a 1-D int64 tensor, received {describe(k)}")
    n = k.numel()
    check_int("permutations", permutations, 1)
    if bool((k < 0).any()) or bool((k > n - 1).any()):
        raise ValueError(f"k: expected neighbour counts in [0, n-1 = {n - 1}], received [{int(k.min())}, "
                         f"{int(k.max())}]")
    kmax = int(k.max()) if n else 0
    out = torch.full((permutations, n, max(kmax, 1)), -1, dtype=torch.int64)
    # Floyd: for j = N-k .. N-1 (N = n-1 candidates): t ~ U{0..j}; take t unless taken already, else take j
    for step in range(kmax):
        live = step < k                                                   # [n]: cells still drawing
        j = (n - 1) - k + step                                            # [n]: the top of this step's range
        t = (torch.rand(permutations, n, generator=generator, dtype=torch.float64) * (j + 1).clamp(min=1)).floor()
        t = t.to(torch.int64).minimum(j.clamp(min=0))                     # [P, n] uniform in 0..j
        taken = (out[:, :, :step] == t.unsqueeze(-1)).any(-1) if step else torch.zeros_like(t, dtype=torch.bool)
        out[:, :, step] = torch.where(live, torch.where(taken, j, t), torch.tensor(-1))
    # candidate d in 0..n-2 -> cell index skipping c itself
    idx = torch.arange(n).view(1, n, 1)
    return torch.where(out >= 0, out + (out >= idx).to(torch.int64), out)


def _perm_counts(z: Tensor, I: Tensor, k: Tensor, draws: Tensor, scale: float) -> Tensor:
    """G_c = #{p : I^(p)_c >= I_c} over the permutations in ``draws`` [P, n, k_max] (eq-perm)."""
    vals = torch.where(draws >= 0, z[draws.clamp(min=0)], torch.zeros((), dtype=z.dtype))     # [P, n, k_max]
    lag = vals.sum(-1) / k.clamp(min=1).to(z.dtype)                                          # [P, n]
    return ((scale * z * lag) >= I).sum(0)                                                   # [n]


def local_morans_i(y: Tensor, mask: Tensor | None = None, permutations: int = 999,
                   generator: torch.Generator | None = None, chunk: int = 128) -> LocalMoran:
    """Local Moran's I of ``y`` [H, W] over the cells in ``mask`` (default: all) with a conditional-permutation
    pseudo p-value from ``permutations`` draws (0: no test, p = 1); see the module docstring (eq-moran, eq-perm).
    ``chunk`` permutations are drawn at a time, which bounds memory at chunk x n x 8 indices."""
    y, mask = _check_grid(y, mask)
    check_int("permutations", permutations, 0)
    check_int("chunk", chunk, 1)
    vals = y[mask]
    n = vals.numel()
    sd = vals.std(unbiased=False)
    if float(sd) == 0:
        raise ValueError("y: expected values that vary over the mask, received a constant")
    z = torch.where(mask, (y - vals.mean()) / sd, torch.zeros_like(y))
    lag, k = queen_lag(z, mask)
    scale = (n - 1) / float((z[mask] ** 2).sum())
    I = scale * z * lag                                                    # eq-moran, 0 outside the mask
    quadrant = torch.where(z > 0, torch.where(lag > 0, 1, 4), torch.where(lag > 0, 2, 3)) * mask
    p = torch.ones_like(y)
    if permutations:
        zc, Ic, kc = z[mask], I[mask], k[mask]
        G = torch.zeros(n, dtype=torch.int64)
        for start in range(0, permutations, chunk):
            G += _perm_counts(zc, Ic, kc, conditional_draws(kc, min(chunk, permutations - start), generator), scale)
        folded = torch.minimum(G, permutations - G)
        pc = (folded + 1).to(y.dtype) / (permutations + 1)
        p[mask] = torch.where(kc > 0, pc, torch.ones_like(pc))
    return LocalMoran(I, p, z, lag, k, quadrant.to(torch.int64))


def local_morans_i_reference(y: np.ndarray, mask: np.ndarray, draws: np.ndarray | None = None
                             ) -> tuple[np.ndarray, np.ndarray]:
    """The slow, obvious eq-moran and eq-perm with loops: (I [H, W], p [H, W]); ``draws`` [P, n, k_max] as from
    :func:`conditional_draws` (cells numbered in row-major order over the mask), or None for p = 1."""
    H, W = y.shape
    cells = [(r, c) for r in range(H) for c in range(W) if mask[r, c]]
    number = {rc: i for i, rc in enumerate(cells)}
    n = len(cells)
    v = np.array([y[rc] for rc in cells], dtype=float)
    z = (v - v.mean()) / v.std()
    den = sum(x * x for x in z)
    I, p = np.zeros((H, W)), np.ones((H, W))
    for i, (r, c) in enumerate(cells):
        nbrs = [number[(r + dr, c + dc)] for dr, dc in QUEEN if (r + dr, c + dc) in number]
        if not nbrs:
            continue
        lag = sum(z[j] for j in nbrs) / len(nbrs)
        I[r, c] = (n - 1) * z[i] * lag / den
        if draws is not None:
            P = draws.shape[0]
            G = 0
            for q in range(P):
                chosen = [int(j) for j in draws[q, i, : len(nbrs)]]
                assert len(set(chosen)) == len(nbrs) and i not in chosen
                G += (n - 1) * z[i] * (sum(z[j] for j in chosen) / len(nbrs)) / den >= I[r, c]
            p[r, c] = (min(G, P - G) + 1) / (P + 1)
    return I, p


def manhattan_dilate(region: Tensor, r: int) -> Tensor:
    """Cells within L1 distance ``r`` of the True cells of ``region`` [H, W] (bool), the region included
    (eq-ring): r repeated 3 x 3 cross max-pools."""
    if not isinstance(region, Tensor) or region.ndim != 2 or region.dtype != torch.bool:
        raise ValueError(f"region: expected a bool tensor [H, W], received {describe(region)}")
    check_int("r", r, 0)
    x = region.to(torch.float32)[None, None]
    cross = torch.tensor([[0.0, 1, 0], [1, 1, 1], [0, 1, 0]]).view(1, 1, 3, 3)
    for _ in range(r):
        x = (F.conv2d(x, cross, padding=1) > 0).to(torch.float32)
    return x[0, 0] > 0


# --------------------------------------------------------------------------------------------- benchmarks
def bench_cases(quick: bool = False) -> list:
    """``make bench``: the permutation test on a grid, the loop reference (same draws) against the vectorised
    kernel."""
    from kernels.bench import Case, Target

    side, P = (8, 99) if quick else (16, 199)
    g = torch.Generator().manual_seed(0)
    y = torch.rand(side, side, generator=g, dtype=torch.float64)
    mask = torch.ones(side, side, dtype=torch.bool)
    _, k = queen_lag(y, mask)
    draws = conditional_draws(k.reshape(-1), P, g)
    y_np, m_np, d_np = y.numpy(), mask.numpy(), draws.numpy()
    return [Case(f"local Moran's I + {P} permutations, {side}x{side} grid",
                 {"loop over cells and permutations": lambda: local_morans_i_reference(y_np, m_np, d_np),
                  "local_morans_i (vectorised, own draws)": lambda: local_morans_i(y, mask, P, g)},
                 baseline="loop over cells and permutations",
                 targets=[Target("local_morans_i (vectorised, own draws)", "loop over cells and permutations", 5.0,
                                 "all cells and a chunk of permutations per tensor operation")])]
