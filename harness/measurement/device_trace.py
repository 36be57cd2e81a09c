"""The device's side: QEMU's own trace events of the emulated NIC, counted around
a measurement, beside the guest's counts. A second witness that does not run in
the guest: the tail (RDT/TDT) register writes the driver made and the rx buffers
the model wrote into guest memory (igb, e1000e), and the descriptor chains QEMU's
virtio core took from a virtio-net's rings. From either, the descriptors the
device consumed per frame.

Debian's QEMU is built with the `log` trace backend: an enabled event prints one
line to QEMU's log (`-D <file>`, which every harness guest has). Events are
switched on and off over QMP (`trace-event-set-state`) around the traffic only,
so a guest costs nothing while no device probe is armed."""

from __future__ import annotations

import contextlib
import re
from collections import Counter
from dataclasses import dataclass, field
from itertools import pairwise

from harness.errors import GuestError, HarnessError, Unmeasurable
from harness.guest.qmp import QMPError
from harness.guest.vm import Guest
from harness.measurement.netcheck import ring_sizes
from harness.measurement.probes import Observation
from harness.nics import NicModel, management_model, nic

# e1000e_core_write: "Write to register 0x%x, %d byte(s), value: 0x%x" (hw/net/trace-events)
REGISTER_WRITE = re.compile(r"register 0x(?P<offset>[0-9a-fA-F]+), (?P<size>\d+) byte\(s\), "
                            r"value: 0x(?P<value>[0-9a-fA-F]+)")
EVENT_LINE = re.compile(r"^(?:\d+@[\d.]+:)?(?P<event>[a-z0-9_]+) (?P<args>.*)$")
# A model writes a frame into guest memory in pieces (e1000e: the Ethernet header, the IP
# header, the payload, at offsets 0, 14, 34 of buffer #0): a frame begins at offset 0
# of its first buffer.
FRAME_START = re.compile(r"(?:^|, )offset: 0(?:,|$)")
LATER_BUFFER = re.compile(r"buffer #[1-9]")
# hw/virtio/trace-events: virtqueue_pop "vq %p elem %p in_num %u out_num %u". A chain of
# device-writable descriptors only is an rx buffer, of device-readable ones only a frame to
# send; virtio-blk's and 9p's requests carry both, so they are not counted.
VIRTQUEUE_POP = "virtqueue_pop"
POP_ARGS = re.compile(r"in_num (?P<in_num>\d+) out_num (?P<out_num>\d+)")


@dataclass
class DeviceCounts:
    """Per NIC model: the values written to its tail registers and the frames it wrote
    into rx buffers; the tail-write counts follow from the values."""

    rx_frames_written: Counter = field(default_factory=Counter)
    tail_values: dict[tuple[str, str], list[int]] = field(default_factory=dict)  # (model, rx|tx) -> values written
    # virtqueue chains taken, rx (device-writable only) and tx (device-readable only): chains, descriptors
    chains: Counter = field(default_factory=Counter)
    chain_descriptors: Counter = field(default_factory=Counter)

    def _writes(self, ring: str) -> Counter:
        return Counter({model: len(v) for (model, r), v in self.tail_values.items() if r == ring})

    @property
    def rx_tail_writes(self) -> Counter:
        return self._writes("rx")

    @property
    def tx_tail_writes(self) -> Counter:
        return self._writes("tx")


def tail_advances(values: list[int], ring: int) -> Counter:
    """Descriptors handed over per tail write (the index moved by, modulo the ring):
    {8: 254, 1: 16} for bursts of 8 after 16 frames written one by one. The first
    write is left out (the tail before it is not in the trace)."""
    return Counter((b - a) % ring for a, b in pairwise(values))


def count_device_events(log: str, models: list[NicModel]) -> DeviceCounts:
    """Counts of the models' events in QEMU trace log lines. The register-write event is
    shared by igb and e1000e (QEMU's igb reuses e1000e's): a write is the model's whose
    tail offsets it hits, and the catalogue keeps those offsets apart between models."""
    out = DeviceCounts()
    tails: dict[str, dict[int, tuple[str, str]]] = {}  # register-write event -> offset -> (model, rx|tx)
    buffer_events: dict[str, str] = {}
    for m in models:
        if (trace := m.device_trace) is not None:
            for ring, regs in (("rx", trace.rx_tail), ("tx", trace.tx_tail)):
                tails.setdefault(trace.register_write, {}).update(dict.fromkeys(regs.offsets(), (m.model, ring)))
            buffer_events[trace.rx_buffer_write] = m.model
    for line in log.splitlines():
        ev = EVENT_LINE.match(line.strip())
        if not ev:
            continue
        name = ev["event"]
        if name == VIRTQUEUE_POP and (pop := POP_ARGS.search(ev["args"])):
            writable, readable = int(pop["in_num"]), int(pop["out_num"])
            if bool(writable) != bool(readable):
                ring = "rx" if writable else "tx"
                out.chains[ring] += 1
                out.chain_descriptors[ring] += writable + readable
            continue
        if name in buffer_events and FRAME_START.search(ev["args"]) and not LATER_BUFFER.search(ev["args"]):
            out.rx_frames_written[buffer_events[name]] += 1
        w = REGISTER_WRITE.search(ev["args"]) if name in tails else None
        if w and (hit := tails[name].get(int(w["offset"], 16))) is not None:
            out.tail_values.setdefault(hit, []).append(int(w["value"], 16))
    return out


