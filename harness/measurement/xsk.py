"""AF_XDP in the guest: the project's receiver (xsk/xsk_rx.c, libxdp's xsk API and
libbpf, built on the host with clang, the libraries linked in statically so the
guest needs only libelf and zlib) bound to one queue of a NIC in zero-copy or copy
mode, fed by bpf/xsk_redirect.o. The NIC is set to one combined channel for the
experiment, so pktgen's single flow lands on the socket's queue."""

from __future__ import annotations

import contextlib
import json
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from harness.cache import Cache, hash_parts
from harness.errors import GuestError, HarnessError, Unmeasurable
from harness.guest.vm import Guest
from harness.hostcmd import require_tool, run_checked
from harness.measurement import xdp

SOURCE = Path(__file__).resolve().parent / "xsk" / "xsk_rx.c"
LINK = ["-Wl,-Bstatic", "-lxdp", "-lbpf", "-Wl,-Bdynamic", "-lelf", "-lz"]
GUEST_DIR = "/root/harness"
OUT, ERR = "/run/harness-xsk.out", "/run/harness-xsk.err"


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
class XskResult:
    mode: str  # what was asked: zerocopy or copy
    zerocopy: bool  # what the kernel reports in effect (getsockopt XDP_OPTIONS)
    received: int
    bytes: int


def combined_channels(ethtool_l: str) -> str | None:
    """`ethtool -l` -> the current number of combined channels ("2"), if it says."""
    current = ethtool_l.split("Current hardware settings:")[-1]
    return next((line.split(":")[1].strip() for line in current.splitlines()
                 if line.strip().startswith("Combined:")), None)


@contextlib.contextmanager
def one_channel(g: Guest, ifname: str) -> Iterator[None]:
    combined = combined_channels(g.run(["ethtool", "-l", ifname]).stdout)
    g.run(["ethtool", "-L", ifname, "combined", "1"])
    try:
        yield
    finally:
        if combined and combined != "1":
            g.run(["ethtool", "-L", ifname, "combined", combined], check=False)


@contextlib.contextmanager
def xsk_receiver(g: Guest, ifname: str, driver: str, mode: str, count: int, cache: Cache | None,
                 timeout_ms: int = 5000) -> Iterator[list[XskResult]]:
    """The receiver bound on queue 0 of `ifname`, running while the body sends; the
    list it yields holds its result once the body is done. A bind the driver refuses
    (zero-copy on a driver without it) raises Unmeasurable with the kernel's error."""
    receiver, redirect = build_receiver(cache), xdp.build_programs(cache)["xsk_redirect"]
    g.run(["mkdir", "-p", GUEST_DIR])
    g.write_file(f"{GUEST_DIR}/xsk_rx", receiver.read_bytes())
    g.write_file(f"{GUEST_DIR}/xsk_redirect.o", redirect.read_bytes())
    xdp.detach(g, ifname)
    cmd = shlex.join([f"{GUEST_DIR}/xsk_rx", ifname, "0", mode, str(count), str(timeout_ms),
                      f"{GUEST_DIR}/xsk_redirect.o"])
    started = g.run(f"chmod +x {GUEST_DIR}/xsk_rx; ({cmd} > {OUT} 2> {ERR} &); "
                    f"for i in $(seq 100); do grep -q -e ready -e '\"bound\": false' {OUT} && break; sleep 0.05; "
                    f"done; cat {OUT}; cat {ERR} >&2", check=False)
    first = started.stdout.strip().splitlines()
    if not first or first[0] != "ready":
        xdp.detach(g, ifname)
        failed = json.loads(first[0]) if first and first[0].startswith("{") else None
        if failed and failed.get("bound") is False and mode == "zerocopy":
            raise Unmeasurable(f"{driver} in this kernel has no AF_XDP zero-copy "
                               f"({failed['error']})")
        raise GuestError(f"AF_XDP receiver on {ifname} ({mode}) did not start: "
                         f"{(failed or {}).get('error') or started.stderr.strip() or 'no output'}", g.console_tail())
    results: list[XskResult] = []
    done = None
    try:
        yield results
        # The result line comes when the frames are in (or the timeout passed); the
        # receiver keeps socket and program until told to go.
        done = g.run(f"for i in $(seq {timeout_ms // 50 + 40}); do [ $(wc -l < {OUT}) -ge 2 ] && break; "
                     f"sleep 0.05; done; cat {OUT}", check=False)
    finally:
        g.run("pkill -INT -x xsk_rx; for i in $(seq 40); do pgrep -x xsk_rx > /dev/null || break; sleep 0.05; "
              "done", check=False)
        xdp.detach(g, ifname)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise GuestError(f"AF_XDP receiver on {ifname} ({mode}) printed no result", g.console_tail())
    doc = json.loads(lines[-1])
    results.append(XskResult(mode, bool(doc["zerocopy"]), int(doc["received"]), int(doc["bytes"])))
