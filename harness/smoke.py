"""The main job until the claims land: boot the guest and check the test bed
itself (both NICs bound to their drivers, links up, frames crossing the hub in
both directions, tracing available), then write results to --out."""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass

from harness.artifacts.kconfig import final_values
from harness.guest.vm import Guest
from harness.measurement.netcheck import bring_up, driver_info, rx_delta_after_send

FRAMES = 1000


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    how: str


def run_checks(guest: Guest) -> list[Check]:
    checks: list[Check] = []
    igb, e1000e = guest.nic("igb"), guest.nic("e1000e")
    for ifname, want in ((igb, "igb"), (e1000e, "e1000e")):
        info = driver_info(guest, ifname)
        checks.append(Check(f"{want} bound", info.get("driver") == want,
                            f"{ifname}: driver {info.get('driver')} {info.get('version', '')} "
                            f"bus {info.get('bus-info')}", "ethtool -i"))
    waited = bring_up(guest, [igb, e1000e])
    checks.append(Check("links up", True, f"carrier on {igb} and {e1000e} after {waited:.1f}s",
                        "ip link set up; /sys/class/net/*/carrier"))
    for src, dst in ((e1000e, igb), (igb, e1000e)):
        delta = rx_delta_after_send(guest, src, dst, FRAMES)
        checks.append(Check(f"frames {guest_driver(guest, src)} -> {guest_driver(guest, dst)}",
                            delta == FRAMES, f"sent {FRAMES} from {src}, rx_packets on {dst} +{delta}",
                            "AF_PACKET raw frames (EtherType 0x88b5), `ip -j -s link` delta"))
    traceable = guest.run("grep -c '^igb_poll\\b' /sys/kernel/tracing/available_filter_functions",
                          check=False)
    checks.append(Check("igb_poll traceable", traceable.stdout.strip() == "1",
                        f"igb_poll in available_filter_functions: {traceable.stdout.strip() or 'no'}",
                        "tracefs available_filter_functions"))
    checks.append(_config_check(guest))
    return checks


def guest_driver(guest: Guest, ifname: str) -> str:
    return next(n.driver for n in guest.nics if n.name == ifname)


def _config_check(guest: Guest) -> Check:
    data = guest.run("base64 /proc/config.gz", check=False)
    if data.rc != 0:
        return Check("kernel config", False, "/proc/config.gz unreadable (CONFIG_IKCONFIG_PROC?)",
                     "/proc/config.gz")
    running = final_values(gzip.decompress(base64.b64decode(data.stdout)).decode())
    built = final_values(guest.kernel.config.read_text())
    differ = sorted(k for k in set(running) | set(built) if running.get(k) != built.get(k))
    return Check("kernel config", not differ,
                 f"{len(running)} options in /proc/config.gz, "
                 + (f"differs from the built config in {differ[:5]}" if differ else "identical to the built one"),
                 "/proc/config.gz vs the artifact's .config")


def qemu_version() -> str:
    out = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True, check=False)
    return out.stdout.splitlines()[0] if out.stdout else "unknown"


CHECK_FILE = "check.json"


def run_smoke(booted_guest: Callable[[argparse.Namespace], AbstractContextManager[Guest]],
              args: argparse.Namespace) -> int:
    started = time.monotonic()
    with booted_guest(args) as guest:
        checks = run_checks(guest)
        record = {
            "kernel": {"release": guest.kernel.release, "key": guest.kernel.key, **guest.kernel.meta},
            "image": {"key": guest.image.key, "recipe": guest.image.recipe},
            "qemu": {"version": qemu_version(), "command": guest.command_line, "accel": guest.spec.accel,
                     "accel_reason": guest.times.accel_reason},
            "boot": {"ready_s": round(guest.times.ready, 2), "ssh_s": round(guest.times.ssh, 2)},
            "checks": [asdict(c) for c in checks],
        }
    record["wall_s"] = round(time.monotonic() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    # Its own file: results.json is a `harness run` record (compare, baselines and the matrix read it).
    (args.out / CHECK_FILE).write_text(json.dumps(record, indent=2))
    (args.out / "report.md").write_text(render_markdown(record))
    for c in checks:
        print(f"  {'PASS' if c.ok else 'FAIL'}  {c.name:22s} {c.detail}")
    print(f"harness: results in {args.out}/{CHECK_FILE} and {args.out}/report.md", file=sys.stderr)
    return 0 if all(c.ok for c in checks) else 1


def render_markdown(record: dict) -> str:
    k, q = record["kernel"], record["qemu"]
    lines = [
        f"# Harness smoke run: kernel {k['release']}",
        "",
        f"- kernel: {k.get('source')} {k.get('variant', '')}, key `{k['key']}`, fragments {k.get('fragments')}",
        f"- QEMU: {q['version']}, accel {q['accel']} ({q['accel_reason']})",
        f"- boot: READY after {record['boot']['ready_s']} s, SSH after {record['boot']['ssh_s']} s",
        "",
        "| check | result | detail | how measured |",
        "|---|---|---|---|",
    ]
    for c in record["checks"]:
        lines.append(f"| {c['name']} | {'pass' if c['ok'] else '**FAIL**'} | {c['detail']} | {c['how']} |")
    lines += ["", "QEMU command line:", "", "```", q["command"], "```", ""]
    return "\n".join(lines)
