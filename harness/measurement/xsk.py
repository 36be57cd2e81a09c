"""AF_XDP in the guest: the project's receiver (xsk/xsk_rx.c, libxdp's xsk API and
libbpf, built on the host with clang, the libraries linked in statically so the
guest needs only libelf and zlib) bound to one queue of a NIC in zero-copy or copy
mode, fed by bpf/xsk_redirect.o. The NIC is set to one combined channel for the
experiment, so pktgen's single flow lands on the socket's queue.

The receiver reads from its bind until it is stopped, and answers SIGUSR1 with a
snapshot once its rx ring is drained: frames it read, and frames the kernel put on
the ring (the ring's producer index, which the kernel writes). The traffic's share is
the difference of two snapshots around it; a frame the kernel delivered that the
receiver did not read is the receiver's loss (`receiver_loss`), never the kernel's."""

from __future__ import annotations

import contextlib
import json
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from harness.cache import Cache, hash_parts
from harness.errors import GuestError, HarnessError, MeasurementFailure, Unmeasurable
from harness.guest.vm import Guest
from harness.hostcmd import require_tool, run_checked
from harness.measurement import xdp

SOURCE = Path(__file__).resolve().parent / "xsk" / "xsk_rx.c"
LINK = ["-Wl,-Bstatic", "-lxdp", "-lbpf", "-Wl,-Bdynamic", "-lelf", "-lz"]
GUEST_DIR = "/root/harness"
OUT, ERR, PID = "/run/harness-xsk.out", "/run/harness-xsk.err", "/run/harness-xsk.pid"
# Seconds the guest waits for the receiver to bind, and for a snapshot (its drain
# gives up after 10 s and says so).
READY_S, SNAPSHOT_S = 60, 30
# XDP_STATISTICS (struct xdp_statistics): why frames meant for the socket were not
# put on its rx ring; there is no delivered count among them.
XDP_STATISTICS = ("rx_dropped", "rx_ring_full", "rx_fill_ring_empty_descs", "rx_invalid_descs")


def build_receiver(cache: Cache | None = None) -> Path:
    cache = cache or Cache()
    require_tool("clang", "to compile the AF_XDP receiver")
    if not Path("/usr/include/xdp/xsk.h").is_file():
        raise HarnessError("/usr/include/xdp/xsk.h missing: apt-get install libxdp-dev (the AF_XDP receiver)")
    clang = run_checked(["clang", "--version"]).splitlines()[0]
    key = hash_parts([("clang", clang), ("link", " ".join(LINK)), (SOURCE.name, SOURCE.read_bytes())])

    def build(out: Path) -> dict:
        run_checked(["clang", "-O2", "-g", "-Wall", "-Werror", str(SOURCE), "-o", str(out / "xsk_rx"), *LINK],
                    what="clang xsk_rx.c")
        return {"clang": clang}

    return cache.get_or_build("xsk", key, build).file("xsk_rx")


@dataclass(frozen=True)
class XskSnapshot:
    """One answer of the receiver: cumulative counts since its bind."""

    read: int  # frames the receiver took off its rx ring
    bytes: int
    delivered: int  # the rx ring's producer index: frames the kernel put on the ring
    unread: int  # producer - consumer once drained: entries the receiver left on the ring
    drained: bool  # the ring was empty and the kernel's index quiet before it answered
    wakeups: int  # recvfrom kicks for a zero-copy driver that asked for fill buffers
    stats: dict[str, int] = field(default_factory=dict)  # XDP_STATISTICS
    bad_descs: int = 0  # descriptors outside the umem or beyond its frames (the kernel's fault)

    @classmethod
    def parse(cls, doc: dict) -> XskSnapshot:
        return cls(int(doc["read"]), int(doc["bytes"]), int(doc["delivered"]), int(doc["unread"]),
                   bool(doc["drained"]), int(doc["wakeups"]), {k: int(doc["stats"][k]) for k in XDP_STATISTICS},
                   int(doc.get("bad_descs", 0)))

    def since(self, before: XskSnapshot) -> XskCounts:
        return XskCounts(self.read - before.read, self.bytes - before.bytes, self.delivered - before.delivered,
                         self.unread, self.drained, self.wakeups - before.wakeups,
                         {k: v - before.stats.get(k, 0) for k, v in self.stats.items()},
                         self.bad_descs - before.bad_descs)


