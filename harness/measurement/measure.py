"""One measurement: arm probes, send exactly N frames with pktgen, disarm,
collect; everything as rows of one tidy table (pandas), saved as CSV + JSON."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from harness.errors import GuestError
from harness.guest.vm import Guest
from harness.measurement.counters import losses
from harness.measurement.device_trace import DeviceTraceProbe
from harness.measurement.netcheck import bring_up
from harness.measurement.probes import Observation, Probe
from harness.measurement.traffic import PktgenConfig, TrafficRun, run_pktgen
from harness.nics import nic
from harness.outdir import write_text

# Probes slow the receive path several-fold under TCG; an unpaced pktgen then
# overruns it and QEMU drops frames before the NIC model counts them (measured:
# 1,099 of 2,000 arrived with function_graph on; 9,949 of 10,000 at 8 kpps with
# three probes and a busy host). At 5 kpps 10,000 of 10,000 arrive. 2,000 frames
# give the per-frame counts the rules need exactly (1.0000, 0.0000) in 0.4 s.
MEASURE_PKTGEN = PktgenConfig(count=2_000, rate_pps=5_000)

Sender = Callable[..., TrafficRun]  # (guest, src_if, dst_if, cfg, *, require_all) -> TrafficRun

COLUMNS = ["run_id", "kernel_id", "variant", "dma_mode", "boot_params", "nic", "driver", "direction",
           "packets", "metric", "value", "per_packet", "method", "detail"]


@dataclass(frozen=True)
class RunContext:
    run_id: str
    kernel_id: str
    variant: str = "stock"
    dma_mode: str = "direct"
    boot_params: str = ""

    @classmethod
    def for_guest(cls, guest: Guest, run_id: str, variant: str = "stock", dma_mode: str = "direct") -> RunContext:
        return cls(run_id, guest.kernel.key, variant, dma_mode, " ".join(guest.options.cmdline_extra))


@dataclass
class Measurement:
    traffic: TrafficRun
    frame: pd.DataFrame
    seconds: float
    phases: dict[str, float] = field(default_factory=dict)  # seconds per step (bring-up, arm, traffic, ...)
    retried: list[str] = field(default_factory=list)  # why earlier attempts failed (MeasurementFailure)

    def rows(self, metric: str, driver: str) -> pd.DataFrame:
        return self.frame[(self.frame.metric == metric) & (self.frame.driver == driver)]

    def value(self, metric: str, driver: str) -> float:
        rows = self.rows(metric, driver)
        if rows.empty:
            raise KeyError(f"no {metric} for {driver} in this measurement")
        # min_count=1: a value that could not be measured (NaN) stays NaN, not 0.
        return float(rows.value.sum(min_count=1))

    def per_packet(self, metric: str, driver: str) -> float:
        return self.value(metric, driver) / self.traffic.received

    def add(self, metric: str, value: float, driver: str, method: str, detail: dict | None = None) -> None:
        """Append one observation made outside the probes (same row shape)."""
        row = self.frame.iloc[0].to_dict() if not self.frame.empty else {}
        packets = self.traffic.received
        row.update(metric=metric, value=value, driver=driver, method=method,
                   per_packet=value / packets if packets else float("nan"),
                   detail=json.dumps(detail, sort_keys=True) if detail else "")
        self.frame = pd.concat([self.frame, pd.DataFrame([row])], ignore_index=True)


# A run whose frames were dropped before the receiver's NIC model (no loss counter
# moved: the receiver fell behind) is sent again at half the rate, up to twice: an
# edited driver that is slower per frame (e.g. without page reuse) must still be
# measured, not declared unmeasurable.
PACING_RETRIES = 2
# The debug flavour's rx path is several times slower under TCG (KASAN, lockdep,
# kmemleak on every allocation): it starts at a quarter of the pace and may halve it
# twice more. Measured: 6.12.95's stock igb lost frames at 5,000 and 2,500/s in most
# experiments and none at 1,250; 7.3.4's no-reuse igb (a page allocated and mapped per
# frame) lost frames at 1,250/s too.
DEBUG_PACE_DIVISOR = 4
DEBUG_PACING_RETRIES = 2


def measure_rx(guest: Guest, ctx: RunContext, probes: Sequence[Probe], *, src: str = "e1000e",
               dst: str = "igb", pktgen: PktgenConfig | None = None,
               while_armed: Callable[[Guest], None] | None = None, max_loss: float = 0.0,
               retries: int = PACING_RETRIES, witness: bool = True, send: Sender = run_pktgen) -> Measurement:
    """Frames from the `src` NIC to the `dst` NIC (catalogue models), with probes armed
    around exactly that traffic (and `while_armed(guest)`, run after arming, e.g. a
    link down/up to catch the ring fill). Per-packet values divide by frames received on dst.
    Up to `max_loss` of the frames may be lost before the receiver's NIC model (QEMU's
    net queue: they never reach the driver, so per-frame counts stay exact); the loss
    is recorded as `frames_missing`. More is sent again slower (PACING_RETRIES), then raises,
    saying how many and where. `witness`: QEMU's trace of the NIC models beside the probes
    (device:* counts and device:witness_rx_diff), off only to measure what it costs.
    `send`: what sends the frames (pktgen; socket_tx.run_socket_tx for the stack's own)."""
    started = time.monotonic()
    cfg = pktgen or MEASURE_PKTGEN
    if guest.kernel.debug and cfg.rate_pps:
        cfg = replace(cfg, rate_pps=max(1, cfg.rate_pps // DEBUG_PACE_DIVISOR))
        retries += DEBUG_PACING_RETRIES
    probes = with_device_witness(probes, src, dst) if witness else list(probes)
    lossy: list[str] = []  # the attempts sent again slower
    phases: dict[str, float] = {}
    for attempt in range(retries + 1):
        try:
            observations, traffic = _measure_once(guest, probes, src, dst, cfg, while_armed, max_loss, phases, send)
            break
        except FramesLost as e:
            if attempt == retries or not e.before_nic or not cfg.rate_pps:
                raise
            lossy.append(e.summary)
            cfg = replace(cfg, rate_pps=cfg.rate_pps // 2)
            print(f"harness: {e.summary}; sending again at {cfg.rate_pps} frames/s", file=sys.stderr, flush=True)
    src_driver, dst_driver = nic(src).driver, nic(dst).driver
    observations += counter_observations(traffic, src_driver, dst_driver)
    observations += witness_observations(observations, dst_driver)
    observations.append(Observation("frames_missing", traffic.missed, dst_driver,
                                    traffic.loss_report() if traffic.missed else "pktgen sent - received on dst",
                                    {"earlier_attempts": lossy} if lossy else {}))
    frame = to_frame(ctx, observations, traffic, guest.nic(dst), guest.nic(src), dst_driver)
    return Measurement(traffic, frame, time.monotonic() - started, {k: round(v, 2) for k, v in phases.items()})


def with_device_witness(probes: Sequence[Probe], src: str, dst: str) -> list[Probe]:
    """The probes and, for the NICs whose QEMU model the harness reads, the device's
    trace (unless one is there already): every measurement has a second witness."""
    if any(isinstance(p, DeviceTraceProbe) for p in probes):
        return list(probes)
    models = tuple(m for m in dict.fromkeys((src, dst)) if nic(m).device_trace is not None)
    return [*probes, DeviceTraceProbe(models)] if models else list(probes)


def witness_observations(observations: list[Observation], dst_driver: str) -> list[Observation]:
    """Frames the receiver's QEMU model wrote into guest memory - frames its driver
    counted: 0 when both witnesses agree."""
    def one(metric: str) -> float | None:
        return next((o.value for o in observations if o.metric == metric and o.driver == dst_driver), None)

    written, counted = one("device:rx_frames_written"), one("counter:link.rx_packets")
    if written is None or counted is None:
        return []
    return [Observation("device:witness_rx_diff", written - counted, dst_driver,
                        "frames the receiving NIC's QEMU model wrote (trace) - frames its driver counted "
                        "(ip -s link rx_packets)", {"written": written, "counted": counted})]


# Loss counters that say the receiver fell behind (the NIC found no free rx buffer,
# or its queue overflowed), not that frames were bad: sent again slower.
BEHIND = ("no_buffer", "missed", "fifo", "over")


class FramesLost(GuestError):
    def __init__(self, traffic: TrafficRun, console_tail: list[str]) -> None:
        super().__init__(traffic.loss_report(), console_tail)
        # No receiver loss counter moved (QEMU dropped them before the NIC model), or
        # only counters that mean "no buffer in time": the receiver was too slow.
        counted = losses(traffic.rx_delta)
        self.before_nic = all(any(w in k for w in BEHIND) for k in counted)


def _measure_once(guest: Guest, probes: Sequence[Probe], src: str, dst: str, cfg: PktgenConfig,
                  while_armed: Callable[[Guest], None] | None, max_loss: float, phases: dict[str, float],
                  send: Sender) -> tuple[list[Observation], TrafficRun]:
    clock = _Phases(phases)
    src_if, dst_if = guest.nic(src), guest.nic(dst)
    bring_up(guest, [src_if, dst_if])
    clock.done("bring-up")
    armed: list[Probe] = []
    try:
        for p in probes:
            armed.append(p)
            p.arm(guest)
        clock.done("arm")
        if while_armed is not None:
            while_armed(guest)
            bring_up(guest, [src_if, dst_if])
            clock.done("while-armed")
        traffic = send(guest, src_if, dst_if, cfg, require_all=False)
        clock.done("traffic")
        if traffic.missed > max_loss * cfg.count:
            raise FramesLost(traffic, guest.console_tail())
        for p in armed:
            p.disarm(guest)
        observations = [o for p in armed for o in p.collect(guest)]
        clock.done("collect")
        return observations, traffic
    finally:
        for p in armed:
            p.cleanup(guest)
        clock.done("cleanup")


class _Phases:
    """Adds the seconds since the last step to `phases[step]` (retries add up)."""

    def __init__(self, phases: dict[str, float]) -> None:
        self.phases = phases
        self.last = time.monotonic()

    def done(self, step: str) -> None:
        now = time.monotonic()
        self.phases[step] = self.phases.get(step, 0.0) + now - self.last
        self.last = now


def counter_observations(traffic: TrafficRun, src: str, dst: str) -> list[Observation]:
    obs = [Observation("pktgen_sent", traffic.result.sent, src, "pktgen Result line"),
           Observation("pktgen_pps", traffic.result.pps, src,
                       "pktgen Result line (TCG-emulated: compare only as a ratio within one run)")]
    for driver, deltas, how in ((dst, traffic.rx_delta, "receiver"), (src, traffic.tx_delta, "sender")):
        # The interface's own counters always (a flat one is a measured 0), the
        # driver's ethtool -S counters when they moved (there are dozens per NIC).
        for key, value in sorted(deltas.items()):
            if not key.startswith("link.") and not value:
                continue
            method = "ip -j -s link delta" if key.startswith("link.") else "ethtool -S delta"
            obs.append(Observation(f"counter:{key}", value, driver, f"{method} on the {how}"))
    return obs


def to_frame(ctx: RunContext, observations: list[Observation], traffic: TrafficRun, dst_if: str,
             src_if: str, dst_driver: str) -> pd.DataFrame:
    packets = traffic.received
    rows = []
    for o in observations:
        is_dst = o.driver == dst_driver
        rows.append({
            "run_id": ctx.run_id, "kernel_id": ctx.kernel_id, "variant": ctx.variant, "dma_mode": ctx.dma_mode,
            "boot_params": ctx.boot_params, "nic": dst_if if is_dst else (src_if if o.driver else ""),
            "driver": o.driver, "direction": "rx" if is_dst else ("tx" if o.driver else ""),
            "packets": packets, "metric": o.metric, "value": o.value,
            "per_packet": o.value / packets if packets else float("nan"),
            "method": o.method, "detail": json.dumps(o.detail, sort_keys=True) if o.detail else "",
        })
    return pd.DataFrame(rows, columns=COLUMNS)


def save(frame: pd.DataFrame, out_dir: Path, stem: str = "measurements") -> tuple[Path, Path]:
    """CSV for people and spreadsheets, JSON records for programs (same rows)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = out_dir / f"{stem}.csv", out_dir / f"{stem}.json"
    write_text(csv_path, frame.to_csv(index=False))
    write_text(json_path, frame.to_json(orient="records", indent=1))
    return csv_path, json_path


def load(path: Path) -> pd.DataFrame:
    """The saved rows: COLUMNS first, then any the run added (e.g. `experiment`)."""
    frame = (pd.DataFrame(json.loads(path.read_text())) if path.suffix == ".json"
             else pd.read_csv(path, keep_default_na=False, na_values=[""]))
    return frame.reindex(columns=COLUMNS + [c for c in frame.columns if c not in COLUMNS])
