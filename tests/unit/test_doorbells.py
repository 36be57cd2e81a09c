"""The device witness and the doorbell claims, pinned on real output: QEMU's trace
log of 1,024 frames igb -> e1000e in pktgen bursts of 8 (tests/vm/test_device_trace.py
with HARNESS_CAPTURE_QEMU_TRACE) and a recorded `harness run --claims all` on
linux-source 6.12.95, QEMU 10.0.2, kept to tx-bulking's and rx-tail-batching's
experiments (the stock fixture has the eight talk claims' of the same run)."""

import gzip
import json
from pathlib import Path

import pytest

from harness.claims.base import CONFIRMED, INCONCLUSIVE, REFUTED
from harness.claims.recorded import RecordedLab
from harness.claims.runner import select
from harness.measurement.device_trace import count_device_events, tail_advances
from harness.measurement.netcheck import parse_ethtool_g
from harness.nics import nic

FIX = Path(__file__).resolve().parents[1] / "fixtures"
RUN, SOURCES = FIX / "runs" / "6.12.95-doorbells", FIX / "src" / "6.12.95"


def test_trace_log_counts_tail_writes_and_frames_per_model():
    log = gzip.decompress((FIX / "qemu_trace_igb_to_e1000e_burst8.log.gz").read_bytes()).decode()
    counts = count_device_events(log, [nic("igb"), nic("e1000e")])
    assert counts.rx_frames_written == {"e1000e": 1024}  # 3 pieces each (14 + 20 + 26 bytes), one frame
    assert counts.tx_tail_writes == {"igb": 135}
    assert counts.rx_tail_writes["e1000e"] == 64  # e1000e refills 16 buffers at a time too
    assert counts.rx_tail_writes["igb"] == 0 and counts.tx_tail_writes["e1000e"] == 0
    steps = tail_advances(counts.tail_values[("igb", "tx")], 256)
    assert max(steps, key=steps.get) == 8 and sum(steps.values()) == 134


def test_tail_advances_wrap_around_the_ring():
    assert tail_advances([248, 0, 8], 256) == {8: 2}
    assert tail_advances([5], 256) == {}


def test_ethtool_g_current_sizes():
    text = ("Ring parameters for eth1:\nPre-set maximums:\nRX:\t\t\t4096\nTX:\t\t\t4096\n"
            "Current hardware settings:\nRX:\t\t\t256\nRX Mini:\t\tn/a\nTX:\t\t\t512\n")
    assert parse_ethtool_g(text) == {"rx": 256, "tx": 512}


def recorded() -> RecordedLab:
    return RecordedLab(RUN, SOURCES)


def evaluate(claim_id: str, lab):
    (claim,) = select([claim_id])
    return claim.evaluate(lab)


def mutate(lab, experiment, metric, driver, value=None, detail=None):
    m = lab.results[experiment]
    rows = (m.frame.metric == metric) & (m.frame.driver == driver)
    assert rows.sum() == 1
    if value is not None:
        m.frame.loc[rows, "value"] = value
    if detail is not None:
        m.frame.loc[rows, "detail"] = json.dumps(detail)


@pytest.mark.parametrize("claim_id", ["tx-bulking", "rx-tail-batching"])
def test_every_check_holds_on_the_recorded_run(claim_id):
    result = evaluate(claim_id, recorded())
    assert result.verdict == CONFIRMED, [(c.id, c.value) for c in result.checks if not c.holds()]


def test_a_tail_written_per_frame_refutes_tx_bulking():
    lab = recorded()
    mutate(lab, "tx-burst-32", "device:tx_tail_writes", "igb", 2048, {"ring": 256, "advances": {"1": 2047}})
    result = evaluate("tx-bulking", lab)
    failed = {c.id for c in result.checks if c.holds() is False}
    assert result.verdict == REFUTED and failed == {"igb-burst-32-tail-writes", "igb-burst-32-advance"}
    assert any("does not defer" in line for line in result.explanation)


def test_frames_the_device_wrote_but_the_driver_missed_refute():
    lab = recorded()
    mutate(lab, "tx-burst-8", "device:witness_rx_diff", "e1000e", 1)
    failed = {c.id for c in evaluate("tx-bulking", lab).checks if c.holds() is False}
    assert failed == {"igb-burst-8-witness"}


