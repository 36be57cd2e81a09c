"""Verdicts follow the code: a kernel whose igb is edited to break one claim gets
`refuted` (or `error`, where a kernel report is the evidence) for that claim,
with the checks its header names among the failed ones and the exit status that
says so, through the CLI (`harness run --patch`). The edits only touch igb, so
each costs an igb.ko build against the cached kernel. The unedited kernel's
verdicts are test_claims.py's."""

import json
import subprocess
import sys

import pytest

from harness.errors import HarnessError
from tests.breaker_meta import all_breakers

pytestmark = pytest.mark.vm

BREAKERS = all_breakers()
EXIT = {"refuted": 1, "error": 5}


@pytest.mark.parametrize("breaker", BREAKERS, ids=[b.name for b in BREAKERS])
def test_edited_igb_gets_its_verdict(breaker, tmp_path, harness_cache, kernel_choice, kernel):
    if kernel_choice.prebuilt:
        pytest.skip(f"--kernel {kernel_choice.kind} is prebuilt")  # reason: a prebuilt kernel cannot be patched
    if breaker.needs:
        try:
            kernel.source_file(breaker.needs)
        except HarnessError:
            pytest.skip(f"{kernel.release} has no {breaker.needs}")  # reason: the code the breaker edits is newer
    out = tmp_path / "out"
    kernel_args = ["--kernel-tree", str(kernel_choice.tree)] if kernel_choice.tree else ["--kernel", kernel_choice.kind]
    res = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--cache", str(harness_cache.root),
                          *kernel_args, "--patch", str(breaker.path), "--claims", breaker.claim, "--out", str(out)],
                         capture_output=True, text=True, timeout=1200, check=False)
    record = json.loads((out / "results.json").read_text()) if (out / "results.json").is_file() else {}
    assert record, res.stderr[-3000:]
    assert breaker.path.name in record["kernel"]["patches"], record["kernel"]
    (claim,) = record["claims"]
    failed = {c["id"] for c in claim["checks"] if c["holds"] is False}
    assert claim["verdict"] == breaker.verdict, json.dumps(claim, indent=1)
    assert set(breaker.must_fail) <= failed, f"{breaker.must_fail} not all among the failed checks {failed}"
    assert res.returncode == EXIT[breaker.verdict], res.stderr[-2000:]
    if breaker.verdict == "error":
        assert claim["errors"] and claim["errors"][0]["reports"], claim["errors"]
        assert (out / "report.md").read_text().splitlines()[2] == "## Failures and kernel reports"