@dataclass(frozen=True)
class XskCounts:
    """What one traffic run did to the socket: the difference of two snapshots."""

    read: int
    bytes: int
    delivered: int
    unread: int
    drained: bool
    wakeups: int
    stats: dict[str, int]
    bad_descs: int = 0

    def to_json(self) -> dict:
        return {"read": self.read, "bytes": self.bytes, "delivered": self.delivered, "unread": self.unread,
                "drained": self.drained, "wakeups": self.wakeups, "stats": self.stats, "bad_descs": self.bad_descs}


# The statistic that moves when the receiver falls behind: its rx ring full (it did not
# read). A run is 2,000 frames, the ring 2,048 entries and 4,096 umem frames circulate,
# so only a stalled receiver fills it, and it does so before the fill ring could run
# dry; an empty fill ring without a full rx ring means buffers the kernel never gave
# back (rx_fill_ring_empty_descs stays the kernel's evidence, as rx_dropped does).
RECEIVER_BEHIND = ("rx_ring_full",)


def receiver_loss(counts: XskCounts) -> str | None:
    """Why these counts are the receiver's failure, not the kernel's: frames the kernel
    put on the socket's rx ring that the receiver did not read, a drain that never went
    quiet, or frames the kernel could not deliver because the receiver's rx ring was full. None
    when the receiver kept up and read every frame delivered to it."""
    stats = ", ".join(f"{k} {v}" for k, v in counts.stats.items())
    if counts.read < counts.delivered or counts.unread:
        return (f"the AF_XDP receiver read {counts.read} of the {counts.delivered} frames the kernel put on its rx "
                f"ring ({counts.unread} left unread; XDP_STATISTICS: {stats})")
    if not counts.drained:
        return (f"the AF_XDP receiver's rx ring did not go quiet within its drain ({counts.read} read of "
                f"{counts.delivered} delivered; XDP_STATISTICS: {stats})")
    behind = [k for k in RECEIVER_BEHIND if counts.stats.get(k)]
    if behind:
        return (f"the AF_XDP receiver fell behind ({' and '.join(behind)} moved): frames the kernel could not "
                f"deliver for want of room or buffers ({counts.read} read of {counts.delivered} delivered; "
                f"XDP_STATISTICS: {stats})")
    return None


def combined_channels(ethtool_l: str) -> str | None:
    """`ethtool -l` -> the current number of combined channels ("2"), if it says."""
    current = ethtool_l.split("Current hardware settings:")[-1]
    return next((line.split(":")[1].strip() for line in current.splitlines()
                 if line.strip().startswith("Combined:")), None)


@contextlib.contextmanager
def rx_queue(g: Guest, ifname: str, queue: int) -> Iterator[None]:
    """Every flow `ifname` receives hashed to `queue`: RSS's indirection table weighted
    to that queue alone (`ethtool -X weight`), the default table restored after. The
    experiment checks the queue's own counter: a table the device model ignored is
    a failed measurement, not the driver's."""
    combined = combined_channels(g.run(["ethtool", "-l", ifname]).stdout)
    if not combined or not combined.isdigit() or int(combined) <= queue:
        raise Unmeasurable(f"{ifname} has {combined or 'no'} combined channels: no rx queue {queue}")
    weights = ["1" if q == queue else "0" for q in range(int(combined))]
    g.run(["ethtool", "-X", ifname, "weight", *weights])
    try:
        yield
    finally:
        g.run(["ethtool", "-X", ifname, "default"], check=False)


@contextlib.contextmanager
def one_channel(g: Guest, ifname: str) -> Iterator[None]:
    combined = combined_channels(g.run(["ethtool", "-l", ifname]).stdout)
    g.run(["ethtool", "-L", ifname, "combined", "1"])
    try:
        yield
    finally:
        if combined and combined != "1":
            g.run(["ethtool", "-L", ifname, "combined", combined], check=False)


def wait_for_line(pattern: str, seconds: int) -> str:
    """Guest shell: wait until the receiver's output has a line with `pattern` (a
    fixed string), or it exited, or `seconds` passed; then print its output and stderr."""
    return (f"end=$(($(date +%s) + {seconds})); until grep -qsF -- {shlex.quote(pattern)} {OUT}; do "
            f"kill -0 $(cat {PID}) 2>/dev/null && [ $(date +%s) -lt $end ] || break; sleep 0.05; done; "
            f"cat {OUT}; cat {ERR} >&2")