@pytest.mark.parametrize("metric, value, check", [
    ("device:rx_tail_writes", 2048, "rdt-writes-per-frame"),  # a refill per frame (the breaker)
    ("calls:igb_alloc_rx_buffers", 127, "rdt-writes-vs-refills"),  # the device saw a write the guest did not
])
def test_rx_tail_batching_rules(metric, value, check):
    lab = recorded()
    mutate(lab, "rx-burst-64", metric, "igb", value)
    result = evaluate("rx-tail-batching", lab)
    assert result.verdict == REFUTED and check in {c.id for c in result.checks if c.holds() is False}


def test_a_batch_constant_of_one_still_refutes(monkeypatch):
    """igb.h's IGB_RX_BUFFER_WRITE edited to 1 moves the tree's own bound to 2 writes
    per frame, and a refill per frame passes it: the harness's bound does not move."""
    from harness.claims.doorbell_claims import RxTailBatching

    monkeypatch.setattr(RxTailBatching, "_batch", staticmethod(lambda lab: (1, [])))
    lab = recorded()
    for exp in ("rx-burst-64", "rx-burst-64-xdp-pass"):
        frames = lab.results[exp].traffic.received
        mutate(lab, exp, "device:rx_tail_writes", "igb", frames)
        mutate(lab, exp, "calls:igb_alloc_rx_buffers", "igb", frames)
    result = evaluate("rx-tail-batching", lab)
    failed = {c.id for c in result.checks if c.holds() is False}
    assert result.verdict == REFUTED
    assert failed == {"rdt-writes-per-frame-bound", "rdt-writes-per-frame-bound-xdp-pass"}


def test_a_tail_written_per_checksummed_frame_refutes_tx_bulking():
    # Plain frames batched, checksum-offloaded ones (a context descriptor each) not: the csum point fails.
    lab = recorded()
    sent = lab.results["tx-burst-8@csum"].frame
    frames = int(sent[sent.metric == "pktgen_sent"].value.iloc[0])
    mutate(lab, "tx-burst-8@csum", "device:tx_tail_writes", "igb", frames, {"ring": 256, "advances": {"2": frames}})
    result = evaluate("tx-bulking", lab)
    assert result.verdict == REFUTED
    assert {c.id for c in result.checks if c.holds() is False} == {"igb-burst-8-tail-writes@csum"}


def test_an_unrun_experiment_leaves_the_claim_inconclusive():
    lab = recorded()
    del lab.results["tx-burst-32-e1000e"]
    result = evaluate("tx-bulking", lab)
    assert result.verdict == INCONCLUSIVE
    assert any(c.unmeasured == "experiment tx-burst-32-e1000e was not run" for c in result.checks)


POOL_RUN = FIX / "runs" / "6.12.95-page-pool"


def test_page_pool_recycles_on_the_recorded_run():
    result = evaluate("page-pool", RecordedLab(POOL_RUN, SOURCES))
    assert result.verdict == CONFIRMED, [(c.id, c.value) for c in result.checks]
    held = next(c for c in result.checks if c.id == "held-slow-allocs-per-frame")
    assert held.value > 0.9  # 0.992: the tracepoint sees the allocator when nothing comes back


def test_a_pool_whose_pages_do_not_come_back_refutes():
    # What the page-pool breaker measured: 1.024 slow allocations and 1.0 releases per frame.
    lab = RecordedLab(POOL_RUN, SOURCES)
    frames = lab.results["pp-xdp-pass"].traffic.received
    mutate(lab, "pp-xdp-pass", "event:page_pool:page_pool_state_hold", "", 1.024 * frames)
    mutate(lab, "pp-xdp-pass", "event:page_pool:page_pool_state_release", "", frames)
    result = evaluate("page-pool", lab)
    assert result.verdict == REFUTED
    assert {c.id for c in result.checks if c.holds() is False} == {"slow-allocs-per-frame", "releases-per-frame"}
    assert "do not come back" in result.explanation[0]


def test_a_pool_that_releases_dropped_pages_refutes():
    # What page-pool--drop-not-recycled measured: every XDP_DROP page released and replaced.
    lab = RecordedLab(POOL_RUN, SOURCES)
    frames = lab.results["pp-xdp-drop"].traffic.received
    mutate(lab, "pp-xdp-drop", "event:page_pool:page_pool_state_hold", "", frames)
    mutate(lab, "pp-xdp-drop", "event:page_pool:page_pool_state_release", "", frames)
    result = evaluate("page-pool", lab)
    assert result.verdict == REFUTED
    assert {c.id for c in result.checks if c.holds() is False} == {"drop-slow-allocs-per-frame",
                                                                   "drop-releases-per-frame"}


