"""Frames sent from a UDP socket instead of pktgen: the stack's own transmit path,
whose skbs the driver frees on tx completion (napi_consume_skb). pktgen keeps a
reference on every skb it sends, so its completions never free one; a socket's
do, into the per-CPU NAPI skb cache (Brouer's bulk free: the cache is flushed
with kmem_cache_free_bulk when full).

The sender gets SRC_IP and a permanent neighbour entry for DST_IP with the
receiver's MAC (no ARP in the window); the receiver has no address (its stack
drops the frames). Both are undone after. Same counters and result shape as a
pktgen run, so measure_rx takes it as its sender."""

from __future__ import annotations

from harness.errors import GuestError
from harness.guest.vm import Guest
from harness.measurement.irq_affinity import SOCKET_SENDER_CPU
from harness.measurement.traffic import DST_IP, SRC_IP, PktgenConfig, PktgenResult, TrafficRun, counted_run

UDP_OVERHEAD = 14 + 20 + 8  # Ethernet, IPv4 and UDP headers: a payload of pkt_size - 42 bytes


def sender_script(src_if: str, cfg: PktgenConfig) -> str:
    payload = max(1, cfg.pkt_size - UDP_OVERHEAD)
    pause = 1.0 / cfg.rate_pps if cfg.rate_pps else 0.0
    return (
        "import os, socket, time\n"
        f"os.sched_setaffinity(0, {{{SOCKET_SENDER_CPU}}})\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        f"s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b'{src_if}')\n"
        f"s.bind(('{SRC_IP}', 0))\n"
        f"data, t0, sent = bytes({payload}), time.monotonic(), 0\n"
        f"for i in range({cfg.count}):\n"
        f"    s.sendto(data, ('{DST_IP}', 9))\n"
        "    sent += 1\n"
        f"    if {pause}:\n"
        f"        time.sleep(max(0.0, t0 + (i + 1) * {pause} - time.monotonic()))\n"
        "print('sent', sent, 'usec', int((time.monotonic() - t0) * 1e6))\n"
    )


def run_socket_tx(guest: Guest, src_if: str, dst_if: str, cfg: PktgenConfig, *,
                  require_all: bool = True, settle: float = 3.0) -> TrafficRun:
    """cfg.count UDP datagrams of cfg.pkt_size bytes on the wire, src_if -> dst_if."""
    dst_mac = next(n.mac for n in guest.nics if n.name == dst_if)
    setup = (f"ip addr add {SRC_IP}/24 dev {src_if} && "
             f"ip neigh replace {DST_IP} lladdr {dst_mac} dev {src_if} nud permanent")
    undo = f"ip neigh del {DST_IP} dev {src_if}; ip addr del {SRC_IP}/24 dev {src_if}; true"
    sender = f"python3 -c \"$(cat <<'EOF'\n{sender_script(src_if, cfg)}EOF\n)\""

    def parse(report: str) -> PktgenResult:
        words = report.split()
        sent, usec = int(words[words.index("sent") + 1]), int(words[words.index("usec") + 1])
        return PktgenResult(sent=sent, usec=usec, pps=int(sent / max(usec, 1) * 1e6), errors=0,
                            pkt_size=cfg.pkt_size, raw=report.strip())

    guest.run(setup)
    try:
        run = counted_run(guest, src_if, dst_if, cfg, sender, parse, max(120.0, cfg.count / 200), settle)
    finally:
        guest.run(undo, check=False)
    if require_all and run.missed:
        raise GuestError(run.loss_report(), guest.console_tail())
    return run
