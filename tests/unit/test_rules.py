"""The claims' rules pinned on a real run: every check holds on the recorded stock
6.12.95 run, and each check fails when the one number it reads is changed to
what a broken driver would produce (the other checks of the claim unchanged).
The fixture is a `harness run` out directory (results.json, measurements.json)
and the igb.h that kernel was built from."""

import json
from pathlib import Path

import pytest

from harness.claims.base import ERROR, REFUTED
from harness.claims.lab import ExperimentFailure
from harness.claims.recorded import EmptyLab, RecordedLab
from harness.claims.runner import CLAIMS, select
from harness.claims.traffic_space import check_id
from harness.guest.crash import classify

FIX = Path(__file__).resolve().parents[1] / "fixtures"
RUN, SOURCES = FIX / "runs" / "6.12.95-stock", FIX / "src" / "6.12.95"


def recorded() -> RecordedLab:
    return RecordedLab(RUN, SOURCES)


def frames(lab, experiment: str) -> int:
    return lab.results[experiment].traffic.received


def set_value(lab, experiment: str, metric: str, driver: str, value: float) -> None:
    m = lab.results[experiment]
    rows = (m.frame.metric == metric) & (m.frame.driver == driver)
    assert rows.sum() == 1, f"{experiment}: {rows.sum()} rows of {metric}/{driver}"
    m.frame.loc[rows, "value"] = value


def set_detail(lab, experiment: str, metric: str, driver: str, detail: dict) -> None:
    m = lab.results[experiment]
    rows = (m.frame.metric == metric) & (m.frame.driver == driver)
    assert rows.sum() == 1, f"{experiment}: {rows.sum()} rows of {metric}/{driver}"
    m.frame.loc[rows, "detail"] = json.dumps(detail)


def per_frame(value: float):
    """Set a count to `value` per received frame of the experiment."""
    def mutate(lab, experiment, metric, driver):
        set_value(lab, experiment, metric, driver, value * frames(lab, experiment))
    return mutate


def rx_attrs(attrs: str):
    """Every igb rx call of the experiment made with these attrs instead."""
    def mutate(lab, experiment, metric, driver):
        n = frames(lab, experiment)
        set_detail(lab, experiment, metric, driver,
                   {"by_attrs": {attrs: n}, "by_dir_attrs": {"from_device": {attrs: n}}})
    return mutate


def callers(*names: str):
    def mutate(lab, experiment, metric, driver):
        set_detail(lab, experiment, metric, driver, {"by_caller": [
            {"caller": c, "dir": "from_device", "attrs": "0x22", "count": 100, "stack": c} for c in names]})
    return mutate


def device_syncs(length: int):
    def mutate(lab, experiment, metric, driver):
        set_detail(lab, experiment, metric, driver, {"by_dir_len": [
            {"dir": "from_device", "len": length, "count": frames(lab, experiment)}]})
    return mutate


def dma_api_report(driver: str):
    def mutate(lab, experiment, metric, _driver):
        set_value(lab, experiment, metric, "", 1)
        set_detail(lab, experiment, metric, "", {"by_driver": {driver: 1}, "unattributed": 0, "disabled": False,
                                                   "reports": [{"fingerprint": "DMA-API@x: y #1",
                                                                "message": f"DMA-API: {driver} 0000:00:04.0: z"}]})
    return mutate


def graph_callers(**per_frame_by_caller: float):
    """The function_graph count made per frame by each innermost traced caller."""
    def mutate(lab, experiment, metric, driver):
        n = frames(lab, experiment)
        set_value(lab, experiment, metric, driver, sum(per_frame_by_caller.values()) * n)
        set_detail(lab, experiment, metric, driver, {"by_caller": {c: v * n for c, v in per_frame_by_caller.items()}})
    return mutate


def nowhere_home(lab, experiment, metric, driver):
    """No frame's bytes in a buffer the device wrote (a copy by any route), at every size."""
    m = lab.results[experiment]
    rows = (m.frame.metric == metric) & (m.frame.driver == driver)
    by_len = json.loads(m.frame.loc[rows, "detail"].iloc[0])["by_len"]
    set_value(lab, experiment, metric, driver, 0)
    set_detail(lab, experiment, metric, driver, {"by_len": {k: 0 for k in by_len}})


