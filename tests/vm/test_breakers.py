"""Verdicts follow the code: a kernel whose igb is edited to break one claim gets
`refuted` for that claim, through the CLI (`harness run --patch`). Each patch in
tests/breakers/ is one such edit, named after the claim it breaks; the unedited
kernel's verdicts are test_claims.py's."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.vm

BREAKERS = sorted((Path(__file__).parents[1] / "breakers").glob("*.patch"))
EXIT_REFUTED = 1
# Checks an edit must fail by name, where it shows in more than one measurement:
# rmb() for dma_rmb() is an lfence on x86 and a dsb in the arm64 cross build.
MUST_FAIL = {"barriers": ("fence instructions attributed to the rx/refill source lines", "arm64: dsb")}


def test_every_claim_has_a_breaker():
    from harness.claims.runner import select

    assert sorted(p.stem for p in BREAKERS) == sorted(c.id for c in select(None))


@pytest.mark.parametrize("patch", BREAKERS, ids=[p.stem for p in BREAKERS])
def test_edited_igb_refutes_its_claim(patch, tmp_path, harness_cache, kernel_choice):
    if kernel_choice.prebuilt:
        pytest.skip(f"--kernel {kernel_choice.kind} is prebuilt")  # reason: a prebuilt kernel cannot be patched
    out = tmp_path / "out"
    kernel_args = ["--kernel-tree", str(kernel_choice.tree)] if kernel_choice.tree else []
    res = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--cache", str(harness_cache.root),
                          *kernel_args, "--patch", str(patch), "--claims", patch.stem, "--out", str(out)],
                         capture_output=True, text=True, timeout=1200, check=False)
    record = json.loads((out / "results.json").read_text()) if (out / "results.json").is_file() else {}
    assert record, res.stderr[-3000:]
    assert patch.name in record["kernel"]["patches"], record["kernel"]
    (claim,) = record["claims"]
    failed = [c["rule"] for c in claim["checks"] if c["holds"] is False]
    assert claim["verdict"] == "refuted" and failed, json.dumps(claim, indent=1)
    for check in MUST_FAIL.get(patch.stem, ()):
        assert any(rule.startswith(check) for rule in failed), f"{check!r} not among the failed checks {failed}"
    assert res.returncode == EXIT_REFUTED, res.stderr[-2000:]