def json_lines(text: str) -> list[dict]:
    return [json.loads(ln) for ln in text.splitlines() if ln.startswith("{")]


class XskReceiver:
    """The receiver running in the guest, bound to one queue of `ifname`."""

    def __init__(self, g: Guest, ifname: str, mode: str, ready: dict) -> None:
        self.g, self.ifname, self.mode = g, ifname, mode
        self.zerocopy = bool(ready["zerocopy"])  # what the kernel reports in effect (XDP_OPTIONS)
        self.snapshots = 0

    def snapshot(self) -> XskSnapshot:
        """Counts since the bind, once the receiver drained its rx ring."""
        self.snapshots += 1
        k = self.snapshots
        answer = wait_for_line(f'"snapshot": {k},', SNAPSHOT_S)
        res = self.g.run(f"if kill -USR1 $(cat {PID}); then {answer}; else echo 'the receiver is gone' >&2; "
                         f"cat {ERR} >&2; fi", check=False, timeout=SNAPSHOT_S + 30)
        doc = next((d for d in json_lines(res.stdout) if d.get("snapshot") == k), None)
        if doc is None:
            raise MeasurementFailure(f"AF_XDP receiver on {self.ifname} ({self.mode}) gave no snapshot {k} within "
                                     f"{SNAPSHOT_S} s: {res.stderr.strip()[-300:] or 'no output'}")
        return XskSnapshot.parse(doc)


@contextlib.contextmanager
def xsk_receiver(g: Guest, ifname: str, driver: str, mode: str, cache: Cache | None,
                 queue: int = 0) -> Iterator[XskReceiver]:
    """The receiver bound on `queue` of `ifname` while the body runs (the body takes
    snapshots around its traffic). A bind the driver refuses (zero-copy on a driver
    without it) raises Unmeasurable with the kernel's error."""
    receiver, redirect = build_receiver(cache), xdp.build_programs(cache)["xsk_redirect"]
    g.run(["mkdir", "-p", GUEST_DIR])
    g.write_file(f"{GUEST_DIR}/xsk_rx", receiver.read_bytes())
    g.write_file(f"{GUEST_DIR}/xsk_redirect.o", redirect.read_bytes())
    xdp.detach(g, ifname)
    cmd = shlex.join([f"{GUEST_DIR}/xsk_rx", ifname, str(queue), mode, f"{GUEST_DIR}/xsk_redirect.o"])
    started = g.run(f"chmod +x {GUEST_DIR}/xsk_rx; rm -f {OUT}; {cmd} < /dev/null > {OUT} 2> {ERR} & "
                    f"echo $! > {PID}; {wait_for_line('{', READY_S)}", check=False, timeout=READY_S + 30)
    first = next(iter(json_lines(started.stdout)), None)
    if not first or not first.get("ready"):
        stop(g)
        xdp.detach(g, ifname)
        # EOPNOTSUPP from the zero-copy bind is the driver saying it has none; any other
        # refusal (EBUSY: a socket left on the queue) is a failure to say as it is.
        if first and mode == "zerocopy" and first.get("error", "").startswith("bind with XDP_ZEROCOPY: Operation not"):
            raise Unmeasurable(f"{driver} in this kernel has no AF_XDP zero-copy ({first['error']})")
        raise GuestError(f"AF_XDP receiver on {ifname} ({mode}) did not start: "
                         f"{(first or {}).get('error') or started.stderr.strip() or 'no output'}", g.console_tail())
    try:
        yield XskReceiver(g, ifname, mode, first)
    finally:
        stop(g)
        xdp.detach(g, ifname)


def stop(g: Guest) -> None:
    """SIGINT: the receiver closes its socket and detaches its program; wait until it is
    gone, and SIGKILL it after 10 s (its socket then goes with the process)."""
    gone = f"timeout 10 sh -c 'while kill -0 $(cat {PID}) 2>/dev/null; do sleep 0.05; done'"
    g.run(f"kill -INT $(cat {PID}) 2>/dev/null; {gone} || {{ kill -KILL $(cat {PID}) 2>/dev/null; {gone}; }}",
          check=False)
