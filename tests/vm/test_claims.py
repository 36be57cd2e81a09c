"""The talk's claims as tests: `pytest -m vm -k page_reuse` runs just the
experiments that claim needs. One Lab per session shares guests and
measurements between the claims (as `harness run` does)."""

import secrets

import pytest

from harness.claims.experiments import run_experiment
from harness.claims.lab import Lab
from harness.claims.runner import CLAIMS

pytestmark = pytest.mark.vm


@pytest.fixture(scope="session")
def claims_lab(pytestconfig, harness_cache, kernel_choice):
    lab = Lab(harness_cache, "pytest-" + secrets.token_hex(3), choice=kernel_choice,
              accel=pytestconfig.getoption("--accel"))
    yield lab
    lab.close()


@pytest.mark.parametrize("claim", CLAIMS, ids=[c.id.replace("-", "_") for c in CLAIMS])
def test_claim_confirmed(claims_lab, claim):
    for name in claim.experiments:
        run_experiment(claims_lab, name)
    result = claim.evaluate(claims_lab)
    failures = [f"experiment {e} not measured: {claims_lab.failures[e]}"
                for e in claim.experiments if e in claims_lab.failures]
    evidence = "\n  ".join([c.describe() for c in result.checks] + result.explanation + result.notes + failures)
    print(f"\n{claim.id}: {result.verdict}\n  {evidence}")
    assert result.verdict == "confirmed", f"{claim.id} is {result.verdict}:\n  {evidence}"
