"""`harness selftests`: the kernel's own drivers/net selftests, unchanged, run on
the emulated NICs. They come from the kernel under test's source (kselftest's
`make install`, with the kernel's headers), run in a guest of that kernel with
the NIC under test as NETIF and its peer NIC moved into a network namespace as
the remote end (NetDrvEpEnv, REMOTE_TYPE=netns), IPv4 and IPv6 addresses on
both; every test file's KTAP is parsed case by case."""

from __future__ import annotations

import io
import shlex
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.artifacts.kbuild import make_env, make_jobs
from harness.artifacts.kernel import Kernel
from harness.cache import Cache, hash_parts
from harness.errors import HarnessError
from harness.guest.vm import Guest
from harness.hostcmd import require_tool, run_logged
from harness.measurement import leaks
from harness.selftests.ktap import KtapDoc, KtapResult, parse_ktap

SUITE = "drivers/net"
GUEST_DIR = "/root/selftests"
NETNS = "harness-remote"
# Documentation addresses (RFC 5737, RFC 3849): never routed anywhere.
LOCAL_V4, REMOTE_V4, PREFIX_V4 = "192.0.2.1", "192.0.2.2", 24
LOCAL_V6, REMOTE_V6, PREFIX_V6 = "2001:db8::1", "2001:db8::2", 64
TEST_TIMEOUT = 300  # seconds per test file (kselftest's own default is 45 s; TCG is slower)


@dataclass
class FileResult:
    test: str  # e.g. ping.py
    nic: str  # the NIC under test (NETIF)
    rc: int | None  # None: timed out
    seconds: float
    doc: KtapDoc
    output: str  # stdout + stderr, for a failure's evidence
    console: list[str] = field(default_factory=list)  # console lines when the test failed
    # On the debug flavour: kmemleak's unreferenced objects after the file, those from the
    # NICs' drivers (a failure, as in netdev's CI) and the others (listed only).
    leaks: list[str] = field(default_factory=list)
    other_leaks: int = 0

    def to_json(self) -> dict:
        return {"test": self.test, "nic": self.nic, "rc": self.rc, "seconds": round(self.seconds, 1),
                "cases": [r.to_json() for r in self.doc.results], "totals": self.doc.totals,
                "problems": self.doc.problems() + ([f"timed out after {TEST_TIMEOUT}s"] if self.rc is None else []),
                "output": self.output[-6000:] if self.failed else "", "console": self.console,
                **({"kmemleak": self.leaks, "kmemleak_elsewhere": self.other_leaks}
                   if self.leaks or self.other_leaks else {})}

    @property
    def failed(self) -> bool:
        return file_failed(self.rc, [r.status for r in self.doc.results], self.doc.problems(), self.leaks)


def file_failed(rc: int | None, statuses: list[str], problems: list[str], leaks: list[str]) -> bool:
    """A test file fails on an exit status other than pass (0) or skip (4), a failed case,
    a KTAP problem, or an object leaked from a NIC's driver. FileResult.failed, and a
    merge that reads selftests.json back, both judge by this."""
    return rc not in (0, 4) or "fail" in statuses or bool(problems) or bool(leaks)


def source_tree(kernel: Kernel) -> Path:
    """The kernel under test's own source tree (the one it was built from)."""
    origin = kernel.meta.get("source_origin")
    if origin and (Path(origin) / "tools/testing/selftests" / SUITE).is_dir():
        return Path(origin)
    have = origin or "a prebuilt kernel without its source"
    raise HarnessError(f"no tools/testing/selftests/{SUITE} in this kernel's source ({have}): the selftests "
                       "come from the kernel's own tree")


