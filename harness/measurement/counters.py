"""NIC counters in the guest: `ethtool -S` and `ip -j -s link`, as snapshots
and deltas. Misses and drops are read here so a traffic run can say where frames
went instead of hiding them."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from harness.guest.vm import Guest

STAT_LINE = re.compile(r"^\s*([\w\[\]./-]+):\s+(-?\d+)\s*$")

# Counters that say a frame was lost on receive, by driver (ethtool -S names).
RX_LOSS_COUNTERS = (
    "rx_missed_errors", "rx_no_buffer_count", "rx_fifo_errors", "rx_dropped", "rx_errors",
    "rx_crc_errors", "rx_length_errors", "rx_over_errors", "alloc_rx_buff_failed", "rx_long_length_errors",
    "rx_short_length_errors", "rx_align_errors", "rx_queue_0_drops", "rx_queue_0_alloc_failed",
)


def parse_ethtool_stats(text: str) -> dict[str, int]:
    """`ethtool -S ethX` -> {"rx_packets": 123, ...} (the 'NIC statistics:' header is skipped)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        if m := STAT_LINE.match(line):
            out[m.group(1)] = int(m.group(2))
    return out


def parse_ip_link_stats(text: str) -> dict[str, int]:
    """`ip -j -s link show dev X` -> flat {"rx_packets": .., "rx_dropped": .., "tx_packets": ..}."""
    (doc,) = json.loads(text)
    stats = doc.get("stats64") or doc.get("stats") or {}
    out = {}
    for direction in ("rx", "tx"):
        for key, value in stats.get(direction, {}).items():
            if isinstance(value, int):
                out[f"{direction}_{key}"] = value
    return out


@dataclass(frozen=True)
class CounterSnapshot:
    ifname: str
    ethtool: dict[str, int]
    link: dict[str, int]


SECTION = "----harness-counters----"


def snapshot_script(ifnames: list[str]) -> str:
    """Shell that prints the counters of several interfaces (parse_snapshots reads it):
    a traffic run puts it before and after the traffic in one guest command (each SSH
    round trip costs ~0.1-0.3 s under TCG)."""
    return "; ".join(f"ethtool -S {n} && echo {SECTION} && ip -j -s link show dev {n} && echo {SECTION}"
                     for n in ifnames)


def parse_snapshots(text: str, ifnames: list[str]) -> list[CounterSnapshot]:
    parts = text.split(SECTION + "\n")
    return [CounterSnapshot(n, parse_ethtool_stats(parts[2 * i]), parse_ip_link_stats(parts[2 * i + 1]))
            for i, n in enumerate(ifnames)]


def snapshots(guest: Guest, ifnames: list[str]) -> list[CounterSnapshot]:
    """Counters of several interfaces in one guest command."""
    return parse_snapshots(guest.run(f"set -e; {snapshot_script(ifnames)}").stdout, ifnames)


def delta(before: CounterSnapshot, after: CounterSnapshot) -> dict[str, int]:
    """Every counter read both times, as after - before: ethtool's (unprefixed) and
    the link's (prefixed 'link.'). A counter that did not move is a measured 0."""
    out = {k: after.ethtool[k] - before.ethtool[k] for k in after.ethtool if k in before.ethtool}
    out.update({f"link.{k}": after.link[k] - before.link[k] for k in after.link if k in before.link})
    return out


LOSS_WORDS = ("miss", "drop", "err", "no_buffer", "fifo", "over", "fail")


def losses(d: dict[str, int]) -> dict[str, int]:
    """Receive-side counters that say a frame was lost (ethtool names and `link.rx_*`)."""
    return {k: v for k, v in d.items() if v and (k in RX_LOSS_COUNTERS or (
        k.startswith(("link.rx_", "rx_")) and any(w in k for w in LOSS_WORDS)))}
