"""Traffic inside the guest: the kernel's pktgen through /proc/net/pktgen,
exactly N frames from one NIC under test to the other."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from harness.errors import GuestError
from harness.guest.vm import Guest
from harness.measurement.counters import delta, losses, parse_snapshots, snapshot_script, snapshots
from harness.measurement.irq_affinity import PKTGEN_CPU

PG = "/proc/net/pktgen"
# pktgen's pkt_size excludes the 4-byte FCS: 60 is a minimum-size 64-byte frame.
MIN_FRAME = 60
# Addresses from the benchmarking range (RFC 2544): never routed; the receiver
# has no address, so the frames end in the IP layer (no reply goes out).
SRC_IP, DST_IP = "198.18.0.1", "198.18.0.2"

RESULT_RE = re.compile(
    r"Result: OK: (?P<usec>\d+)\(c(?P<cusec>\d+)\+d(?P<dusec>\d+)\) usec, (?P<sent>\d+) "
    r"\((?P<size>\d+)byte,(?P<frags>\d+)frags\)\s+(?P<pps>\d+)pps (?P<mbps>\d+)Mb/sec "
    r"\((?P<bps>\d+)bps\) errors: (?P<errors>\d+)"
)


@dataclass(frozen=True)
class PktgenConfig:
    count: int = 10_000
    pkt_size: int = MIN_FRAME
    clone_skb: int = 0  # 0: a fresh skb per frame (the generator's own allocs stay realistic)
    burst: int = 1
    delay_ns: int = 0
    rate_pps: int = 0  # 0: as fast as possible
    # pktgen's `flag UDPCSUM`: CHECKSUM_PARTIAL on a sender with tx checksum offload
    # (fill_packet_ipv4), a software checksum otherwise; off: CHECKSUM_NONE, no checksum.
    udp_csum: bool = False
    # Frame sizes mixed in one run, equal weights (pktgen's imix_weights, 5.17+): each
    # frame's size is drawn from these; pkt_size is then unused.
    imix: tuple[int, ...] = ()


@dataclass(frozen=True)
class PktgenResult:
    sent: int
    usec: int
    pps: int
    errors: int
    pkt_size: int
    raw: str


def parse_pktgen_result(text: str) -> PktgenResult:
    """The `Result:` of /proc/net/pktgen/<dev> after a run."""
    m = RESULT_RE.search(" ".join(text.split()))
    if not m:
        result_line = next((line for line in text.splitlines() if line.startswith("Result:")), "no Result line")
        raise ValueError(f"pktgen did not report a completed run: {result_line.strip()}")
    return PktgenResult(sent=int(m["sent"]), usec=int(m["usec"]), pps=int(m["pps"]),
                        errors=int(m["errors"]), pkt_size=int(m["size"]), raw=text)


def pktgen_script(src_if: str, dst_mac: str, cfg: PktgenConfig) -> str:
    """Shell that configures pktgen on PKTGEN_CPU's thread and runs it to completion."""
    settings = [
        f"count {cfg.count}", f"pkt_size {cfg.pkt_size}", f"clone_skb {cfg.clone_skb}",
        f"burst {cfg.burst}", f"delay {cfg.delay_ns}", f"dst_mac {dst_mac}",
        f"src_min {SRC_IP}", f"src_max {SRC_IP}", f"dst {DST_IP}",
    ]
    if cfg.rate_pps:
        settings.append(f"ratep {cfg.rate_pps}")
    if cfg.udp_csum:
        settings.append("flag UDPCSUM")
    if cfg.imix:
        settings.append("imix_weights " + " ".join(f"{size},1" for size in cfg.imix))
    lines = [
        "set -e",
        f"[ -d {PG} ] || modprobe pktgen",
        f"echo rem_device_all > {PG}/kpktgend_{PKTGEN_CPU}",
        f"echo add_device {src_if} > {PG}/kpktgend_{PKTGEN_CPU}",
        *[f"echo '{s}' > {PG}/{src_if}" for s in settings],
        f"echo start > {PG}/pgctrl",  # returns when the count is reached
        f"cat {PG}/{src_if}",
        f"echo rem_device_all > {PG}/kpktgend_{PKTGEN_CPU}",
    ]
    return "\n".join(lines)


