"""kernels.native: the compiled single-pass kernels against their eager oracles and the trusted peers
(torch's Adam step through kernels.optim's reference path, faiss IndexFlatIP/L2), and the fallback line on a
machine without a compiler."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pytest
import torch

from kernels import native, vq
from kernels.optim import AdamPP
from tests.kernels.test_optim import VARIANTS, _id, make_params, run, set_grads

ROOT = Path(__file__).resolve().parents[2]
needs_native = pytest.mark.skipif(not native.available(), reason=f"native kernels: {native.status()}")
faiss.omp_set_num_threads(1)


def test_status_is_one_line():
    line = native.status()
    assert "\n" not in line and line


# --- Adam++: update and the next distance in one pass ---------------------------------------------------------

@needs_native
@pytest.mark.parametrize("variant", VARIANTS, ids=_id)
def test_adampp_native_equals_reference_over_100_steps(variant):
    ref, opt_ref, eta_ref = run(lambda ps: AdamPP(ps, impl="reference", **variant))
    fast, opt_fast, eta_fast = run(lambda ps: AdamPP(ps, impl="native", **variant))
    assert opt_fast.impl == "native"
    for a, b in zip(ref, fast):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-9)
    assert eta_fast == pytest.approx(eta_ref, rel=1e-6)


@needs_native
def test_adampp_native_float32_matches_fused_float32():
    fused, _, eta_f = run(lambda ps: AdamPP(ps, impl="fused"), dtype=torch.float32)
    nat, _, eta_n = run(lambda ps: AdamPP(ps, impl="native"), dtype=torch.float32)
    for a, b in zip(fused, nat):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    assert eta_n == pytest.approx(eta_f, rel=1e-5)


@needs_native
def test_adampp_distance_is_reused_only_while_the_parameters_are_untouched():
    params = make_params()
    opt = AdamPP(params, impl="native")
    for t in range(3):
        set_grads(params, t)
        opt.step()
    assert opt._next_sq is not None
    cached = opt._cached_distance()
    assert cached == pytest.approx(opt.distance(), rel=1e-12)
    with torch.no_grad():
        params[0].add_(1.0)                      # moved from outside: the running sum is stale
    assert opt._cached_distance() == pytest.approx(opt.distance(), rel=1e-12) and opt._cached_distance() > cached


def test_adampp_native_falls_back_to_fused_with_one_warning(monkeypatch):
    monkeypatch.setattr(native, "available", lambda: False)
    monkeypatch.setattr(native, "status", lambda: "no C++ compiler found")
    with pytest.warns(UserWarning, match="no C\\+\\+ compiler found"):
        opt = AdamPP(make_params(), impl="native")
    assert opt.impl == "fused"


# --- VQ: scores tile by tile with the argmax in the same pass -------------------------------------------------

@needs_native
@pytest.mark.parametrize("N, K, d, block", [(500, 7, 3, None), (1000, 64, 32, 100), (700, 256, 16, None),
                                            (300, 1024, 8, 64), (50, 1, 5, None), (0, 10, 4, None),
                                            (2049, 33, 5, 2048)])
@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_assign_equals_eager_and_reference(N, K, d, block, metric):
    g = torch.Generator().manual_seed(N + K)
    x, E = torch.randn(N, d, generator=g), torch.randn(K, d, generator=g)
    idx, val = vq.nearest_codeword(x, E, metric, chunk=block, impl="native")
    ref_i, ref_v = vq.nearest_codeword_reference(x, E, metric)
    eag_i, eag_v = vq.nearest_codeword(x, E, metric)
    assert idx.dtype == torch.int64 and idx.shape == (N,) and val.dtype == torch.float32
    torch.testing.assert_close(val, ref_v, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(val, eag_v, rtol=1e-5, atol=1e-5)
    diff = idx != ref_i                          # only near-ties may differ
    if bool(diff.any()):
        x64, E64 = x[diff].double(), E.double()
        if metric == "ip":
            a, b = (x64 * E64[idx[diff]]).sum(1), (x64 * E64[ref_i[diff]]).sum(1)
        else:
            a, b = ((x64 - E64[idx[diff]]) ** 2).sum(1), ((x64 - E64[ref_i[diff]]) ** 2).sum(1)
        assert bool(((a - b).abs() <= 1e-4 * (1 + b.abs())).all())


@needs_native
@pytest.mark.parametrize("N, K, d", [(3000, 64, 32), (1500, 512, 16), (800, 1024, 64)])
def test_assign_ids_equal_faiss(N, K, d):
    g = torch.Generator().manual_seed(7 * K)
    x, E = torch.randn(N, d, generator=g), torch.randn(K, d, generator=g)
    for metric, index in (("ip", faiss.IndexFlatIP(d)), ("l2", faiss.IndexFlatL2(d))):
        index.add(E.numpy())
        D, I = index.search(x.numpy(), 1)
        idx, val = vq.nearest_codeword(x, E, metric, impl="native")
        assert (idx.numpy() == I[:, 0]).mean() > 0.999
        np.testing.assert_allclose(val.numpy(), D[:, 0], rtol=1e-4, atol=1e-4)


@needs_native
def test_assign_ties_go_to_the_lowest_index_like_argmax():
    E = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]).repeat(100, 1)        # K = 300, many exact ties
    x = torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])
    assert vq.nearest_codeword(x, E, "ip", impl="native")[0].tolist() == [0, 2, 0]


def test_assign_rejects_an_unknown_impl():
    with pytest.raises(ValueError, match="impl"):
        vq.nearest_codeword(torch.randn(3, 2), torch.randn(4, 2), impl="fast")


def test_without_a_compiler_the_build_falls_back_with_one_line(tmp_path):
    """A fresh machine with no C++ compiler on PATH: `python -m kernels.native` prints one line and the eager
    paths give the same answers."""
    env = dict(os.environ, PATH=str(Path(sys.executable).parent), BOOK_NATIVE_DIR=str(tmp_path), CXX="c++")
    code = ("import torch, warnings; from kernels import native, vq;"
            "x, E = torch.randn(50, 4), torch.randn(6, 4);"
            "warnings.simplefilter('always');"
            "a = vq.nearest_codeword(x, E, 'ip', impl='native')[0]; b = vq.nearest_codeword(x, E, 'ip')[0];"
            "print(native.status()); print(bool((a == b).all()))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["no C++ compiler found: the native kernels fall back to their eager paths",
                                       "True"]
    assert out.stderr.count("UserWarning") == 1
    line = subprocess.run([sys.executable, "-m", "kernels.native"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert line.returncode == 0 and line.stdout.count("\n") == 1 and "eager paths" in line.stdout


@needs_native
def test_a_build_killed_earlier_does_not_hang_the_next_import(tmp_path):
    """torch's build leaves its `lock` file behind when a build is killed; the next import must not wait for it
    forever. The built folder is copied (the build is up to date there) with a stale lock file added."""
    built = native._build_dir()
    copy = tmp_path / built.name
    shutil.copytree(built, copy, ignore=shutil.ignore_patterns("book.flock", "lock"))
    (copy / "lock").touch()
    env = dict(os.environ, BOOK_NATIVE_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-m", "kernels.native"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=240)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("native kernels built"), out.stdout
    assert not (copy / "lock").exists()