def no_calls(lab, experiment, metric, driver):
    set_detail(lab, experiment, metric, driver, {"by_attrs": {}, "by_dir_attrs": {}})


def absolute(value: float):
    def mutate(lab, experiment, metric, driver):
        set_value(lab, experiment, metric, driver, value)
    return mutate


# (claim, check id, [(experiment, metric, driver, mutation)]): what a broken driver would make the run show.
BROKEN = [
    ("page-based-rx", "build-skb-per-frame", [("rx", "calls:napi_build_skb", "igb", per_frame(0))]),
    ("page-based-rx", "copy-allocs-per-frame", [("rx", "calls:napi_alloc_skb", "igb", per_frame(1))]),
    *[("page-based-rx", check, [("rx-skb-home", "skb_home:in_rx_buffer", "igb", nowhere_home)])
      for check in ("payload-in-rx-buffer", "payload-in-rx-buffer@256B", "payload-in-rx-buffer@1514B")],
    ("page-reuse", "igb-rx-maps-per-frame", [("rx", "dma_map_page_attrs", "igb", per_frame(1))]),
    ("page-reuse", "igb-page-allocs-per-frame", [("rx", "calls:__alloc_pages_noprof", "igb",
                                                  graph_callers(igb_alloc_rx_buffers=1, napi_build_skb=0.1))]),
    ("page-reuse", "held-skbs-maps-per-frame", [("rx-held", "dma_map_page_attrs", "igb", per_frame(1))]),
    ("page-reuse", "no-reuse-maps-per-frame", [("rx-no-reuse", "dma_map_page_attrs", "igb", per_frame(0))]),
    ("page-reuse", "e1000e-rx-maps-per-frame", [("rx-control", "dma_map_page_attrs", "e1000e", per_frame(0))]),
    ("page-reuse", "iommu-maps-per-frame", [("rx-iommu", "dma_map_page_attrs", "igb", per_frame(1))]),
    ("half-page-sync", "cpu-syncs-per-frame", [("rx-swiotlb", "__dma_sync_single_for_cpu", "igb", per_frame(2))]),
    ("half-page-sync", "device-syncs-per-frame",
     [("rx-swiotlb", "__dma_sync_single_for_device", "igb", per_frame(0))]),
    ("half-page-sync", "cpu-sync-bytes-ratio",
     [("rx-swiotlb", "__dma_sync_single_for_cpu:bytes", "igb", per_frame(1536))]),
    ("half-page-sync", "largest-device-sync",
     [("rx-swiotlb", "__dma_sync_single_for_device", "igb", device_syncs(4096))]),
    ("half-page-sync", "build_skb-other-size-syncs",
     [("rx-swiotlb", "__dma_sync_single_for_device", "igb", device_syncs(2048))]),
    ("half-page-sync", "build_skb-bufsz-syncs-per-frame",
     [("rx-swiotlb", "__dma_sync_single_for_device", "igb", device_syncs(2048))]),
    ("half-page-sync", "legacy-other-size-syncs",
     [("rx-swiotlb-legacy", "__dma_sync_single_for_device", "igb", device_syncs(1536))]),
    ("half-page-sync", "legacy-bufsz-syncs-per-frame",
     [("rx-swiotlb-legacy", "__dma_sync_single_for_device", "igb", device_syncs(1536))]),
    ("half-page-sync", "large-other-size-syncs",
     [("rx-swiotlb-large", "__dma_sync_single_for_device", "igb", device_syncs(2048))]),
    ("half-page-sync", "large-bufsz-syncs-per-frame",
     [("rx-swiotlb-large", "__dma_sync_single_for_device", "igb", device_syncs(2048))]),
    ("half-page-sync", "legacy-largest-device-sync",
     [("rx-swiotlb-legacy", "__dma_sync_single_for_device", "igb", device_syncs(4096))]),
    ("half-page-sync", "large-largest-device-sync",
     [("rx-swiotlb-large", "__dma_sync_single_for_device", "igb", device_syncs(8192))]),
    ("half-page-sync", "dma-api-errors", [("rx-swiotlb", "dma_api_errors", "", dma_api_report("igb"))]),
    ("pagecnt-bias", "ref-increments-per-frame", [("rx-page-refs", "calls:__page_ref_mod", "igb", per_frame(1))]),
    ("pagecnt-bias", "ref-drops-per-frame", [("rx-page-refs", "calls:__page_ref_mod_and_test", "igb", per_frame(0))]),
    ("skip-cpu-sync", "rx-maps-seen", [("*", "dma_map_page_attrs:attrs", "igb", no_calls)]),
    ("skip-cpu-sync", "rx-maps-skip-cpu-sync", [("ring-fill", "dma_map_page_attrs:attrs", "igb", rx_attrs("0x2"))]),
    ("skip-cpu-sync", "rx-unmaps-skip-cpu-sync",
     [("rx-held", "dma_unmap_page_attrs:attrs", "igb", rx_attrs("0x2"))]),
    ("skip-cpu-sync", "teardown-unmaps-seen",
     [("ring-fill", "dma_unmap_page_attrs:callers", "igb", callers("igb_poll"))]),
    ("skip-cpu-sync", "hot-path-unmaps-seen",
     [("rx-held", "dma_unmap_page_attrs:callers", "igb", callers("igb_clean_rx_ring")),
      ("rx-no-reuse", "dma_unmap_page_attrs:callers", "igb", callers("igb_clean_rx_ring"))]),
    ("skip-cpu-sync", "dma-api-errors", [("ring-fill", "dma_api_errors", "", dma_api_report("igb"))]),
    ("build-skb-vs-copy", "default-build-skb", [("rx", "calls:napi_build_skb", "igb", per_frame(0))]),
    ("build-skb-vs-copy", "default-copy-allocs", [("rx", "calls:napi_alloc_skb", "igb", per_frame(1))]),
    ("build-skb-vs-copy", "legacy-build-skb", [("legacy-rx", "calls:napi_build_skb", "igb", per_frame(1))]),
    ("build-skb-vs-copy", "legacy-copy-allocs", [("legacy-rx", "calls:napi_alloc_skb", "igb", per_frame(0))]),
    ("xdp", "drop-runs-per-frame", [("xdp-drop", "xdp_run_cnt:xdp_drop", "igb", per_frame(0))]),
    ("xdp", "drop-build-skb", [("xdp-drop", "calls:napi_build_skb", "igb", per_frame(1))]),
    ("xdp", "drop-page-allocs", [("xdp-drop", "calls:__alloc_pages_noprof", "igb", per_frame(1))]),
    ("xdp", "drop-maps", [("xdp-drop", "dma_map_page_attrs", "igb", per_frame(1))]),
    ("xdp", "pass-build-skb", [("xdp-pass", "calls:napi_build_skb", "igb", per_frame(0))]),
    ("xdp", "tx-bounced-per-frame", [("xdp-tx", "counter:link.rx_packets", "e1000e", absolute(0))]),
    ("xdp", "tx-page-allocs", [("xdp-tx", "calls:__alloc_pages_noprof", "igb", per_frame(1))]),
    ("xdp", "headroom-vs-source", [("xdp-headroom", "xdp_buff_headroom", "igb", absolute(160))]),
    ("xdp", "program-headroom", [("xdp-headroom", "xdp_prog_max_grow", "igb", absolute(100))]),
]
MEASURED = [c for c in CLAIMS if c.id != "barriers"]  # barriers reads object code, not a run (test_barriers.py)


