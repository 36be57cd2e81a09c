"""Small guest-side checks on the NICs under test: which driver is bound, link
state, interface counters, and raw frames sent from one NIC to the other."""

from __future__ import annotations

import json
import shlex
import time

from harness.errors import GuestError
from harness.guest.vm import Guest

# A local experimental EtherType (IEEE 802 "local experimental 1"): no stack in
# the guest consumes it, so the frames are counted by the NIC and dropped.
EXPERIMENTAL_ETHERTYPE = 0x88B5

SEND_FRAMES_PY = """
import socket, sys
ifname, dst = sys.argv[1], bytes.fromhex(sys.argv[2].replace(':', ''))
count, ethertype = int(sys.argv[3]), int(sys.argv[4])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((ifname, 0))
src = s.getsockname()[4]
frame = dst + src + ethertype.to_bytes(2, 'big') + bytes(46)
for _ in range(count):
    s.send(frame)
"""


def parse_ethtool_i(text: str) -> dict[str, str]:
    """`ethtool -i` output -> {"driver": "igb", "bus-info": "0000:00:04.0", ...}."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def driver_info(guest: Guest, ifname: str) -> dict[str, str]:
    return parse_ethtool_i(guest.run(["ethtool", "-i", ifname]).stdout)


def parse_ethtool_g(text: str) -> dict[str, int]:
    """`ethtool -g` -> the current ring sizes, e.g. {"rx": 256, "tx": 256}."""
    current = text.split("Current hardware settings:", 1)[-1] if "Current hardware settings:" in text else ""
    out = {}
    for line in current.splitlines():
        key, _, val = line.partition(":")
        if key.strip() in ("RX", "TX") and val.strip().isdigit():
            out[key.strip().lower()] = int(val.strip())
    return out


def ring_sizes(guest: Guest, ifnames: dict[str, str]) -> dict[str, dict[str, int]]:
    """name -> its interface's current ring sizes, in one guest command."""
    mark = "==harness-rings=="
    out = guest.run(f"; echo {mark}; ".join(f"ethtool -g {shlex.quote(i)}" for i in ifnames.values())).stdout
    return {name: parse_ethtool_g(part) for name, part in zip(ifnames, out.split(mark), strict=True)}


def link_stats(guest: Guest, ifname: str) -> dict:
    """`ip -j -s link show` for one interface: {"operstate": ..., "rx_packets": ..., ...}."""
    (doc,) = json.loads(guest.run(["ip", "-j", "-s", "link", "show", "dev", ifname]).stdout)
    stats = doc.get("stats64") or doc.get("stats") or {}
    return {
        "operstate": doc.get("operstate"),
        "flags": doc.get("flags", []),
        "address": doc.get("address"),
        "rx_packets": stats.get("rx", {}).get("packets"),
        "tx_packets": stats.get("tx", {}).get("packets"),
        "rx_dropped": stats.get("rx", {}).get("dropped"),
        "rx_errors": stats.get("rx", {}).get("errors"),
    }


def bring_up(guest: Guest, ifnames: list[str], timeout: float = 20.0) -> float:
    """Set the interfaces up and wait for carrier on all (one guest command: the
    wait loops in the guest); returns seconds waited."""
    started = time.monotonic()
    paths = " ".join(f"/sys/class/net/{n}/carrier" for n in ifnames)
    want = " ".join(["1"] * len(ifnames))
    res = guest.run(" && ".join(f"ip link set dev {n} up" for n in ifnames)
                    + f" || exit 4; i=0; while [ \"$(cat {paths} 2>/dev/null | tr '\\n' ' ')\" != '{want} ' ]; do "
                    f"i=$((i+1)); [ $i -gt {int(timeout * 20)} ] && exit 3; sleep 0.05; done", check=False,
                    timeout=timeout + 30)
    if res.rc == 3:
        states = {n: link_stats(guest, n)["operstate"] for n in ifnames}
        raise GuestError(f"no carrier on {ifnames} after {timeout:.0f}s (operstate {states})", guest.console_tail())
    if res.rc != 0:
        guest.run(" && ".join(f"ip link set dev {n} up" for n in ifnames))  # raises with the guest's stderr
    return time.monotonic() - started


def send_frames(guest: Guest, src_if: str, dst_mac: str, count: int) -> None:
    """Send `count` minimum-size raw Ethernet frames out of `src_if` to `dst_mac`."""
    guest.run(["python3", "-c", SEND_FRAMES_PY, src_if, dst_mac, str(count), str(EXPERIMENTAL_ETHERTYPE)])


def rx_delta_after_send(guest: Guest, src_if: str, dst_if: str, count: int, settle: float = 5.0) -> int:
    """Frames counted on `dst_if` after sending `count` from `src_if` (waits for them to land)."""
    dst_mac = link_stats(guest, dst_if)["address"]
    before = link_stats(guest, dst_if)["rx_packets"]
    send_frames(guest, src_if, dst_mac, count)
    deadline = time.monotonic() + settle
    while True:
        delta = link_stats(guest, dst_if)["rx_packets"] - before
        if delta >= count or time.monotonic() > deadline:
            return delta
        time.sleep(0.2)
