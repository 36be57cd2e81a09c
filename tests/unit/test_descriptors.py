"""Descriptors the device consumed per frame (survey rows), counted by QEMU: the tail
advances of Intel's models, the virtqueue chains of virtio-net's; none for models QEMU
does not trace."""

from types import SimpleNamespace

import pandas as pd

from harness.measurement.device_trace import count_device_events
from harness.measurement.measure import Measurement
from harness.nics import nic
from harness.survey.techniques import descriptor_cells, ring_probes

POPS = """\
12@1.0:virtqueue_pop vq 0x55d0a0 elem 0x7f01 in_num 1 out_num 0
12@1.1:virtqueue_pop vq 0x55d0a0 elem 0x7f02 in_num 1 out_num 0
12@1.2:virtqueue_pop vq 0x55d0b0 elem 0x7f03 in_num 0 out_num 2
12@1.3:virtqueue_pop vq 0x55e000 elem 0x7f04 in_num 1 out_num 2
"""


def test_virtqueue_chains_count_rx_buffers_and_tx_frames_not_block_requests():
    counts = count_device_events(POPS, [nic("virtio-net")])
    assert counts.chains == {"rx": 2, "tx": 1}  # the last chain (readable + writable) is virtio-blk's or 9p's
    assert counts.chain_descriptors == {"rx": 2, "tx": 2}


def test_only_the_first_virtio_nic_asked_for_is_traced():
    (probe,) = ring_probes("virtio-net", "e1000e")
    assert [m.model for m in probe.virtio] == ["virtio-net"] and [m.model for m in probe.models] == ["e1000e"]
    (probe,) = ring_probes("igb", "virtio-net")  # the peer's virtqueues would mix with nothing to tell them apart
    assert not probe.virtio
    assert ring_probes("vmxnet3", "virtio-net") == []


def measured(metric: str, value: float, received: int = 2000, sent: int = 2000) -> Measurement:
    rows = [{"metric": metric, "driver": "igb", "value": value, "detail": ""}]
    return Measurement(SimpleNamespace(received=received, result=SimpleNamespace(sent=sent)),  # type: ignore[arg-type]
                       pd.DataFrame(rows), 1.0)


def test_descriptors_per_frame_received_and_sent():
    lab = SimpleNamespace(results={"memory-60:igb": measured("device:rx_descriptors", 1984),
                                   "memory-1514:igb": measured("device:rx_descriptors", 1984, received=1984),
                                   "tx-60:igb": measured("device:tx_descriptors", 2000),
                                   "tx-1514:igb": measured("device:tx_descriptors", 4000, sent=2000)}, failures={})
    cells = descriptor_cells(lab, "igb")
    assert cells["rx-descriptors-60"].value == 1984 / 2000 and cells["rx-descriptors-1514"].value == 1.0
    assert cells["tx-descriptors-60"].value == 1.0
    assert cells["tx-descriptors-1514"].value == 2.0  # a context descriptor with every checksummed frame
    assert "RDT/TDT" in cells["tx-descriptors-1514"].how


def test_a_model_qemu_does_not_trace_says_so():
    cells = descriptor_cells(SimpleNamespace(results={}, failures={}), "vmxnet3")
    assert all(c.value is None and "vmxnet3 model traces neither" in c.why_not for c in cells.values())
    assert set(cells) == {"rx-descriptors-60", "rx-descriptors-1514", "tx-descriptors-60", "tx-descriptors-1514"}
