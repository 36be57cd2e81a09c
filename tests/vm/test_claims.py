"""The talk's claims (and the agenda's) as tests: `pytest -m vm -k page_reuse` runs just the
experiments that claim needs. One Lab per session shares guests and
measurements between the claims (as `harness run` does)."""

import secrets

import pytest

from harness.claims.experiments import run_experiment
from harness.claims.lab import Lab
from harness.claims.runner import ALL_CLAIMS, nics_for
from harness.errors import HarnessError
from harness.nics import DEFAULT_NICS

pytestmark = pytest.mark.vm


@pytest.fixture(scope="session")
def claims_lab(pytestconfig, harness_cache, kernel_choice):
    # The agenda's claims too: page-pool adds a vmxnet3 to the guests' hub.
    lab = Lab(harness_cache, "pytest-" + secrets.token_hex(3), choice=kernel_choice,
              accel=pytestconfig.getoption("--accel"), nics=nics_for(ALL_CLAIMS, DEFAULT_NICS))
    yield lab
    lab.close()


def has_igb_zero_copy(kernel) -> bool:
    try:
        kernel.source_file("drivers/net/ethernet/intel/igb/igb_xsk.c")  # 6.14+
        return True
    except HarnessError:
        return False


@pytest.mark.parametrize("claim", ALL_CLAIMS, ids=[c.id.replace("-", "_") for c in ALL_CLAIMS])
def test_claim_confirmed(claims_lab, claim, kernel):
    for name in claim.experiments:
        run_experiment(claims_lab, name)
    result = claim.evaluate(claims_lab)
    failures = [f"experiment {e} not measured: {claims_lab.failures[e]}"
                for e in claim.experiments if e in claims_lab.failures]
    evidence = "\n  ".join([c.describe() for c in result.checks] + result.explanation + result.notes + failures)
    print(f"\n{claim.id}: {result.verdict}\n  {evidence}")
    if claim.id == "xsk-zero-copy" and not has_igb_zero_copy(kernel):
        # The probe is the bind: it fails, the zero-copy checks say why, copy mode is measured.
        assert result.verdict == "inconclusive", evidence
        for c in result.checks:
            if c.id.startswith("zc-"):
                assert c.value is None and "no AF_XDP zero-copy" in c.unmeasured, c.describe()
            else:
                assert c.holds(), c.describe()
        return
    assert result.verdict == "confirmed", f"{claim.id} is {result.verdict}:\n  {evidence}"
