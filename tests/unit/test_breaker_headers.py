"""Every breaker names a real claim, real check ids of it and a verdict."""

import pytest

from harness.claims.recorded import EmptyLab
from harness.claims.runner import ALL_CLAIMS, COST_CLAIMS, select
from tests.breaker_meta import all_breakers

BREAKERS = all_breakers()


def test_every_claim_has_a_breaker():
    assert {b.claim for b in BREAKERS} == {c.id for c in ALL_CLAIMS + COST_CLAIMS}


@pytest.mark.parametrize("breaker", BREAKERS, ids=[b.name for b in BREAKERS])
def test_header_names_real_checks(breaker):
    (claim,) = select([breaker.claim])
    ids = {c.id for c in claim.evaluate(EmptyLab()).checks}
    assert set(breaker.must_fail) <= ids, f"unknown check ids {set(breaker.must_fail) - ids}; {claim.id} has {ids}"
    assert breaker.verdict in ("refuted", "error")
    assert breaker.must_fail or breaker.verdict == "error"
    assert breaker.name == breaker.claim or breaker.name.startswith(breaker.claim + "--")