def installed_selftests(kernel: Kernel, cache: Cache) -> Path:
    """kselftest's `make install` of drivers/net (and the net/lib it needs) from the
    kernel's source, against the kernel's own headers (`make headers_install` into
    its build dir); cached by the suite's sources."""
    src = source_tree(kernel)
    suite_dirs = [src / "tools/testing/selftests" / d for d in (SUITE, "net/lib")] + [src / "tools/net/ynl"]
    digest = hash_parts([(str(p.relative_to(src)), p.read_bytes()) for d in suite_dirs if d.is_dir()
                         for p in sorted(d.rglob("*")) if p.is_file()])
    key = hash_parts([("kernel", kernel.base_key or kernel.key), ("suite", digest)])

    def build(out: Path) -> dict:
        require_tool("make")
        log = cache.dir("logs") / f"selftests-{key}.log"
        build_dir = Path(kernel.meta.get("build_dir", out / "hdr"))
        env = make_env(cache, src)
        run_logged(["make", "-C", str(src), f"O={build_dir}", "-s", "headers_install",
                    f"INSTALL_HDR_PATH={out / 'usr'}"], log, what="kernel headers for the selftests", env=env)
        run_logged(["make", "-C", str(src / "tools/testing/selftests"), f"-j{make_jobs()}", f"TARGETS={SUITE}",
                    f"KHDR_INCLUDES=-isystem {out / 'usr/include'}", f"INSTALL_PATH={out / 'install'}", "install"],
                   log, what=f"kselftest install of {SUITE}", env=env)
        tests = sorted(p.name for p in (out / "install" / SUITE).iterdir() if p.suffix == ".py" and p.is_file())
        return {"tests": tests, "source": str(src)}

    return cache.get_or_build("selftests", key, build).path / "install"


def tests_in(install: Path) -> list[str]:
    """The test files kselftest installed for the suite (the ones its Makefile lists)."""
    listed = (install / "kselftest-list.txt").read_text().splitlines() if (install / "kselftest-list.txt").is_file() \
        else []
    return sorted(line.split(":", 1)[1] for line in listed if line.startswith(f"{SUITE}:"))


def push_tree(g: Guest, install: Path) -> None:
    """The installed selftests into the guest (one tar stream)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(install, arcname="selftests")
    g.run(f"rm -rf {GUEST_DIR} && mkdir -p /root && tar -xzf - -C /root", stdin=buf.getvalue(), timeout=300)


def net_config(local_if: str) -> str:
    """drivers/net/net.config: what NetDrvEpEnv reads (the same keys as the environment)."""
    return "\n".join([f"NETIF={local_if}", f"LOCAL_V4={LOCAL_V4}", f"REMOTE_V4={REMOTE_V4}",
                      f"LOCAL_V6={LOCAL_V6}", f"REMOTE_V6={REMOTE_V6}", "REMOTE_TYPE=netns",
                      f"REMOTE_ARGS={NETNS}"]) + "\n"


def setup_endpoints(g: Guest, model: str, peer: str) -> str:
    """NETIF and its remote: the peer NIC moved into a netns, addresses on both, IPv6
    switched back on for these two interfaces and for the devices the tests create
    (netkit, macsec, vlan: `default`), while the init keeps it off on the others.
    keep_addr_on_down: a test that takes the link down and up (a ring or channel
    change on e1000e, an MTU change) must find its static IPv6 address again, as a
    NIPA host's network manager would put it back."""
    local, remote = g.nic(model), g.nic(peer)
    ns = f"ip netns exec {NETNS}"
    v6_on = "disable_ipv6=0"
    g.run(" && ".join([
        f"ip netns del {NETNS} 2>/dev/null; ip netns add {NETNS}",
        f"ip link set dev {remote} netns {NETNS}",
        f"sysctl -qw net.ipv6.conf.default.{v6_on} net.ipv6.conf.lo.{v6_on} net.ipv6.conf.{local}.{v6_on}",
        f"sysctl -qw net.ipv6.conf.default.keep_addr_on_down=1 net.ipv6.conf.{local}.keep_addr_on_down=1",
        f"{ns} sysctl -qw net.ipv6.conf.all.{v6_on} net.ipv6.conf.default.{v6_on} net.ipv6.conf.lo.{v6_on}",
        f"{ns} sysctl -qw net.ipv6.conf.{remote}.{v6_on} net.ipv6.conf.all.keep_addr_on_down=1 "
        f"net.ipv6.conf.{remote}.keep_addr_on_down=1",
        f"ip addr replace {LOCAL_V4}/{PREFIX_V4} dev {local}",
        f"ip -6 addr replace {LOCAL_V6}/{PREFIX_V6} dev {local} nodad",
        f"{ns} ip addr replace {REMOTE_V4}/{PREFIX_V4} dev {remote}",
        f"{ns} ip -6 addr replace {REMOTE_V6}/{PREFIX_V6} dev {remote} nodad",
        f"ip link set dev {local} up", f"{ns} ip link set dev lo up", f"{ns} ip link set dev {remote} up",
        # carrier on both ends before the first test
        f"for i in $(seq 100); do [ $(cat /sys/class/net/{local}/carrier) = 1 ] && "
        f"[ $({ns} cat /sys/class/net/{remote}/carrier) = 1 ] && exit 0; sleep 0.1; done; exit 1",
    ]))
    g.write_file(f"{GUEST_DIR}/{SUITE}/net.config", net_config(local))
    return local


