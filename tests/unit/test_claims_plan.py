import pytest

from harness.claims.experiments import EXPERIMENTS, GUEST_ORDER
from harness.claims.runner import CLAIM_IDS, CLAIMS, experiment_order, select
from harness.errors import HarnessError


def test_every_claim_of_the_design_is_there():
    assert CLAIM_IDS == ["page-based-rx", "page-reuse", "half-page-sync", "pagecnt-bias", "skip-cpu-sync",
                         "barriers", "build-skb-vs-copy", "xdp"]


def test_experiments_exist_and_group_by_guest():
    order = experiment_order(CLAIMS)
    assert set(order) == {e for c in CLAIMS for e in c.experiments}
    assert all(e in EXPERIMENTS for e in order)
    guests = [(EXPERIMENTS[e].variant, EXPERIMENTS[e].dma_mode) for e in order]
    # each guest appears in one run of consecutive experiments: booted once
    runs = [g for i, g in enumerate(guests) if i == 0 or guests[i - 1] != g]
    assert runs == [g for g in GUEST_ORDER if g in guests]


def test_selecting_claims_runs_only_their_experiments():
    assert experiment_order(select(["barriers"])) == []
    # no-reuse differs by igb.ko only: it runs in the stock direct guest, before the other guests
    # the sampled frame sizes run right after their base experiment, smallest first
    assert experiment_order(select(["page-reuse"])) == [
        "rx", "rx@1514B+csum", "rx-control", "rx-held", "rx-no-reuse", "rx-iommu"]


def test_unknown_claim_lists_the_known_ones():
    with pytest.raises(HarnessError, match="unknown claim id nope; known: page-based-rx, page-reuse"):
        select(["page-reuse", "nope"])


def test_a_traffic_point_added_to_a_sample_is_data_only(monkeypatch):
    """Frame size 512 added to the rx sizes (the data in traffic_space) gives the
    experiment rx@512B (512-byte frames, the rest of rx's setting), its place in the
    run, and page-based-rx's checks at that point, with nothing else changed."""
    import dataclasses
    import importlib

    from harness.claims import rx_claims, traffic_space
    from harness.claims.recorded import EmptyLab

    sizes = (*traffic_space.RX_SIZES, traffic_space.TrafficPoint(frame_size=512))
    monkeypatch.setattr(traffic_space, "RX_SIZES", sizes)
    claims = importlib.reload(rx_claims)
    try:
        claim = claims.PageBasedRx()
        assert "rx@512B" in claim.experiments
        exp = EXPERIMENTS["rx@512B"]
        assert exp.traffic().pkt_size == 512 and dataclasses.replace(exp, name="rx", point=EXPERIMENTS["rx"].point) \
            == EXPERIMENTS["rx"]
        assert "512-byte frames" in exp.what
        order = experiment_order([claim])
        assert order.index("rx") < order.index("rx@512B") < order.index("rx@1514B+csum")
        ids = {c.id for c in claim.evaluate(EmptyLab()).checks}
        assert {"build-skb-per-frame@512B", "copy-allocs-per-frame@512B"} <= ids
    finally:
        monkeypatch.undo()
        importlib.reload(rx_claims)


def test_traffic_point_tags_round_trip():
    from harness.claims.traffic_space import TrafficPoint, split_name

    for point in (TrafficPoint(), TrafficPoint(1514), TrafficPoint(1514, udp_csum=True), TrafficPoint(udp_csum=True)):
        name = f"rx@{point.tag()}" if point.tag() else "rx"
        assert split_name(name) == ("rx", point)
    with pytest.raises(HarnessError, match="unknown traffic point 'jumbo'"):
        split_name("rx@jumbo")


def test_docs_list_every_claims_region_and_sample():
    from pathlib import Path

    from harness.claims.runner import ALL_CLAIMS, COST_CLAIMS

    doc = (Path(__file__).resolve().parents[2] / "docs" / "claims.md").read_text()
    rows = {line.split(" | ")[0].strip("| "): line for line in doc.splitlines() if line.startswith("| ")}
    for claim in ALL_CLAIMS + COST_CLAIMS:
        assert claim.region in rows[claim.id], f"docs/claims.md: {claim.id}'s region"
        assert all(f"`{e}`" in rows[claim.id] for e in claim.experiments), f"docs/claims.md: {claim.id}'s sample"


def test_the_kprobe_comes_after_every_function_graph_experiment_of_its_guest():
    """7.3.4 (debug flavour) crashed when function_graph was set up after xdp-headroom's
    kprobe had been armed and removed (README, known issues)."""
    from harness.claims.experiments import EXPERIMENTS

    same_guest = [e for e in EXPERIMENTS.base.values()
                  if (e.variant, e.dma_mode, e.cost) == ("stock", "direct", False)]
    graphs = [e.name for e in same_guest if "graph" in e.probes]
    assert graphs and all(EXPERIMENTS.rank(g) < EXPERIMENTS.rank("xdp-headroom") for g in graphs)
