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


def _assign_paths():
    """The kernel's paths this build has: "direct" needs GCC/Clang vector extensions (it raises otherwise)."""
    try:
        native.assign(torch.randn(2, 3), torch.randn(4, 3), None, 512, "direct")
    except RuntimeError as exc:
        assert "needs a GCC or Clang build" in str(exc)
        return ["gemm"]
    return ["direct", "gemm"]


@needs_native
@pytest.mark.parametrize("path", ["direct", "gemm"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("with_bias", [False, True], ids=["no-bias", "bias"])
@pytest.mark.parametrize("N, K, d, block", [(1000, 64, 32, 512), (1003, 7, 3, 100), (777, 100, 17, 256),
                                            (301, 1024, 8, 64), (5, 1, 1, 512), (13, 40, 70, 4), (0, 33, 5, 512),
                                            (2049, 256, 64, 2048)])
def test_assign_each_path_equals_a_float64_argmax(path, dtype, with_bias, N, K, d, block):
    """Both paths of native.assign, forced, against the float64 score matrix: the value to rounding, the index
    exactly except at near-ties (both within the dtype's rounding of the best score). N not a multiple of the
    direct path's rows per step or of the GEMM block, K not a multiple of its codewords per register."""
    if path not in _assign_paths():
        pytest.skip("direct path not built (no GCC/Clang vector extensions)")
    g = torch.Generator().manual_seed(N * 31 + K * 7 + d)
    x, E = torch.randn(N, d, generator=g, dtype=dtype), torch.randn(K, d, generator=g, dtype=dtype)
    bias = torch.randn(K, generator=g, dtype=dtype) if with_bias else None
    idx, val = native.assign(x, E, bias, block, path)
    S = x.double() @ E.double().T + (bias.double() if with_bias else 0.0)
    assert idx.dtype == torch.int64 and idx.shape == (N,) and val.dtype == dtype and val.shape == (N,)
    if N == 0:
        return
    best, ref = S.max(1)
    tol = (1e-5 if dtype == torch.float32 else 1e-12) * (1 + S.abs().amax(1))
    assert bool(((val.double() - best).abs() <= tol).all())
    got = S.gather(1, idx[:, None]).squeeze(1)                 # the score the kernel's choice really has
    assert bool(((best - got) <= 2 * tol).all())
    assert (idx != ref).float().mean() <= 0.01                 # near-ties only


@needs_native
@pytest.mark.parametrize("path", ["direct", "gemm"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("with_bias", [False, True], ids=["no-bias", "bias"])
@pytest.mark.parametrize("K", [3, 40, 100, 300])
def test_assign_exact_ties_go_to_the_first_maximum_on_each_path(path, dtype, with_bias, K):
    """Small-integer x, E and bias: every score is exact in any summation order, ties are frequent (within a
    register's lanes, across registers and across codeword chunks), and the index must be torch.argmax's first
    maximum exactly."""
    if path not in _assign_paths():
        pytest.skip("direct path not built (no GCC/Clang vector extensions)")
    g = torch.Generator().manual_seed(K)
    x = torch.randint(-2, 3, (1001, 6), generator=g).to(dtype)
    E = torch.randint(-1, 2, (K, 6), generator=g).to(dtype)
    bias = torch.randint(-1, 2, (K,), generator=g).to(dtype) if with_bias else None
    S = x @ E.T + (bias if with_bias else 0)
    idx, val = native.assign(x, E, bias, 128, path)
    assert torch.equal(idx, S.argmax(1)) and torch.equal(val, S.amax(1))


@needs_native
def test_assign_path_choice():
    """The default path: the GEMM for a large or much-padded codebook on every build; the direct path for the
    bench shapes where it is built for AVX-512 (-march=native on a CPU that has it, no AVX2 pin)."""
    choose = native.load().assign_path
    for K, d in [(4096, 128), (16384, 64), (16, 8), (4, 16), (33, 64)]:
        assert choose(K, d, 4) == "gemm"
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if " avx512f " in flags and "direct" in _assign_paths() and not native.isa_flags():   # not held to AVX2
        for K, d in [(64, 32), (256, 64), (1024, 32), (1024, 64), (100, 10)]:
            assert choose(K, d, 4) == "direct"
        assert choose(64, 32, 8) == "direct"
    with pytest.raises(RuntimeError, match="path"):
        native.assign(torch.randn(3, 2), torch.randn(4, 2), None, 512, "blas")


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


def test_the_build_is_held_to_the_libraries_isa_pin(monkeypatch):
    """Under make's AVX2 pin the native build gives up AVX-512 like torch, MKL and faiss, and builds elsewhere."""
    import platform

    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    x86 = platform.machine().lower() in ("x86_64", "amd64")
    assert native.isa_flags() == (["-mno-avx512f"] if x86 else [])
    pinned = native._cpu_key()
    monkeypatch.delenv("ATEN_CPU_CAPABILITY")
    assert native.isa_flags() == []
    assert (native._cpu_key() != pinned) == x86
