"""kernels.repro: seeding determinism, the SCALE switch, and the claims table."""

import numpy as np
import pytest
import torch

from kernels import repro


def test_setup_is_deterministic_and_fixes_threads():
    before = torch.get_num_threads()
    try:
        rng = repro.setup(123, threads=1)
        a = (torch.randn(5), np.random.rand(3), rng.standard_normal(4))
        rng = repro.setup(123, threads=1)
        b = (torch.randn(5), np.random.rand(3), rng.standard_normal(4))
        assert torch.equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
        np.testing.assert_array_equal(a[2], b[2])
        assert torch.get_num_threads() == 1
        repro.setup(124)
        assert not torch.equal(torch.randn(5), a[0])
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("seed, match", [(-1, "seed"), (1.5, "seed"), ("0", "seed"), (True, "seed"), (2**32, "seed")])
def test_setup_rejects_bad_seed(seed, match):
    with pytest.raises(ValueError, match=match):
        repro.setup(seed)


@pytest.mark.parametrize("threads", [0, -2, 1.0, True])
def test_setup_rejects_bad_threads(threads):
    with pytest.raises(ValueError, match="threads"):
        repro.setup(0, threads=threads)


TABLE = {"smoke": {"n": 10, "lr": 0.1}, "book": {"n": 100, "lr": 0.1}, "paper": {"n": 10_000, "lr": 0.01}}


def test_pick_scale_returns_the_column_and_prints_every_scale(capsys):
    assert repro.pick_scale("book", TABLE) == {"n": 100, "lr": 0.1}
    out = capsys.readouterr().out
    assert "book *" in out and "smoke" in out and "paper" in out and "10000" in out
    assert repro.pick_scale("paper", TABLE, show=False)["n"] == 10_000


def test_pick_scale_unknown_scale_names_the_parameter_and_choices():
    with pytest.raises(ValueError) as exc:
        repro.pick_scale("huge", TABLE)
    msg = str(exc.value)
    assert "SCALE" in msg and "'huge'" in msg and "'smoke'" in msg and "'book'" in msg and "'paper'" in msg


def test_pick_scale_rejects_incomplete_or_ragged_tables():
    with pytest.raises(ValueError, match="table"):
        repro.pick_scale("book", {"book": {"n": 1}, "smoke": {"n": 1}})
    with pytest.raises(ValueError, match=r"table\['paper'\]"):
        repro.pick_scale("book", {**TABLE, "paper": {"n": 1}})


def test_round_sig():
    assert repro.round_sig(123456.0) == 123500.0
    assert repro.round_sig(0.000123456, 3) == 0.000123
    assert repro.round_sig(0.0) == 0.0
    assert np.isnan(repro.round_sig(float("nan")))
    with pytest.raises(ValueError, match="digits"):
        repro.round_sig(1.0, 0)


def test_format_table_aligns_and_checks_row_length():
    text = repro.format_table(["a", "bb"], [["xxx", "y"]])
    assert text.splitlines() == ["a    bb", "---  --", "xxx  y"]
    with pytest.raises(ValueError, match="rows"):
        repro.format_table(["a", "b"], [["only one"]])


def _claims(scale):
    glued = {}
    claims = repro.Claims(scale, glue=lambda name, value, display: glued.__setitem__(name, (value, display)))
    return claims, glued


@pytest.mark.parametrize("op, measured, threshold, holds", [
    (">=", 2.0, 2.0, True), (">", 2.0, 2.0, False), ("<=", 1.0, 2.0, True), ("<", 3.0, 2.0, False),
    ("==", 1.0, 1.0, True), (">=", float("nan"), 0.0, False), ("<=", float("nan"), 0.0, False),
])
def test_claim_comparisons(op, measured, threshold, holds):
    assert repro.Claim("c", "p", measured, op, threshold).holds is holds


