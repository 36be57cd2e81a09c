"""KTAP in (the kernel's selftests) and out (harness run's claims)."""

import json
from pathlib import Path

from harness.selftests.ktap import claims_ktap, parse_ktap

FIX = Path(__file__).resolve().parents[1] / "fixtures"

KSFT = """\
KTAP version 1
1..3
ok 1 ping.test_v4
# Exception| Traceback (most recent call last):
# Exception|   File "ping.py", line 19, in test_v6
# Exception| lib.py.utils.CmdExitFailure: Command failed: ping -c 1 -W0.5 2001:db8::2
not ok 2 ping.test_v6
ok 3 ping.test_tcp # SKIP Test requires command: socat
# Totals: pass:1 fail:1 xfail:0 xpass:0 skip:1 error:0
"""


def test_kselftest_output_is_read_case_by_case():
    doc = parse_ktap(KSFT)
    assert (doc.version, doc.plan) == (1, 3) and doc.problems() == []
    assert [(r.number, r.name, r.status) for r in doc.results] == [
        (1, "ping.test_v4", "pass"), (2, "ping.test_v6", "fail"), (3, "ping.test_tcp", "skip")]
    assert doc.results[2].reason == "Test requires command: socat"
    assert "CmdExitFailure" in doc.results[1].diagnostics[-1]
    assert doc.totals == {"pass": 1, "fail": 1, "xfail": 0, "xpass": 0, "skip": 1, "error": 0}


def test_nested_subtests_and_xfail():
    doc = parse_ktap("KTAP version 1\n1..1\n    KTAP version 1\n    1..2\n    ok 1 a\n    ok 2 b # XFAIL no hw\n"
                     "ok 1 outer\n")
    (outer,) = doc.results
    assert [s.status for s in outer.subtests] == ["pass", "xfail"] and outer.subtests[1].reason == "no hw"


def test_a_test_that_stopped_early_is_noticed():
    assert parse_ktap("KTAP version 1\n1..3\nok 1 a\n").problems() == ["plan 1..3 but 1 results (the test stopped "
                                                                       "early?)"]


def test_claims_as_ktap_parse_back():
    record = json.loads((FIX / "runs" / "6.12.95-stock" / "results.json").read_text())
    claims = record["claims"]
    claims[1] = {**claims[1], "verdict": "refuted"}
    claims[2] = {**claims[2], "verdict": "inconclusive",
                 "checks": [{**claims[2]["checks"][0], "holds": None, "unmeasured": "kernel without DEBUG # x"}]}
    claims[3] = {**claims[3], "verdict": "error", "errors": [{"headline": "rx: kernel BUG@ftrace_kill: BUG"}]}
    doc = parse_ktap(claims_ktap(claims))
    assert doc.problems() == []
    statuses = [r.status for r in doc.results]
    assert statuses[:4] == ["pass", "fail", "skip", "fail"] and len(statuses) == 8
    assert doc.results[2].reason.startswith("inconclusive: kernel without DEBUG")
    assert any("error: rx: kernel BUG@ftrace_kill" in d for d in doc.results[3].diagnostics)
    assert doc.totals["error"] == 1 and doc.totals["fail"] == 1
