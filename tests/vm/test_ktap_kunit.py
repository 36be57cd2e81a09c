"""`results.ktap` read by the kernel's own KTAP parser: tools/testing/kunit/kunit_parser.py
of the kernel under test's source (the tree the `kernel` fixture was built from),
imported as kunit.py imports it. A claim run's KTAP must come out with the same
statuses there as in harness/selftests/ktap.py: confirmed SUCCESS, refuted and
error FAILURE, inconclusive SKIPPED, and no parse errors."""

import json
import sys
from pathlib import Path

import pytest

from harness.selftests.ktap import claims_ktap, parse_ktap

pytestmark = pytest.mark.vm

RUN = Path(__file__).parent.parent / "fixtures" / "runs" / "6.12.95-stock" / "results.json"


@pytest.fixture
def kunit_parser(kernel, monkeypatch):
    origin = kernel.meta.get("source_origin")
    tool = Path(origin) / "tools/testing/kunit" if origin else None
    if tool is None or not (tool / "kunit_parser.py").is_file():
        pytest.skip(f"{kernel.label} has no kernel source with tools/testing/kunit")  # reason: prebuilt kernel
    monkeypatch.syspath_prepend(str(tool))  # kunit_parser imports kunit_printer from its own directory
    for name in ("kunit_parser", "kunit_printer"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    import kunit_parser

    return kunit_parser


def test_claims_ktap_reads_the_same_in_kunit_parser(kunit_parser):
    claims = json.loads(RUN.read_text())["claims"]
    claims[1] = {**claims[1], "verdict": "refuted"}
    claims[2] = {**claims[2], "verdict": "inconclusive",
                 "checks": [{**claims[2]["checks"][0], "holds": None, "unmeasured": "kernel without DEBUG_PAGE_REF"}]}
    claims[3] = {**claims[3], "verdict": "error", "errors": [{"headline": "rx: kernel BUG@ftrace_kill: BUG"}]}
    text = claims_ktap(claims)

    test = kunit_parser.parse_run_tests(text.splitlines(keepends=True))
    status = kunit_parser.TestStatus
    theirs = [(t.name, t.status) for t in test.subtests]
    assert [name for name, _ in theirs] == [c["id"] for c in claims]
    assert [s for _, s in theirs][:4] == [status.SUCCESS, status.FAILURE, status.SKIPPED, status.FAILURE]
    assert all(s == status.SUCCESS for _, s in theirs[4:])
    assert test.counts.errors == 0, test.log
    assert (test.counts.passed, test.counts.failed, test.counts.skipped) == (5, 2, 1)

    ours = {r.name: r.status for r in parse_ktap(text).results}
    assert [ours[name] for name, _ in theirs][:4] == ["pass", "fail", "skip", "fail"]