def test_claims_all_hold_prints_table_and_glues_rounded_values(capsys):
    claims, glued = _claims("book")
    claims.add("speedup", "5-30x", 7.123456, ">=", 4.0)
    claims.add("error", "small", 0.001234567, "<", 0.01)
    assert claims.check() == []
    out = capsys.readouterr().out
    assert "asserted" in out and "speedup" in out and "5-30x" in out and "7.12" in out and ">= 4" in out
    assert "2 of 2 claims as expected" in out
    assert glued == {"speedup": (7.123, False), "error": (0.001235, False)}


def test_claims_failure_raises_once_listing_every_failed_claim_at_book():
    claims, glued = _claims("book")
    claims.add("a", "p", 1.0, ">=", 2.0)
    claims.add("b", "p", 5.0, "<=", 1.0)
    claims.add("c", "p", 1.0, "==", 1.0)
    with pytest.raises(AssertionError) as exc:
        claims.check()
    msg = str(exc.value)
    assert "2 claim(s) failed" in msg and "a: measured 1" in msg and "b: measured 5" in msg and "c:" not in msg
    assert set(glued) == {"a", "b", "c"}  # glued before raising, so the notebook still shows them


def test_claims_only_report_at_smoke(capsys):
    claims, _ = _claims("smoke")
    claims.add("a", "p", 1.0, ">=", 2.0)
    failed = claims.check()
    assert [c.name for c in failed] == ["a"]
    assert "reported only" in capsys.readouterr().out


def test_claims_bad_input():
    with pytest.raises(ValueError, match="scale"):
        repro.Claims("large")
    with pytest.raises(ValueError, match="assert_at"):
        repro.Claims("book", assert_at=("huge",))
    claims, _ = _claims("book")
    with pytest.raises(ValueError, match="name"):
        claims.add("not an identifier", "p", 1.0, ">=", 0.0)
    with pytest.raises(ValueError, match="op"):
        claims.add("x", "p", 1.0, "=>", 0.0)
    with pytest.raises(ValueError, match="measured"):
        claims.add("x", "p", "fast", ">=", 0.0)
    with pytest.raises(ValueError, match="threshold"):
        claims.add("x", "p", 1.0, ">=", float("nan"))
    claims.add("x", "p", 1.0, ">=", 0.0)
    with pytest.raises(ValueError, match="already"):
        claims.add("x", "p", 1.0, ">=", 0.0)
    with pytest.raises(ValueError, match="nothing to check"):
        _claims("book")[0].check()


def test_pick_device_keeps_smoke_and_book_on_cpu():
    assert repro.pick_device("auto", "book") == torch.device("cpu")
    assert repro.pick_device("auto", "smoke") == torch.device("cpu")
    assert repro.pick_device("cpu", "paper") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert repro.pick_device("auto", "paper").type == expected


def test_pick_device_bad_input():
    with pytest.raises(ValueError, match="DEVICE"):
        repro.pick_device("tpu", "book")
    with pytest.raises(ValueError, match="scale"):
        repro.pick_device("auto", "huge")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="cuda"):
            repro.pick_device("cuda", "paper")


def test_expected_failure_is_shown_and_asserted_to_still_fail(capsys):
    claims, glued = _claims("book")
    claims.add("ok", "p", 2.0, ">=", 1.0)
    claims.add("gap", "within one decade", 3.4, "<=", 1.0, expected="fail")
    assert claims.check() == []
    out = capsys.readouterr().out
    assert "no (does not reproduce)" in out and "1 reported as not reproducing" in out
    assert glued["gap"] == (3.4, False)
    claims2, _ = _claims("book")
    claims2.add("gap", "within one decade", 0.5, "<=", 1.0, expected="fail")
    with pytest.raises(AssertionError, match="reported as NOT reproducing, but it now holds"):
        claims2.check()
    with pytest.raises(ValueError, match="expected"):
        claims2.add("x", "p", 1.0, ">=", 0.0, expected="maybe")


