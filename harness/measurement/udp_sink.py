"""A UDP socket on the frames' destination (pktgen sends to DST_IP port 9), on the
receiving interface, in one of three ways the stack ends a received frame:

  holds   a large receive buffer never read: every skb, and so its page, stays
          referenced by the stack until the socket closes (page reuse defeated);
  drains  the same socket read every 50 ms: the same stack path, the pages given back;
  full    a receive buffer at its minimum, never read: after the first few frames
          every frame is dropped where it would be queued (UdpRcvbufErrors). The
          stack's whole rx path runs (input route cached for a local address, the
          socket found), and nothing in it waits on time: no per-frame route
          allocation freed through RCU, as for a destination the guest does not own,
          and no rate-limited ICMP port-unreachable, as for a closed port. The cost
          figures' sink (scripts/cost_determinism.py measured the difference).
"""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Iterator

from harness.guest.vm import Guest
from harness.measurement.traffic import DST_IP

# 2,000 held frames pin a page per two frames: 4 MB, well inside this and the guest's UDP memory limits.
HELD_RCVBUF = 64 << 20
# SO_RCVBUF 0 is raised to the kernel's minimum (SOCK_MIN_RCVBUF: about two skbs' truesize).
MIN_RCVBUF = 0
# The reading socket drains every 50 ms, never sleeping on the socket itself: a reader
# woken per frame (sock_def_readable -> try_to_wake_up) would add the scheduler's work to
# every frame's rx path, which the socket that holds them does not pay (measured: a
# blocking recv() loop made the recycling side 16-20 % dearer per frame than the holding one).
READER = ("while True:\n"
          "    time.sleep(0.05)\n"
          "    try:\n"
          "        while True:\n"
          "            s.recv(65536, socket.MSG_DONTWAIT)\n"
          "    except BlockingIOError:\n"
          "        pass\n")
# mode -> (the receive buffer and the option that sets it, whether it is read, in words)
MODES = {
    # SO_RCVBUFFORCE (33, asm-generic/socket.h; not in Python 3.11): past rmem_max, root only.
    "holds": ((33, HELD_RCVBUF), False, "into a UDP socket that holds every skb"),
    "drains": ((33, HELD_RCVBUF), True, "into a UDP socket drained every 50 ms"),
    "full": (("socket.SO_RCVBUF", MIN_RCVBUF), False,
             "into a UDP socket whose receive buffer is full (each frame dropped as it would be queued)"),
}


def describe(mode: str) -> str:
    return MODES[mode][2]


@contextlib.contextmanager
def udp_sink(g: Guest, ifname: str, mode: str = "holds") -> Iterator[None]:
    """DST_IP on `ifname` and a socket bound to it, port 9, for the body (see MODES)."""
    (option, size), read, _ = MODES[mode]
    sink = ("import socket, sys, time\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            f"s.setsockopt(socket.SOL_SOCKET, {option}, {size})\n"
            f"s.bind(({DST_IP!r}, 9))\n"
            "print('bound', flush=True)\n"
            + (READER if read else "time.sleep(3600)\n"))
    pidfile = "/run/harness-udp-sink.pid"
    g.run(f"ip addr add {DST_IP}/24 dev {ifname} && "
          f"(python3 -c {shlex.quote(sink)} > /run/harness-udp-sink.out 2>&1 & echo $! > {pidfile}) && "
          "for i in $(seq 50); do grep -q bound /run/harness-udp-sink.out && exit 0; sleep 0.1; done; "
          "cat /run/harness-udp-sink.out >&2; exit 1")
    try:
        yield
    finally:
        g.run(f"kill $(cat {pidfile}) 2>/dev/null; sleep 0.2; ip addr del {DST_IP}/24 dev {ifname}; true",
              check=False)
