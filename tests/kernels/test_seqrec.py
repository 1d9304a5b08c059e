"""kernels.seqrec: the generated per-sample linear map (one baddbmm) against a loop over samples and against
torch.einsum, the low-rank form against the full map it factorises, gradcheck in float64, and bad input."""

import pytest
import torch

from kernels.seqrec import bench_cases, gen_linear, gen_linear_lowrank, gen_linear_reference


def _inputs(B, L, din, dout, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, L, din, generator=g, dtype=dtype), torch.randn(B, din, dout, generator=g, dtype=dtype),
            torch.randn(B, dout, generator=g, dtype=dtype))


@pytest.mark.parametrize("B, L, din, dout", [(1, 1, 1, 1), (7, 20, 16, 16), (33, 5, 8, 24), (64, 50, 32, 32),
                                             (3, 200, 64, 4)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_gen_linear_equals_the_loop_and_einsum(B, L, din, dout, with_bias):
    x, W, c = _inputs(B, L, din, dout, seed=B * L + din)
    c = c if with_bias else None
    got = gen_linear(x, W, c)
    assert got.shape == (B, L, dout)
    torch.testing.assert_close(got, gen_linear_reference(x, W, c), rtol=1e-5, atol=1e-5)
    want = torch.einsum("bld,bde->ble", x, W) + (c[:, None, :] if c is not None else 0)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_an_empty_batch_gives_an_empty_result():
    x, W, c = _inputs(0, 4, 3, 5, seed=0)
    assert gen_linear(x, W, c).shape == (0, 4, 5)
    assert gen_linear_reference(x, W, c).shape == (0, 4, 5)


def test_one_shared_map_for_every_sample_is_a_plain_linear_layer():
    x, W, c = _inputs(10, 6, 4, 3, seed=1)
    lin = torch.nn.Linear(4, 3)
    with torch.no_grad():
        got = gen_linear(x, lin.weight.t().expand(10, 4, 3), lin.bias.expand(10, 3))
        torch.testing.assert_close(got, lin(x))


@pytest.mark.parametrize("B, L, din, dout, r", [(5, 20, 16, 16, 4), (9, 7, 8, 12, 1), (2, 3, 6, 6, 6)])
def test_low_rank_equals_the_full_map_it_factorises(B, L, din, dout, r):
    g = torch.Generator().manual_seed(r)
    x = torch.randn(B, L, din, generator=g)
    u, v, c = torch.randn(B, din, r, generator=g), torch.randn(B, dout, r, generator=g), torch.randn(B, dout, generator=g)
    full = gen_linear(x, u @ v.transpose(1, 2), c)
    torch.testing.assert_close(gen_linear_lowrank(x, u, v, c), full, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(gen_linear_lowrank(x, u, v), full - c[:, None, :], rtol=1e-4, atol=1e-4)


def test_gradcheck_float64():
    x, W, c = (t.requires_grad_() for t in _inputs(3, 4, 3, 2, seed=2, dtype=torch.float64))
    assert torch.autograd.gradcheck(gen_linear, (x, W, c))
    g = torch.Generator().manual_seed(3)
    u = torch.randn(3, 3, 2, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(3, 2, 2, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(gen_linear_lowrank, (x, u, v, c))


def test_bad_inputs_raise_value_errors_naming_the_argument():
    x, W, c = _inputs(4, 5, 3, 2, seed=0)
    u, v = torch.randn(4, 3, 2), torch.randn(4, 2, 2)
    bad = [
        (lambda: gen_linear(x[0], W, c), "x"),
        (lambda: gen_linear(x.long(), W, c), "x"),
        (lambda: gen_linear(x, W[:3], c), "weight"),
        (lambda: gen_linear(x, W[:, :2], c), "weight"),
        (lambda: gen_linear(x, W.double(), c), "weight"),
        (lambda: gen_linear(x, W, c[:, :1]), "bias"),
        (lambda: gen_linear(x, W, c[:3]), "bias"),
        (lambda: gen_linear_reference(x, W[0], c), "weight"),
        (lambda: gen_linear_lowrank(x, u[:, :2], v, c), "u"),
        (lambda: gen_linear_lowrank(x, u, v[:, :, :1], c), "v"),
        (lambda: gen_linear_lowrank(x, u, v[:3], c), "v"),
        (lambda: gen_linear_lowrank(x, u, v, c[:, :1]), "bias"),
    ]
    for fn, name in bad:
        with pytest.raises(ValueError, match=rf"^{name}:"):
            fn()


def test_bench_cases_agree_with_the_loop_and_run_once():
    """(Building them leaves the global RNG alone: tests/kernels/test_bench.py checks that for every module.)"""
    cases = bench_cases(quick=True)
    fwd = cases[0]
    outs = {name: fn() for name, fn in fwd.fns.items() if not name.startswith("low rank")}
    ref = outs.pop("loop over samples")
    for out in outs.values():
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for case in cases[1:]:
        for fn in case.fns.values():
            fn()


def test_every_bench_case_times_its_own_shape():
    """Each forward + backward callable is bound to its own grid entry's tensors (a bare closure over the loop
    variables would time the last, largest shape under every title)."""
    import re

    for case in bench_cases(quick=False):
        B, L, d = (int(v) for v in re.search(r"B=(\d+) L=(\d+) d=(\d+)", case.title).groups())
        for name, fn in case.fns.items():
            assert fn.__defaults__, f"{case.title} / {name}: bind the case's tensors as default arguments"
            x = fn.__defaults__[0]
            assert tuple(x.shape) == (B, L, d), (case.title, name, tuple(x.shape))
