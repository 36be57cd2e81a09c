"""Claims on the doorbells (the talk's agenda after slide 10): the tail register
writes, MMIO a driver batches because each costs a bus round trip (and under
virtualization an exit).

- tx-bulking (xmit_more): igb_tx_map() writes the tx tail (TDT) only when
  netdev_xmit_more() is false, so a burst of B frames handed to the driver with
  xmit_more on all but the last costs one write, not B. pktgen's `burst B` does that.
- rx-tail-batching: igb_clean_rx_irq() hands cleaned buffers back (one RDT write,
  in igb_alloc_rx_buffers) once IGB_RX_BUFFER_WRITE of them are cleaned and once
  at the end of the poll, not per buffer.

The witness is the device: QEMU's model of the NIC traces every register write,
so tail writes are counted outside the guest; the same trace cross-checks the
receiver (frames the model wrote = frames the driver counted) and the guest
(RDT writes = igb_alloc_rx_buffers calls under igb_poll)."""

from __future__ import annotations

import dataclasses

from harness.errors import HarnessError
from harness.nics import nic
from harness.source.igb_source import IGB_H, igb_rx_buffer_write

from .base import Check, ClaimResult
from .lab import Lab
from .rules import detail, fmt, per_packet, value, why_unmeasured
from .traffic_space import DEFAULT_POINT, TX_POINTS, Sample, at, check_id

BURSTS = (1, 8, 32)
# (sender, receiver, bursts): igb at every burst, the e1000e (the same tail logic in
# e1000_xmit_frame) at the ends.
TX_RUNS = (("igb", "e1000e", BURSTS), ("e1000e", "igb", (1, 32)))
# Points beyond the default (plain UDP) per (sender, burst): checksum offload
# (CHECKSUM_PARTIAL) takes igb_tx_csum(), which puts a context descriptor before the
# frame's, so the tail steps by 2·B there; the writes per frame must still be 1/B.
TX_SAMPLED_POINTS = {("igb", 8): TX_POINTS}
# igb writes the tail at once, xmit_more or not, while netif_xmit_stopped(): the
# ring full, or BQL's limit reached (experiments.TX_WARMUP_FRAMES lets a quiet
# queue's limit grow first). So at most 1.5/B writes per frame, and most writes hand
# over a whole burst.
BULK_SLACK = 1.5
TRACE_COST_EXPERIMENT = "tx-trace-cost"


def tx_experiment(sender: str, burst: int) -> str:
    return f"tx-burst-{burst}" if sender == "igb" else f"tx-burst-{burst}-{sender}"


WITNESS = "device:witness_rx_diff"  # measure.witness_observations, in every measurement


def witness_how(model: str) -> str:
    trace = nic(model).device_trace
    assert trace is not None
    return f"QEMU trace event {trace.rx_buffer_write} (frames written) against ip -s link rx_packets"


def device_how(model: str) -> str:
    regs = nic(model).device_trace
    assert regs is not None
    return (f"QEMU trace event {regs.register_write} at {model}'s TDT offsets ({regs.tx_tail.base:#x} + "
            f"{regs.tx_tail.stride:#x}·queue), toggled over QMP around the traffic; per frame pktgen sent")


