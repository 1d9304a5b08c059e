"""kernels.bench: the harness (warm-up, calibration, interleaving, statistics, ratios), never timings.

A fake clock that only the callables advance makes every number exact.
"""

import pytest
import torch

from kernels import bench


class FakeClock:
    def __init__(self):
        self.now = 0.0
        self.log = []

    def __call__(self):
        return self.now

    def fn(self, name, cost):
        def f():
            self.log.append(name)
            self.now += cost
        return f


def test_medians_and_ratios_are_exact_with_a_fake_clock():
    clk = FakeClock()
    res = bench.compare({"slow": clk.fn("slow", 3.0), "fast": clk.fn("fast", 1.0)},
                        repeat=5, min_sample_s=0.0, timer=clk)
    assert res.baseline == "slow"
    assert res["slow"].median == 3.0 and res["fast"].median == 1.0
    assert res["fast"].min == res["fast"].max == 1.0
    assert res.speedup("fast") == pytest.approx(3.0)
    assert res.speedup("slow", over="fast") == pytest.approx(1 / 3)
    assert len(res["slow"].samples) == 5


def test_warmup_calibration_and_rotated_interleaving_order():
    clk = FakeClock()
    fns = {n: clk.fn(n, 1.0) for n in "abc"}
    bench.compare(fns, repeat=3, warmup=2, min_sample_s=0.0, timer=clk)
    warm, calib, rounds = clk.log[:6], clk.log[6:9], clk.log[9:]
    assert warm == list("abcabc")
    assert calib == list("abc")
    assert rounds == list("abc") + list("bca") + list("cab")


def test_calibration_gives_each_callable_enough_calls_per_sample():
    clk = FakeClock()
    res = bench.compare({"tiny": clk.fn("tiny", 0.001), "big": clk.fn("big", 0.5)},
                        repeat=2, warmup=0, min_sample_s=0.01, timer=clk)
    assert res["tiny"].number == 10 and res["big"].number == 1
    assert res["tiny"].median == pytest.approx(0.001)  # per-call time, not per-sample
    assert clk.log.count("tiny") == 1 + 2 * 10


def test_median_is_robust_to_one_outlier_round():
    clk = FakeClock()
    costs = iter([1.0] + [1.0, 1.0, 100.0, 1.0, 1.0])  # calibration call, then 5 rounds
    def f():
        clk.now += next(costs)
    res = bench.compare({"f": f}, repeat=5, warmup=0, min_sample_s=0.0, timer=clk)
    assert res["f"].median == 1.0 and res["f"].max == 100.0


def test_sync_is_called_around_every_sample():
    clk, calls = FakeClock(), []
    bench.compare({"a": clk.fn("a", 1.0)}, repeat=4, warmup=0, min_sample_s=0.0, timer=clk,
                  sync=lambda: calls.append(1))
    assert len(calls) == 2 * (1 + 4)  # calibration + 4 samples, before and after each


def test_table_reports_throughput_and_fraction_of_peak():
    clk = FakeClock()
    res = bench.compare({"naive": clk.fn("naive", 2.0), "fast": clk.fn("fast", 0.5)}, repeat=3,
                        min_sample_s=0.0, timer=clk, flops=1e9, bytes_moved={"fast": 4e9}, title="demo")
    assert res.gflops("fast") == pytest.approx(2.0) and res.gflops("naive") == pytest.approx(0.5)
    assert res.gbs("fast") == pytest.approx(8.0) and res.gbs("naive") is None
    text = res.table(peak_gflops=4.0, mem_bw_gbs=16.0)
    lines = text.splitlines()
    assert lines[0] == "demo"
    assert "speed-up vs naive" in lines[1] and "% peak" in lines[1] and "% bw" in lines[1]
    fast = next(line for line in lines if line.startswith("fast"))
    assert "4.00x" in fast and "50%" in fast and "500 ms" in fast


def test_fraction_of_a_roof_never_prints_above_100_percent():
    assert bench.fraction(1.0, 4.0) == "25%"
    assert bench.fraction(4.0, 4.0) == "100%*" and bench.fraction(6.0, 4.0) == "100%*"
    clk = FakeClock()
    res = bench.compare({"a": clk.fn("a", 0.5)}, repeat=3, min_sample_s=0.0, timer=clk, flops=1e9, bytes_moved=1e9)
    assert "100%*" in res.table(peak_gflops=1.0, mem_bw_gbs=1.0) and "200%" not in res.table(1.0, 1.0)
    with pytest.raises(ValueError, match="roof"):
        bench.fraction(1.0, 0.0)