def teardown_endpoints(g: Guest, model: str) -> None:
    """The peer back in the init namespace (deleting the netns returns its NIC), addresses off."""
    local = g.nic(model)
    g.run(f"ip netns del {NETNS} 2>/dev/null; ip addr flush dev {local}; "
          f"sysctl -qw net.ipv6.conf.{local}.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1; "
          "sleep 0.5; true", check=False)
    g.rescan_nics()


def run_file(g: Guest, test: str, model: str) -> FileResult:
    mark = g.console.line_count() if g.console else 0
    started = time.monotonic()
    # Run as kselftest's runner does: the file itself (its shebang: python3 or bash).
    res = g.run(f"cd {GUEST_DIR}/{SUITE} && timeout {TEST_TIMEOUT} ./{shlex.quote(test)} 2>&1",
                check=False, timeout=TEST_TIMEOUT + 60)
    seconds = time.monotonic() - started
    rc = None if res.rc == 124 else res.rc
    doc = parse_ktap(res.stdout)
    if doc.version is None and not doc.results:
        doc = whole_file_result(test, rc, res.stdout)
    result = FileResult(test, model, rc, seconds, doc, res.stdout + res.stderr)
    if g.kernel.debug:
        drivers = leaks.drivers_of(g)
        ours, others = leaks.split_objects(leaks.unreferenced(g), drivers)
        result.leaks = [f"kmemleak: unreferenced object (size {o.size}) allocated in "
                        f"{leaks.first_driver_frame(o.backtrace, drivers)[1]}: " + " < ".join(o.backtrace[:8])
                        for o in ours]
        result.other_leaks = len(others)
    if result.failed and g.console:
        result.console = g.console.last_lines(30) if not g.console.reports(mark) else [
            line for r in g.console.reports(mark) for line in r.lines]
    counts = doc.counts()
    print(f"harness: {model}: {test}: " + ", ".join(f"{n} {k}" for k, n in counts.items() if n)
          + (f" (exit {rc})" if rc not in (0, None) else " (timed out)" if rc is None else "") + f", {seconds:.0f}s",
          file=sys.stderr, flush=True)
    return result


def whole_file_result(test: str, rc: int | None, output: str) -> KtapDoc:
    """A test that prints no KTAP of its own (a shell test) is one result, judged by
    its exit status as kselftest's runner judges it: 0 pass, 4 skip, else fail."""
    last = next((line.strip() for line in reversed(output.splitlines()) if line.strip()), "")
    if rc == 0:
        result = KtapResult(1, test, True)
    elif rc == 4:
        result = KtapResult(1, test, True, "SKIP", last or "exit 4 (kselftest's skip)")
    else:
        result = KtapResult(1, test, False, "", last if rc is not None else f"timed out after {TEST_TIMEOUT}s")
    return KtapDoc(1, 1, [result])


def select_tests(tests: list[str], pattern: str | None) -> list[str]:
    if not pattern:
        return tests
    chosen = [t for t in tests if pattern in t]
    if not chosen:
        raise HarnessError(f"-k {pattern!r} matches none of the suite's tests: {', '.join(tests)}")
    return chosen


def ensure_tools(g: Guest) -> list[str]:
    """Commands the tests need that the guest lacks (each then skips, saying so)."""
    tools = "python3 ping socat iperf3 ethtool ip udevadm bpftrace"
    out = g.run(f"for c in {tools}; do command -v $c >/dev/null || echo $c; done").stdout
    return out.split()


def run_nic(g: Guest, install: Path, model: str, peer: str, tests: list[str]) -> list[FileResult]:
    """Every test file with `model` as NETIF and `peer` as the remote, in this guest (on
    the debug flavour, kmemleak is read after each file: what boot left is set aside)."""
    if g.kernel.debug:
        leaks.set_aside(g)
    push_tree(g, install)
    setup_endpoints(g, model, peer)
    try:
        return [run_file(g, t, model) for t in tests]
    finally:
        teardown_endpoints(g, model)
