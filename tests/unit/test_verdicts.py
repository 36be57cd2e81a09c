import math

import pytest

from harness.claims.base import Check, ClaimResult


def claim(*checks: Check) -> ClaimResult:
    return ClaimResult("x", "title", "7", list(checks))


def test_all_hold_confirms():
    r = claim(Check("maps/frame", 0.0, "<", 0.05), Check("build_skb/frame", 1.003, "~", 1.0, rel_tol=0.01))
    assert r.verdict == "confirmed"
    assert r.rule == "maps/frame < 0.05 AND build_skb/frame ≈ 1 ±1%"


def test_one_failure_refutes_even_with_an_unmeasured_check():
    r = claim(Check("maps/frame", 1.0, "<", 0.05), Check("no-reuse maps/frame", None, ">", 0.9))
    assert r.verdict == "refuted"


def test_unmeasured_makes_inconclusive():
    assert claim(Check("a", 0.0, "<", 1), Check("b", None, "<", 1)).verdict == "inconclusive"
    assert claim(Check("a", math.nan, "<", 1)).verdict == "inconclusive"


def test_no_checks_is_never_confirmed():
    assert claim().verdict == "inconclusive"


def test_check_rejects_non_numbers_and_positional_how():
    with pytest.raises(TypeError, match="is not a number"):
        Check("x", "0.5", "<", 1)
    with pytest.raises(TypeError):
        Check("x", 0.5, "<", 1, "how it was measured")  # how= must be named


def test_describe_says_what_failed():
    assert Check("igb maps/frame", 0.98, "<", 0.05).describe() == "igb maps/frame < 0.05: measured 0.98 (FAILS)"


def test_the_one_line_summary_shows_the_check_that_decided():
    holds, unmeasured, fails = Check("a", 0.0, "<", 1), Check("b", None, "<", 1), Check("c", 2.0, "<", 1)
    assert claim(holds, unmeasured).deciding_check is unmeasured
    assert claim(holds, unmeasured, fails).deciding_check is fails
    assert claim(holds, Check("d", 0.5, "<", 1)).deciding_check is holds
    assert claim().deciding_check is None