def test_roofs_are_timed_beside_the_case_and_sized_to_it():
    case = bench.Case("demo", {"a": lambda: None, "b": lambda: None}, flops={"a": 1e6}, bytes_moved=1.2e6)
    res, peak, bw = bench.run_case_with_roofs(case, quick=True)
    names = [t.name for t in res.timings]
    assert names[:2] == ["a", "b"] and any(n.startswith("roof: fp32 matmul") for n in names)
    assert any(n == "roof: triad 100000 floats" for n in names) and any(n.startswith("roof: read") for n in names)
    assert peak > 0 and bw > 0 and res.baseline == "a"


@pytest.mark.parametrize("seconds, text", [(2.5, "2.5 s"), (0.0123, "12.3 ms"), (4.56e-6, "4.56 us"),
                                           (7e-9, "7 ns"), (0.0, "0 ns")])
def test_fmt_time(seconds, text):
    assert bench.fmt_time(seconds) == text


def test_bad_input_names_the_argument():
    f = lambda: None
    with pytest.raises(ValueError, match="fns"):
        bench.compare({})
    with pytest.raises(ValueError, match=r"fns\['x'\]"):
        bench.compare({"x": 3})
    with pytest.raises(ValueError, match="baseline"):
        bench.compare({"a": f}, baseline="b")
    with pytest.raises(ValueError, match="repeat"):
        bench.compare({"a": f}, repeat=0)
    with pytest.raises(ValueError, match="warmup"):
        bench.compare({"a": f}, warmup=-1)
    with pytest.raises(ValueError, match="min_sample_s"):
        bench.compare({"a": f}, min_sample_s=-1.0)
    with pytest.raises(ValueError, match="flops"):
        bench.compare({"a": f}, flops={"b": 1.0})
    with pytest.raises(ValueError, match="bytes_moved"):
        bench.compare({"a": f}, bytes_moved=0)


def test_discover_finds_the_roofline_cases_and_rejects_unknown_modules():
    names = [name for name, _ in bench.discover()]
    assert "roofline" in names
    with pytest.raises(ValueError, match="only"):
        bench.discover(["no_such_module"])


def test_make_bench_entry_point_runs_every_kernel_quickly(capsys):
    """`make bench` must not rot: every module's bench_cases builds and runs (small sizes, few rounds)."""
    assert bench.main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "[roofline] fp32 matmul" in out and "torch vs numpy" in out and "speed-up" in out
    assert "roof: " in out and not any(f"{p}%" in out for p in range(101, 1000)), "a fraction above 100 %"
    for name, _ in bench.discover():
        assert f"[{name}]" in out, f"kernels.{name}.bench_cases produced no table"


@pytest.mark.parametrize("module", [name for name, _ in bench.discover()])
def test_building_a_modules_bench_cases_leaves_the_global_rng_alone(module):
    """Every bench_cases draws its inputs from its own generators: building the cases must not move torch's global
    random state (a chapter that runs its spotlight mid-way would otherwise change every later draw)."""
    cases_fn = dict(bench.discover([module]))[module]
    torch.manual_seed(123)
    before = torch.get_rng_state()
    assert cases_fn(True), f"kernels.{module}.bench_cases(quick=True) built no case"
    assert torch.equal(torch.get_rng_state(), before)


# --- targets ---------------------------------------------------------------------------------------------------

def _fake(times):
    from kernels.bench import Comparison, Timing

    return Comparison("t", [Timing(n, [v], 1) for n, v in times.items()], next(iter(times)))


def test_target_reads_as_a_speedup_or_as_a_time_budget():
    from kernels.bench import Target

    res = _fake({"peer": 2.0, "fast": 1.0})
    t = Target("fast", "peer", 1.5)
    assert t.text() == ">= 1.50x peer" and t.measured(res) == 2.0 and t.hit(res) and t.measured_text(res) == "2.00x"
    budget = Target("fast", "peer", 1 / 1.2)
    slow = _fake({"peer": 1.0, "fast": 1.3})
    assert budget.text() == "<= 1.20x the time of peer" and not budget.hit(slow)
    assert budget.measured_text(slow) == "1.30x the time"


def test_a_target_whose_kernel_did_not_run_is_a_miss():
    from kernels.bench import Target

    t = Target("native", "peer", 1.0)
    res = _fake({"peer": 1.0, "eager": 1.0})
    assert not t.hit(res) and t.measured_text(res) == "did not run"


def test_target_rejects_a_nonpositive_ratio():
    from kernels.bench import Target

    with pytest.raises(ValueError, match="at_least"):
        Target("a", "b", 0)