class DeviceTraceProbe:
    """QEMU trace events of the NICs under test, enabled over QMP around the traffic."""

    name = "qemu-trace"

    def __init__(self, models: tuple[str, ...] = ("igb", "e1000e")) -> None:
        self.models = [nic(m) for m in models if nic(m).device_trace is not None]
        self.virtio = [nic(m) for m in models if nic(m).virtqueue_trace]
        if len(self.virtio) > 1:
            raise HarnessError(f"virtqueue chains cannot be told apart by device: {len(self.virtio)} virtio NICs")
        self.events = sorted({e for m in self.models for e in (m.device_trace.register_write,  # type: ignore[union-attr]
                                                               m.device_trace.rx_buffer_write)}  # type: ignore[union-attr]
                             | ({VIRTQUEUE_POP} if self.virtio else set()))
        self.offset = 0
        self.rings: dict[str, dict[str, int]] = {}  # model -> {"rx": size, "tx": size}

    def _set(self, guest: Guest, enable: bool) -> None:
        if guest.qmp is None:
            raise GuestError("QEMU trace events need the guest's QMP socket, which is closed", guest.console_tail())
        try:
            for event in self.events:
                guest.qmp.command("trace-event-set-state", name=event, enable=enable)
        except QMPError as e:
            raise GuestError(f"QEMU refused to switch trace event(s) {', '.join(self.events)}: {e}",
                             guest.console_tail()) from e

    def arm(self, guest: Guest) -> None:
        if self.virtio and management_model(guest.options.nics) in (m.model for m in self.virtio):
            raise Unmeasurable("the management NIC is a virtio-net too: its rx and tx chains would be counted")
        self.rings = ring_sizes(guest, {m.model: guest.nic(m.model) for m in self.models})
        self.offset = guest.trace_log.stat().st_size if guest.trace_log.exists() else 0
        self._set(guest, True)

    def disarm(self, guest: Guest) -> None:
        self._set(guest, False)

    def collect(self, guest: Guest) -> list[Observation]:
        with guest.trace_log.open("rb") as f:
            f.seek(self.offset)
            text = f.read().decode(errors="replace")
        counts = count_device_events(text, self.models)
        obs = []
        for m in self.models:
            trace = m.device_trace
            assert trace is not None
            where = f"QEMU trace event {trace.register_write} (log backend, QMP-toggled around the traffic)"
            for ring, regs in (("rx", trace.rx_tail), ("tx", trace.tx_tail)):
                values = counts.tail_values.get((m.model, ring), [])
                size = self.rings.get(m.model, {}).get(ring)
                advances = tail_advances(values, size) if size else Counter()
                tail = f"{'RDT' if ring == 'rx' else 'TDT'} at {regs.base:#x} + {regs.stride:#x}·queue"
                obs.append(Observation(
                    f"device:{ring}_tail_writes", len(values), m.driver, f"{where}: writes to {tail}",
                    {"ring": size, "advances": {str(k): v for k, v in sorted(advances.items())}} if values else {}))
                if size:
                    obs.append(Observation(
                        f"device:{ring}_descriptors", sum(k * v for k, v in advances.items()), m.driver,
                        f"{where}: descriptors handed to the device, the advances of {tail} summed (the window's "
                        "first write left out: the tail before it is not in the trace)", {"ring": size}))
            obs.append(Observation("device:rx_frames_written", counts.rx_frames_written[m.model], m.driver,
                                   f"QEMU trace event {trace.rx_buffer_write} at offset 0 of a frame's first "
                                   "buffer: frames the device model wrote into guest memory"))
        for m in self.virtio:
            for ring, kind in (("rx", "device-writable (rx buffers)"), ("tx", "device-readable (frames to send)")):
                obs.append(Observation(
                    f"device:{ring}_descriptors", counts.chain_descriptors[ring], m.driver,
                    f"QEMU trace event {VIRTQUEUE_POP} (log backend, QMP-toggled around the traffic): descriptors "
                    f"of the chains QEMU took that are {kind} only", {"chains": counts.chains[ring]}))
        return obs

    def cleanup(self, guest: Guest) -> None:
        if guest.alive():
            with contextlib.suppress(GuestError):  # the probe's own error is already on its way
                self._set(guest, False)
