#!/usr/bin/env python3
"""How much slower the debug flavour's guest is under TCG, and which debug option
costs what: the default kernel, then the debug kernel with every checker on, then
with one boot-time switchable checker off at a time (kmemleak=off, page_owner not
asked for, kfence.sample_interval=0, lockdep.prove_locking=0). KASAN, UBSAN and
DEBUG_OBJECTS have no boot switch: their share is what the debug kernel with all
four switched off still costs over the default kernel. Per guest: seconds from
QEMU's start to ssh, the wall time of a CPU-bound command (sha256 of 64 MiB) and
pktgen's unpaced rate (e1000e -> igb), each the median of N; ratios to the
default kernel, compared only inside this one run.

    scripts/debug_slowdown.py [--kernel source] [--frames 5000] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

from harness.artifacts.image import build_image
from harness.artifacts.kernel import DEBUG_FRAGMENT, DEFAULT_FRAGMENTS
from harness.artifacts.kernel_choice import KernelChoice
from harness.cache import Cache
from harness.guest.vm import Guest, GuestOptions
from harness.measurement.traffic import PktgenConfig, run_pktgen

BUSY = "head -c 64M /dev/zero | sha256sum"
# Boot-time switches of the debug kernel, one checker off each (kmemleak=off after the
# kernel's own kmemleak=on wins: the last one on the command line counts).
SWITCHES = {
    "all on": (),
    "kmemleak off": ("kmemleak=off",),
    "KFENCE off": ("kfence.sample_interval=0",),
    "lockdep off": ("lockdep.prove_locking=0",),
    "all four off": ("kmemleak=off", "kfence.sample_interval=0", "lockdep.prove_locking=0", "page_owner=off"),
}


def measure(g: Guest, cfg: PktgenConfig, runs: int) -> tuple[float, float]:
    busy, pps = [], []
    for _ in range(runs):
        started = time.monotonic()
        g.run(BUSY, timeout=600)
        busy.append(time.monotonic() - started)
        pps.append(run_pktgen(g, g.nic("e1000e"), g.nic("igb"), cfg, require_all=False).result.pps)
    return statistics.median(busy), statistics.median(pps)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kernel", default="source", choices=["source", "source-latest"])
    p.add_argument("--frames", type=int, default=5000)
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    cache = Cache()
    image = build_image(cache=cache)
    default = KernelChoice(args.kernel).get(cache)
    debug = KernelChoice(args.kernel, fragments=(*DEFAULT_FRAGMENTS, DEBUG_FRAGMENT)).get(cache)
    cfg = PktgenConfig(count=args.frames)
    rows = []
    for label, kernel, extra in [("default kernel", default, ()),
                                 *[(f"debug, {name}", debug, sw) for name, sw in SWITCHES.items()]]:
        with Guest(kernel, image, GuestOptions(accel="tcg", cmdline_extra=extra), cache) as g:
            busy, pps = measure(g, cfg, args.runs)
            rows.append((label, g.times.ssh, busy, pps))
            print(f"{label:24s} boot {g.times.ssh:6.1f} s   sha256 64 MiB {busy:6.2f} s   pktgen {pps:8.0f} frames/s",
                  flush=True)
    base = rows[0]
    print("\nagainst the default kernel (this run only):")
    for label, boot, busy, pps in rows[1:]:
        print(f"{label:24s} boot x{boot / base[1]:.2f}   cpu x{busy / base[2]:.2f}   pktgen rate x{pps / base[3]:.2f}")


if __name__ == "__main__":
    main()
