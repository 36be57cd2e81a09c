import pytest

from harness.claims.experiments import EXPERIMENTS, GUEST_ORDER
from harness.claims.runner import CLAIM_IDS, CLAIMS, experiment_order, select
from harness.errors import HarnessError


def test_every_claim_of_the_design_is_there():
    assert CLAIM_IDS == ["page-based-rx", "page-reuse", "half-page-sync", "pagecnt-bias", "skip-cpu-sync",
                         "barriers", "build-skb-vs-copy", "xdp"]


def test_experiments_exist_and_group_by_guest():
    order = experiment_order(CLAIMS)
    assert set(order) == {e for c in CLAIMS for e in c.experiments} <= set(EXPERIMENTS)
    guests = [(EXPERIMENTS[e].variant, EXPERIMENTS[e].dma_mode) for e in order]
    # each guest appears in one run of consecutive experiments: booted once
    runs = [g for i, g in enumerate(guests) if i == 0 or guests[i - 1] != g]
    assert runs == [g for g in GUEST_ORDER if g in guests]


def test_selecting_claims_runs_only_their_experiments():
    assert experiment_order(select(["barriers"])) == []
    # no-reuse differs by igb.ko only: it runs in the stock direct guest, before the other guests
    assert experiment_order(select(["page-reuse"])) == ["rx", "rx-control", "rx-held", "rx-no-reuse", "rx-iommu"]


def test_unknown_claim_lists_the_known_ones():
    with pytest.raises(HarnessError, match="unknown claim id nope; known: page-based-rx, page-reuse"):
        select(["page-reuse", "nope"])