@pytest.mark.parametrize("expected", ["hold", "fail"])
def test_a_nan_measurement_is_never_as_expected(expected, capsys):
    claims, _ = _claims("book")
    claims.add("broken", "p", float("nan"), "<=", 1.0, expected=expected)
    assert not claims.claims[0].as_expected
    with pytest.raises(AssertionError, match="broken: measured nan.*NaN: a computation broke"):
        claims.check()
    assert "NO (NaN)" in capsys.readouterr().out
    smoke, _ = _claims("smoke")
    smoke.add("broken", "p", float("nan"), ">=", 1.0, expected=expected)
    assert smoke.check() == smoke.claims


def test_versions_drop_the_local_build_suffix():
    import types

    fake = types.SimpleNamespace(__name__="torch", __version__="2.13.0+cpu")
    other = types.SimpleNamespace(__name__="faiss.swig", __version__="1.15.1")
    assert repro.versions(fake, other) == "torch 2.13.0, faiss 1.15.1"
    assert "+" not in repro.versions(torch)
    with pytest.raises(ValueError, match="modules"):
        repro.versions(object())


def test_sanity_checks_are_asserted_but_shown_and_recorded_apart(capsys):
    claims, _ = _claims("book")
    claims.add("real", "p", 2.0, ">=", 1.0)
    claims.add("by_construction", "eta never decreases", 0.0, "==", 0.0, kind="sanity")
    claims.add("gap", "within a decade", 3.0, "<=", 1.0, expected="fail")
    assert claims.check() == []
    out = capsys.readouterr().out
    assert "yes (sanity)" in out and "(1 reported as not reproducing; 1 sanity checks)" in out
    assert [r["status"] for r in claims.records()] == ["holds", "sanity", "no-repro"]
    assert claims.records()[0] == {"name": "real", "paper": "p", "measured": 2.0, "op": ">=", "threshold": 1.0,
                                   "expected": "hold", "kind": "claim", "status": "holds"}
    broken, _ = _claims("book")
    broken.add("by_construction", "eta never decreases", 1.0, "==", 0.0, kind="sanity")
    with pytest.raises(AssertionError, match="by_construction"):
        broken.check()
    assert broken.records()[0]["status"] == "fails"
    with pytest.raises(ValueError, match="kind"):
        broken.add("x", "p", 1.0, ">=", 0.0, kind="maybe")
    with pytest.raises(ValueError, match="expected"):
        broken.add("y", "p", 1.0, ">=", 0.0, kind="sanity", expected="fail")


def test_claims_html_escapes_and_marks_rows():
    claims, _ = _claims("smoke")
    claims.add("a", "x < y & z", 1.0, ">=", 2.0)
    claims.add("b", "p", 1.0, ">=", 0.0, kind="sanity")
    html = claims.html()
    assert html.startswith('<table class="book-claims">') and "x &lt; y &amp; z" in html
    assert '<tr class="fail">' in html and '<tr class="sanity">' in html and html.count("<tr") == 3


def test_stress_tests_are_asserted_as_recorded_and_kept_apart(capsys):
    claims, _ = _claims("book")
    claims.add("beyond", "this chapter's stress test", 3.0, "<=", 1.0, expected="fail", kind="stress")
    claims.add("real", "p", 2.0, ">=", 1.0)
    assert claims.check() == []
    out = capsys.readouterr().out
    assert "no (stress test)" in out and "1 stress tests of this chapter's own" in out
    assert "reported as not reproducing" not in out
    assert [r["status"] for r in claims.records()] == ["stress", "holds"]
    changed, _ = _claims("book")
    changed.add("beyond", "this chapter's stress test", 0.5, "<=", 1.0, expected="fail", kind="stress")
    with pytest.raises(AssertionError, match="beyond"):
        changed.check()
    assert "UNEXPECTED (stress test)" in capsys.readouterr().out