class TxBulking:
    id, slide = "tx-bulking", "agenda"
    title = ("tx bulking: with xmit_more the driver writes the tx tail once per burst, not once per frame "
             "(TDT writes seen by the device)")
    region = ("every kind of tx frame the stack hands the driver: pktgen's UDP plain and with the checksum "
              "offloaded (TCP and TSO/GSO segments not sampled yet), one frame per xmit and bursts with xmit_more, "
              "igb sending and the e1000e as a second driver")
    # --coverage: igb's transmit path (igb_tx_map, igb_tx_csum and the other static helpers it calls)
    covers = ((f"{nic('igb').source_dir}/{nic('igb').rx_source}", ("igb_xmit_frame_ring",)),)
    samples = (*(Sample(tx_experiment(s, b), TX_SAMPLED_POINTS.get((s, b), (DEFAULT_POINT,)))
                 for s, _, bursts in TX_RUNS for b in bursts), Sample(TRACE_COST_EXPERIMENT))
    experiments = tuple(e for s in samples for e in s.experiments())

    def evaluate(self, lab: Lab) -> ClaimResult:
        checks: list[Check] = []
        text: list[str] = []
        sample = {s.base: s for s in self.samples}
        for sender, receiver, bursts in TX_RUNS:
            drv, rx_drv = nic(sender).driver, nic(receiver).driver
            seen = []
            for burst, (exp, point) in ((b, p) for b in bursts for p in sample[tx_experiment(sender, b)].by_point()):
                why = why_unmeasured(lab, exp)
                writes = value(lab, exp, "device:tx_tail_writes", drv)
                sent = value(lab, exp, "pktgen_sent", drv)
                per_frame = None if writes is None or not sent else writes / sent
                advances = {int(k): v for k, v in
                            detail(lab, exp, "device:tx_tail_writes", drv).get("advances", {}).items()}
                usual = float(max(advances, key=advances.__getitem__)) if advances else (
                    None if writes is None else float("nan"))
                cid = f"{sender}-burst-{burst}"
                if burst == 1:
                    checks.append(Check(check_id(f"{cid}-tail-writes", point), f"{sender} TDT writes per frame "
                                        f"sent, one frame per xmit{at(point)}", per_frame, "~", 1.0, rel_tol=0.02,
                                        how=device_how(sender), unmeasured=why))
                else:
                    checks.append(Check(check_id(f"{cid}-tail-writes", point), f"{sender} TDT writes per frame sent, "
                                        f"pktgen burst {burst}{at(point)}", per_frame, "<=", BULK_SLACK / burst,
                                        how=device_how(sender) + f"; at most {BULK_SLACK}/burst (writes while BQL or "
                                        "a full ring stop the queue)", unmeasured=why))
                if burst > 1 and point == DEFAULT_POINT:  # one descriptor per plain frame: the step is the burst
                    checks.append(Check(f"{cid}-advance", f"descriptors most {sender} TDT writes hand over, pktgen "
                                        f"burst {burst}", usual, "==", burst, how=device_how(sender) + "; the tail's "
                                        "step between consecutive writes, modulo the ring (ethtool -g)",
                                        unmeasured=why))
                # The frames the device wrote into rx buffers must be the receiver driver's frame count.
                checks.append(Check(check_id(f"{cid}-witness", point), f"{receiver} frames the device wrote - frames "
                                    f"{rx_drv} counted (pktgen burst {burst} from {sender}{at(point)})",
                                    value(lab, exp, WITNESS, rx_drv), "==", 0, how=witness_how(receiver),
                                    unmeasured=why))
                steps = ", ".join(f"{v} of {k}" for k, v in sorted(advances.items(), key=lambda x: -x[1]))
                seen.append(f"burst {burst}{at(point)}: {fmt(writes, 0)} TDT writes for {fmt(sent, 0)} frames "
                            f"({fmt(per_frame, 4)} per frame, 1/B = {1 / burst:.4f}; steps {steps or 'none'})")
            text.append(f"{sender} sending, counted by QEMU's {sender} model: " + "; ".join(seen) + ".")
        bulk = [c for c in checks if c.id.endswith("-advance")]
        if bulk and all(c.holds() for c in bulk):
            text.append("The tail is written once per burst: xmit_more defers the MMIO write to the last frame.")
        elif any(c.holds() is False for c in bulk):
            text.append("The tail is written more often than once per burst: the driver does not defer the TDT "
                        "write while netdev_xmit_more() is true.")
        traced = value(lab, TRACE_COST_EXPERIMENT, "pktgen_pps", "igb")
        plain = value(lab, TRACE_COST_EXPERIMENT, "pktgen_pps_untraced", "igb")
        if traced and plain:
            text.append(f"The witness's cost: unpaced, igb sent {fmt(plain, 0)} frames/s with QEMU's trace events off "
                        f"and {fmt(traced, 0)} with them on ({traced / plain:.2f} of the untraced rate, TCG, one run).")
        return ClaimResult(self.id, self.title, self.slide, checks, text)


# Frames e1000e sends in one pktgen burst: igb's model receives them back to back, so
# one NAPI poll (budget 64) finds many; at burst 1 and 5 kpps a poll finds one.
RX_BURST = 64
RX_BURST_EXPERIMENT = f"rx-burst-{RX_BURST}"
RX_BURST_XDP_EXPERIMENT = f"{RX_BURST_EXPERIMENT}-xdp-pass"
# The harness's own bound on "batching", whatever igb.h's IGB_RX_BUFFER_WRITE says:
# each write hands back at least a cache line of descriptors on average.
MIN_BATCH = 4