def at_sampled_points(cases: list) -> list:
    """Each case again at every other traffic point its claim samples the case's
    experiment at: the same broken number in the sampled experiment must fail the
    check's id at that point (the sample is data: these cases follow it)."""
    out = []
    for claim_id, check, mutations in cases:
        (claim,) = select([claim_id])
        ids = {c.id for c in claim.evaluate(EmptyLab()).checks}
        for sample in getattr(claim, "samples", ()):
            if any(m[0] != sample.base for m in mutations):
                continue
            out += [(claim_id, check_id(check, point), [(exp, *m[1:]) for m in mutations])
                    for exp, point in sample.by_point()[1:] if check_id(check, point) in ids]
    return out


BROKEN += at_sampled_points(BROKEN)


@pytest.mark.parametrize("claim", MEASURED, ids=[c.id for c in MEASURED])
def test_every_check_holds_on_the_recorded_stock_run(claim):
    result = claim.evaluate(recorded())
    failing = [c.describe() for c in result.checks if c.holds() is not True]
    assert result.verdict == "confirmed", failing


def test_every_measured_check_has_a_failing_case():
    covered = {(claim, check) for claim, check, _ in BROKEN}
    for claim in MEASURED:
        for check in claim.evaluate(EmptyLab()).checks:
            assert (claim.id, check.id) in covered, f"no failing case for {claim.id}/{check.id}"


