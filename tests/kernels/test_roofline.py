"""kernels.roofline: the model's formulas against hand computation, the probes' plumbing and bad input.

Timings are never asserted beyond "positive and finite"; the roofline appendix holds the sanity claims.
"""

import math

import pytest
import torch

from kernels import roofline


def test_attainable_is_the_min_of_the_two_roofs():
    assert roofline.attainable_gflops(0.25, peak_gflops=100.0, mem_bw_gbs=20.0) == 5.0
    assert roofline.attainable_gflops(50.0, peak_gflops=100.0, mem_bw_gbs=20.0) == 100.0
    ridge = 100.0 / 20.0  # intensity where the roofs meet
    assert roofline.attainable_gflops(ridge, 100.0, 20.0) == pytest.approx(100.0)


def test_work_formulas():
    assert roofline.matmul_flops(3) == 54.0
    assert roofline.matmul_intensity(96) == pytest.approx(2 * 96**3 / (3 * 4 * 96**2))
    assert roofline.stream_bytes("copy", 10) == 80.0
    assert roofline.stream_bytes("triad", 10) == 120.0


def test_theoretical_peak_and_isa_bounds():
    assert roofline.theoretical_peak_gflops(2, 2.5, 32) == 160.0
    assert roofline.flops_per_cycle_bound({"avx512f", "avx2", "fma"}, "x86_64")[0] == 64
    assert roofline.flops_per_cycle_bound({"avx2", "fma", "avx"}, "x86_64")[0] == 32
    assert roofline.flops_per_cycle_bound({"avx"}, "x86_64")[0] == 16
    assert roofline.flops_per_cycle_bound(set(), "x86_64")[0] == 8
    assert roofline.flops_per_cycle_bound(set(), "aarch64")[0] == 32
    assert roofline.flops_per_cycle_bound(set(), "riscv64")[0] is None


def test_cpu_info_is_consistent():
    info = roofline.cpu_info()
    assert info["cores"] >= 1 and info["isa"] in info["summary"]
    if info["mhz"] and info["flops_per_cycle"]:
        assert info["peak_gflops_per_core"] == pytest.approx(info["mhz"] / 1000 * info["flops_per_cycle"])


def test_threads_context_restores_the_count_even_on_error():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError):
        with roofline.threads(1):
            assert torch.get_num_threads() == 1
            raise RuntimeError("boom")
    assert torch.get_num_threads() == before


def test_probes_return_positive_finite_rates():
    vals = [roofline.matmul_gflops(64, repeat=2, min_sample_s=0.001),
            roofline.stream_gbs("copy", 4096, repeat=2, min_sample_s=0.001),
            roofline.stream_gbs("triad", 4096, repeat=2, min_sample_s=0.001),
            roofline.op_overhead_us(repeat=2, min_sample_s=0.001)]
    assert all(math.isfinite(v) and v > 0 for v in vals)
    limits = roofline.quick_limits(quick=True)
    assert set(limits) == {"peak_gflops", "mem_bw_gbs", "op_overhead_us"}


@pytest.mark.parametrize("call, match", [
    (lambda: roofline.matmul_flops(0), "n"),
    (lambda: roofline.matmul_gflops(2.5), "n"),
    (lambda: roofline.stream_bytes("scale", 10), "kind"),
    (lambda: roofline.stream_gbs("copy", -1), "n"),
    (lambda: roofline.op_overhead_us(size=0), "size"),
    (lambda: roofline.attainable_gflops(-1.0, 1.0, 1.0), "intensity"),
    (lambda: roofline.attainable_gflops(1.0, 0.0, 1.0), "peak_gflops"),
    (lambda: roofline.theoretical_peak_gflops(0, 1.0, 1.0), "cores"),
    (lambda: roofline.theoretical_peak_gflops(1, 1.0, True), "flops_per_cycle"),
    (lambda: roofline.threads(0).__enter__(), "n"),
])
def test_bad_input_names_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_cache_sizes_are_positive_and_grow_with_level():
    caches = roofline.cache_sizes()
    assert all(v > 0 for v in caches.values())
    sizes = [caches[k] for k in ("L1d", "L2", "L3") if k in caches]
    assert sizes == sorted(sizes)
