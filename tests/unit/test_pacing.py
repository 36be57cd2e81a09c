"""A measurement whose frames QEMU dropped (the receiver fell behind) is sent again
at half the rate, up to twice; losses the NIC counted are not retried."""

import pytest

from harness.measurement import measure
from harness.measurement.measure import FramesLost, RunContext, measure_rx
from harness.measurement.traffic import PktgenConfig, PktgenResult, TrafficRun


class FakeGuest:
    kernel = type("Kernel", (), {"debug": False})()

    def nic(self, driver):
        return {"igb": "eth2", "e1000e": "eth1"}[driver]


def traffic(cfg, received, rx_delta_extra=None):
    result = PktgenResult(sent=cfg.count, usec=1, pps=cfg.rate_pps, errors=0, pkt_size=60, raw="")
    return TrafficRun("eth1", "eth2", cfg, result, 1.0, {}, {"link.rx_packets": received, **(rx_delta_extra or {})})


def run_with(monkeypatch, outcomes):
    rates = []

    def once(guest, probes, src, dst, cfg, while_armed, max_loss, phases, send):
        rates.append(cfg.rate_pps)
        received, extra = outcomes[len(rates) - 1]
        t = traffic(cfg, received, extra)
        if received < cfg.count:
            raise FramesLost(t, [])
        return [], t

    monkeypatch.setattr(measure, "_measure_once", once)
    ctx = RunContext("run", "kernel", "stock", "direct", "")
    return rates, lambda: measure_rx(FakeGuest(), ctx, [], pktgen=PktgenConfig(count=1000, rate_pps=5000))


def test_dropped_before_the_nic_is_sent_again_slower(monkeypatch):
    rates, go = run_with(monkeypatch, [(990, None), (997, None), (1000, None)])
    m = go()
    assert rates == [5000, 2500, 1250] and m.traffic.received == 1000
    missing = m.frame[m.frame.metric == "frames_missing"].iloc[0]
    assert "10 missing" in missing.detail and "3 missing" in missing.detail  # the lossy attempts stay on record


def test_gives_up_after_two_retries(monkeypatch):
    rates, go = run_with(monkeypatch, [(990, None)] * 3)
    with pytest.raises(FramesLost, match="10 missing"):
        go()
    assert rates == [5000, 2500, 1250]


def test_a_receiver_out_of_buffers_is_sent_again_slower(monkeypatch):
    # e1000 under TCG with probes: the NIC found no free rx descriptor in time.
    rates, go = run_with(monkeypatch, [(990, {"rx_no_buffer_count": 10, "rx_missed_errors": 10}), (1000, None)])
    assert go().traffic.received == 1000
    assert rates == [5000, 2500]


def test_bad_frames_the_nic_counted_are_not_retried(monkeypatch):
    rates, go = run_with(monkeypatch, [(990, {"rx_crc_errors": 10})])
    with pytest.raises(FramesLost, match="rx_crc_errors"):
        go()
    assert rates == [5000]


def test_a_debug_kernel_starts_at_a_quarter_and_may_halve_twice_more(monkeypatch):
    rates, _ = run_with(monkeypatch, [(990, None)] * 4 + [(1000, None)])

    class DebugGuest(FakeGuest):
        kernel = type("Kernel", (), {"debug": True})()

    ctx = RunContext("run", "kernel", "stock", "direct", "")
    m = measure_rx(DebugGuest(), ctx, [], pktgen=PktgenConfig(count=1000, rate_pps=5000))
    assert rates == [1250, 625, 312, 156, 78] and m.traffic.received == 1000