@pytest.mark.parametrize(("claim_id", "check_id", "mutations"), BROKEN, ids=[f"{c}/{k}" for c, k, _ in BROKEN])
def test_a_broken_number_fails_its_check(claim_id, check_id, mutations):
    lab = recorded()
    for experiment, metric, driver, mutate in mutations:
        every = [e for e, m in lab.results.items() if not m.rows(metric, driver).empty]
        for e in every if experiment == "*" else [experiment]:  # "*": every experiment that has the row
            mutate(lab, e, metric, driver)
    (claim,) = select([claim_id])
    result = claim.evaluate(lab)
    assert result.check(check_id).holds() is False, result.check(check_id).describe()
    assert result.verdict == REFUTED


def test_an_unmeasured_experiment_is_inconclusive_and_says_why():
    lab = recorded()
    del lab.results["rx-no-reuse"]
    (claim,) = select(["page-reuse"])
    result = claim.evaluate(lab)
    assert result.verdict == "inconclusive"
    assert result.check("no-reuse-maps-per-frame").unmeasured == "experiment rx-no-reuse was not run"


def test_a_crashed_experiment_makes_its_claims_error():
    from harness.claims.runner import evaluate_claims

    lab = recorded()
    del lab.results["rx"]
    report = classify(["BUG: unable to handle page fault for address: ffffffff810c0125",
                       "RIP: 0010:ftrace_kill+0x25/0x40"])
    lab.failures["rx"] = ExperimentFailure("rx", "error", "ssh connection to the guest is gone", (report,),
                                           "killed by signal 9 (SIGKILL)")
    results = {r.id: r for r in evaluate_claims(lab, select(["page-based-rx", "build-skb-vs-copy", "xdp"]))}
    assert results["page-based-rx"].verdict == ERROR
    assert results["build-skb-vs-copy"].verdict == ERROR
    assert results["xdp"].verdict == "confirmed"  # it does not need rx
    assert results["page-based-rx"].summary().startswith("rx: kernel BUG@ftrace_kill")


def test_refuted_explanations_say_what_the_code_does():
    lab = recorded()
    per_frame(1)(lab, "rx-page-refs", "calls:__page_ref_mod", "igb")
    (claim,) = select(["pagecnt-bias"])
    text = " ".join(claim.evaluate(lab).explanation)
    assert "pays an atomic refcount operation per frame" in text and "covers the rest" not in text
    lab = recorded()
    absolute(0)(lab, "xdp-tx", "counter:link.rx_packets", "e1000e")
    (claim,) = select(["xdp"])
    assert "did not send every frame back" in " ".join(claim.evaluate(lab).explanation)


def test_slab_refills_under_napi_build_skb_are_not_igb_page_allocations():
    # 7.3.4: 209 of 290 page allocations under igb_poll in 2,000 frames were slab refills
    # for skb heads (napi_build_skb), 81 directly under igb_poll, none by the refill.
    lab = recorded()
    graph_callers(napi_build_skb=0.1045, igb_poll=0.0405)(lab, "rx", "calls:__alloc_pages_noprof", "igb")
    result = next(c for c in CLAIMS if c.id == "page-reuse").evaluate(lab)
    check = next(c for c in result.checks if c.id == "igb-page-allocs-per-frame")
    assert check.value == 0 and check.holds
    assert any("napi_build_skb" in line and "slab" in line for line in result.explanation)
