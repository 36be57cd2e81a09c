"""QEMU's trace events as the second witness, on the real guest: the device counts
the driver's tail writes and the frames it wrote, beside the guest's counters."""

import json
import os
import shutil
from pathlib import Path

import pytest

from harness.measurement.device_trace import DeviceTraceProbe
from harness.measurement.measure import RunContext, measure_rx
from harness.measurement.traffic import PktgenConfig

pytestmark = pytest.mark.vm


def detail(m, metric, driver):
    row = m.frame[(m.frame.metric == metric) & (m.frame.driver == driver)].iloc[0]
    return json.loads(row.detail) if row.detail else {}

FRAMES = 1024


@pytest.mark.parametrize("burst", [1, 8])
def test_device_counts_tail_writes_and_rx_buffers(guest, burst):
    m = measure_rx(guest, RunContext.for_guest(guest, "pytest-device-trace"), [DeviceTraceProbe()],
                   src="igb", dst="e1000e", pktgen=PktgenConfig(count=FRAMES, burst=burst, rate_pps=2000 // burst))
    if capture := os.environ.get("HARNESS_CAPTURE_QEMU_TRACE"):  # how tests/fixtures/qemu_trace_*.log was made
        shutil.copy(guest.trace_log, Path(capture) / f"qemu_trace_igb_to_e1000e_burst{burst}.log")
    sent = m.value("pktgen_sent", "igb")
    assert sent == FRAMES
    # Every frame the e1000e driver counted was written by its model into a buffer.
    assert m.value("device:rx_frames_written", "e1000e") == m.value("counter:link.rx_packets", "e1000e") == FRAMES
    assert m.value("device:rx_frames_written", "igb") == 0  # igb only sends
    # igb rang its tx doorbell once per burst (xmit_more): most writes hand over a whole
    # burst; a few single ones while BQL's limit of the quiet queue grows.
    assert FRAMES / burst <= m.value("device:tx_tail_writes", "igb") <= 1.5 * FRAMES / burst
    advances = detail(m, "device:tx_tail_writes", "igb")["advances"]
    assert max(advances, key=advances.get) == str(burst)
    # The e1000e refilled (RDT) and sent nothing (no TDT write).
    assert m.value("device:rx_tail_writes", "e1000e") > 0
    assert m.value("device:tx_tail_writes", "e1000e") == 0


def test_events_are_off_outside_a_measurement(guest):
    state = guest.qmp.command("trace-event-get-state", name="e1000e_core_write")
    assert state == [{"name": "e1000e_core_write", "state": "disabled"}]