def test_ethtool_l_current_combined_channels():
    from harness.measurement.xsk import combined_channels

    text = ("Channel parameters for eth1:\nPre-set maximums:\nRX:\t\tn/a\nTX:\t\tn/a\nOther:\t\t1\n"
            "Combined:\t8\nCurrent hardware settings:\nRX:\t\tn/a\nTX:\t\tn/a\nOther:\t\t1\nCombined:\t2\n")
    assert combined_channels(text) == "2"
    assert combined_channels("no channels here") is None


def test_zero_copy_on_the_recorded_7_3_run():
    # 7.3.4's igb has igb_xsk.c: no copy, allocation or map per frame; copy mode one copy.
    result = evaluate("xsk-zero-copy", RecordedLab(FIX / "runs" / "7.3.4-xsk", None))
    assert result.verdict == CONFIRMED, [(c.id, c.value) for c in result.checks]


def test_no_zero_copy_on_6_12_is_inconclusive_with_the_bind_error():
    result = evaluate("xsk-zero-copy", RecordedLab(FIX / "runs" / "6.12.95-xsk", None))
    assert result.verdict == INCONCLUSIVE
    zc = [c for c in result.checks if c.id.startswith("zc-")]
    assert zc and all(c.value is None and "bind with XDP_ZEROCOPY: Operation not supported" in c.unmeasured
                      for c in zc)
    assert all(c.holds() for c in result.checks if c.id.startswith("copy-"))


def test_frames_that_miss_the_socket_refute_zero_copy():
    # What the xsk-zero-copy breaker makes: every frame XDP_PASSed up the stack.
    lab = RecordedLab(FIX / "runs" / "7.3.4-xsk", None)
    mutate(lab, "xsk-zc", "xsk_delivered", "igb", 0)
    result = evaluate("xsk-zero-copy", lab)
    assert result.verdict == REFUTED and {c.id for c in result.checks if c.holds() is False} == {"zc-frames-delivered"}


def test_witness_observation_and_report_line():
    from harness.measurement.measure import witness_observations
    from harness.measurement.probes import Observation
    from harness.report.report import witness_summary

    obs = [Observation("device:rx_frames_written", 1998, "igb", ""), Observation("counter:link.rx_packets", 2000,
                                                                              "igb", "")]
    (w,) = witness_observations(obs, "igb")
    assert (w.metric, w.value, w.detail) == ("device:witness_rx_diff", -2, {"written": 1998, "counted": 2000})
    assert witness_observations(obs[1:], "igb") == []  # a model the harness does not trace: no witness
    record = {"experiments": [{"name": "rx", "device_witness": {"driver": "igb", "written": 1998, "counted": 2000}},
                              {"name": "ring-fill", "device_witness": {"driver": "igb", "written": 5, "counted": 5}},
                              {"name": "xdp-headroom"}]}
    line = witness_summary(record)
    assert line.startswith("device witness: ") and "in 1 of 2 experiments" in line
    assert "rx: igb's model wrote 1998, the driver counted 2000" in line
    assert witness_summary({"experiments": [{"name": "x"}]}) is None


@pytest.mark.parametrize("experiment, metric, value, check", [
    ("xsk-zc", "xsk_zerocopy", 0, "zc-in-effect"),  # the kernel fell back to copying
    ("xsk-zc", "calls:__xsk_rcv", 2000, "zc-copies-per-frame"),
    ("xsk-zc", "calls:__alloc_pages_noprof", 2000, "zc-page-allocs-per-frame"),
    ("xsk-zc", "dma_map_page_attrs", 2000, "zc-maps-per-frame"),
    ("xsk-zc", "calls:__xsk_map_redirect", 0, "zc-redirects-per-frame"),
    ("xsk-copy", "calls:__xsk_rcv", 0, "copy-copies-per-frame"),
    ("xsk-copy", "xsk_delivered", 1000, "copy-frames-delivered"),
    ("xsk-zc@q1", "xsk_delivered", 0, "zc-frames-delivered@q1"),  # zero-copy broken on queue 1 only
    ("xsk-copy@q1", "calls:__xsk_rcv", 0, "copy-copies-per-frame@q1"),
])
def test_each_xsk_check_fails_on_what_a_broken_driver_shows(experiment, metric, value, check):
    lab = RecordedLab(FIX / "runs" / "7.3.4-xsk", None)
    mutate(lab, experiment, metric, "igb", value)
    result = evaluate("xsk-zero-copy", lab)
    assert result.verdict == REFUTED and {c.id for c in result.checks if c.holds() is False} == {check}