@dataclass
class TrafficRun:
    src_if: str
    dst_if: str
    config: PktgenConfig
    result: PktgenResult
    seconds: float
    tx_delta: dict[str, int] = field(default_factory=dict)
    rx_delta: dict[str, int] = field(default_factory=dict)

    @property
    def received(self) -> int:
        return self.rx_delta.get("link.rx_packets", 0)

    @property
    def missed(self) -> int:
        return self.result.sent - self.received

    def loss_report(self) -> str:
        head = (f"pktgen sent {self.result.sent} on {self.src_if} at {self.result.pps} pps, {self.dst_if} "
                f"received {self.received}: {self.missed} missing")
        if not self.missed:
            return head
        where = losses(self.rx_delta)
        if where:
            return head + "; receiver loss counters: " + ", ".join(f"{k} +{v}" for k, v in where.items())
        return (head + "; no receiver loss counter moved: the frames were dropped before the NIC model "
                "counted them (QEMU's net queue), which happens when the receiver falls behind the "
                "generator: pace pktgen (PktgenConfig.rate_pps)")


TRAFFIC_MARK = "----harness-traffic----"


def counted_run(guest: Guest, src_if: str, dst_if: str, cfg: PktgenConfig, sender: str,
                parse: Callable[[str], PktgenResult], timeout: float, settle: float) -> TrafficRun:
    """One guest command takes both NICs' counters, runs the `sender` shell (its output
    parsed into the result) and takes them again; then, while frames are still in flight,
    the counters again for up to `settle` seconds (the last frames may still be in NAPI)."""
    names = [src_if, dst_if]
    script = (f"set -e\n{snapshot_script(names)}\necho {TRAFFIC_MARK}\n{sender}"
              f"\necho {TRAFFIC_MARK}\n{snapshot_script(names)}")
    started = time.monotonic()
    out = guest.run(script, timeout=timeout).stdout
    seconds = time.monotonic() - started
    before, report, after = out.split(TRAFFIC_MARK + "\n")
    result = parse(report)
    (tx0, rx0), (tx1, rx1) = parse_snapshots(before, names), parse_snapshots(after, names)
    run = TrafficRun(src_if, dst_if, cfg, result, seconds, delta(tx0, tx1), delta(rx0, rx1))
    deadline = time.monotonic() + settle
    while run.received < result.sent and time.monotonic() < deadline:
        time.sleep(0.2)
        tx1, rx1 = snapshots(guest, names)
        run.tx_delta, run.rx_delta = delta(tx0, tx1), delta(rx0, rx1)
    return run


def run_pktgen(guest: Guest, src_if: str, dst_if: str, cfg: PktgenConfig | None = None,
               *, require_all: bool = True, settle: float = 3.0) -> TrafficRun:
    """Send cfg.count frames src_if -> dst_if; return pktgen's result and both NICs'
    counter deltas. With `burst` B, pktgen checks the count only between bursts and a
    burst cut short (the queue stopped) is made up by the next: up to B - 1 frames more
    than the count are sent (7.3: 259 of 256 at burst 8); every per-frame figure
    divides by what pktgen reports sent or the receiver counted, never by the count.
    One guest command takes the counters, runs pktgen and takes them again; only
    frames still in flight cost more. With `require_all`, a run that lost frames
    raises, saying where."""
    cfg = cfg or PktgenConfig()
    dst_mac = next(n.mac for n in guest.nics if n.name == dst_if)
    run = counted_run(guest, src_if, dst_if, cfg, pktgen_script(src_if, dst_mac, cfg).replace("set -e\n", "", 1),
                      parse_pktgen_result, max(120.0, cfg.count / 1000), settle)
    result = run.result
    if result.errors or not cfg.count <= result.sent < cfg.count + cfg.burst:
        raise GuestError(f"pktgen on {src_if}: sent {result.sent} of {cfg.count} (burst {cfg.burst}), "
                         f"errors {result.errors}", guest.console_tail())
    if require_all and run.missed:
        raise GuestError(run.loss_report(), guest.console_tail())
    return run