class RxTailBatching:
    id, slide = "rx-tail-batching", "agenda"
    title = ("rx tail batching: igb returns rx buffers to the device (an RDT write) once per IGB_RX_BUFFER_WRITE "
             "cleaned buffers and at the end of a poll, not once per frame")
    region = ("frames arriving together (bursts of 64: full NAPI polls) and one at a time, with and without an "
              "XDP program (XDP_PASS: the same clean loop with the program before the skb)")
    samples = (Sample(RX_BURST_EXPERIMENT), Sample(RX_BURST_XDP_EXPERIMENT), Sample("rx"))
    experiments = tuple(e for s in samples for e in s.experiments())

    def evaluate(self, lab: Lab) -> ClaimResult:
        batch, notes = self._batch(lab)
        checks, text = self._bursts(lab, RX_BURST_EXPERIMENT, "", batch, notes)
        xdp_checks, xdp_text = self._bursts(lab, RX_BURST_XDP_EXPERIMENT, " with XDP_PASS", batch, notes)
        checks += [dataclasses.replace(c, id=f"{c.id}-xdp-pass") for c in xdp_checks]
        single = per_packet(lab, "rx", "device:rx_tail_writes", "igb")
        text += [
            *xdp_text,
            f"One frame at a time (pktgen burst 1, 5 kpps): {fmt(single, 4)} RDT writes per frame: every poll "
            "finds one frame and ends with a refill, so batching shows only when frames arrive together.",
        ]
        return ClaimResult(self.id, self.title, self.slide, checks, text, notes)

    @staticmethod
    def _bursts(lab: Lab, exp: str, label: str, batch: int | None, notes: list[str]) -> tuple[list[Check], list[str]]:
        why = why_unmeasured(lab, exp)
        writes = per_packet(lab, exp, "device:rx_tail_writes", "igb")
        refills = value(lab, exp, "calls:igb_alloc_rx_buffers", "igb")
        rdt = value(lab, exp, "device:rx_tail_writes", "igb")
        polls = value(lab, exp, "calls:igb_poll", "igb")
        how = ("QEMU trace event e1000e_core_write at igb's RDT offsets, toggled over QMP around the traffic; "
               f"per frame igb received, e1000e sending pktgen bursts of {RX_BURST}")
        checks = [
            # At most one write per batch and one per poll: a poll of n frames writes
            # ceil(n / batch) times, so bursts of RX_BURST frames give 1/batch per frame,
            # split polls more, never one per frame.
            Check("rdt-writes-per-frame", f"igb RDT writes per frame, frames in bursts of {RX_BURST}{label}", writes,
                  "<=", 2 / batch if batch else float("nan"), how=how + f"; at most 2/IGB_RX_BUFFER_WRITE "
                  f"(IGB_RX_BUFFER_WRITE = {batch} in igb.h)", unmeasured=why if batch else "; ".join(notes)),
            # Whatever igb.h says: a write per buffer, or per two, is no batching.
            Check("rdt-writes-per-frame-bound", f"igb RDT writes per frame, frames in bursts of {RX_BURST}{label}",
                  writes, "<=", 1 / MIN_BATCH, how=how + f"; at most one write per {MIN_BATCH} frames: a cache line of "
                  f"descriptors (four 16-byte advanced rx descriptors) per write, the harness's bound for batching, "
                  "not read from the tree", unmeasured=why),
            Check("rdt-writes-vs-refills", "igb RDT writes (device) - igb_alloc_rx_buffers calls under igb_poll "
                  "(guest)", None if rdt is None or refills is None else rdt - refills, "==", 0,
                  how="QEMU trace (device) against function_graph under igb_poll (guest), the same traffic",
                  unmeasured=why),
            Check("rx-witness", f"frames igb's model wrote - frames igb counted{label}",
                  value(lab, exp, WITNESS, "igb"), "==", 0, how=witness_how("igb"), unmeasured=why),
        ]
        text = [
            f"Frames in bursts of {RX_BURST}{label}: igb wrote RDT {fmt(writes, 4)} times per frame over "
            f"{fmt(polls, 0)} polls ({fmt(rdt, 0)} writes, {fmt(refills, 0)} igb_alloc_rx_buffers calls seen in the "
            f"guest); IGB_RX_BUFFER_WRITE is {batch}, so a full poll writes 1/{batch} = {1 / batch:.4f} per frame."
            if batch else
            f"IGB_RX_BUFFER_WRITE unknown: {'; '.join(notes)}",
        ]
        return checks, text

    @staticmethod
    def _batch(lab: Lab) -> tuple[int | None, list[str]]:
        try:
            return igb_rx_buffer_write(lab.kernel("stock").source_file(IGB_H).read_text()), []
        except HarnessError as e:
            return None, [f"IGB_RX_BUFFER_WRITE not known: {e}"]
