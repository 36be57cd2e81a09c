#!/usr/bin/env python3
"""Boot benchmark: the harness guest vs virtme-ng on the same kernel, same run.

For each of --rounds rounds, alternately:
  - harness: QEMU launch -> init READY (NICs bound, sshd up) -> SSH session up
    ("ready"), and the whole cycle including `true` over SSH and shutdown ("total");
  - vng: wall time of `vng --run <bzImage> --force-9p [--disable-kvm] -- true`
    (boot, run, power off).
Prints the medians and the ratios. Same kernel, same accelerator for both.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import pexpect

from harness.artifacts.image import build_image
from harness.artifacts.kernel import KernelRequest, get_kernel
from harness.cache import Cache
from harness.guest.accel import choose_accel
from harness.guest.vm import Guest, GuestOptions


def time_harness(kernel, image, accel: str, cache: Cache) -> tuple[float, float]:
    started = time.monotonic()
    with Guest(kernel, image, GuestOptions(accel=accel), cache) as guest:
        ready = guest.times.ssh
        guest.run(["true"])
    return ready, time.monotonic() - started


def time_vng(bzimage: Path, accel: str, vng: str) -> float:
    cmd = [vng, "--verbose", "--run", str(bzimage), "--force-9p", "--memory", "1G", "--cpus", "2"]
    if accel != "kvm":
        cmd.append("--disable-kvm")
    cmd += ["--", "true"]
    # vng runs its helpers (virtme-run) through the shell: they live beside it.
    env = {**os.environ, "PATH": f"{Path(vng).parent}:{os.environ.get('PATH', '')}"}
    # vng 1.42 exits 255 here even when the command ran (its console fallback, used
    # when it finds no virtio-serial script port, loses the status): judge by the
    # guest's own line instead, which --verbose shows.
    started = time.monotonic()
    child = pexpect.spawn(cmd[0], cmd[1:], env=env, timeout=300, encoding="utf-8", codec_errors="replace")
    output = child.read()
    child.close()
    took = time.monotonic() - started
    if "script exited with code 0" not in output:
        raise SystemExit(f"vng did not run the command (exit {child.exitstatus}): {' '.join(cmd)}\n{output[-2000:]}")
    return took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--accel", default="auto", choices=["auto", "kvm", "tcg"])
    ap.add_argument("--json", type=Path, help="also write the raw figures here")
    args = ap.parse_args()
    vng = shutil.which("vng") or str(Path(sys.executable).parent / "vng")
    if not Path(vng).exists():
        raise SystemExit("vng not found: pip install virtme-ng (it is in the dev extras)")
    cache = Cache()
    kernel = get_kernel(KernelRequest(), cache)
    image = build_image(cache=cache)
    accel = choose_accel(args.accel, kernel.boot_image, cache).accel
    ready, total, vng_times = [], [], []
    for i in range(args.rounds):
        r, t = time_harness(kernel, image, accel, cache)
        v = time_vng(kernel.bzimage, accel, vng)
        ready.append(r)
        total.append(t)
        vng_times.append(v)
        print(f"round {i + 1}: harness ready {r:.2f}s total {t:.2f}s | vng {v:.2f}s", flush=True)
    med = {"harness_ready": statistics.median(ready), "harness_total": statistics.median(total),
           "vng": statistics.median(vng_times)}
    print(f"kernel {kernel.release} ({kernel.key}), accel {accel}, {args.rounds} rounds")
    print(f"median harness ready (NICs bound, SSH up): {med['harness_ready']:.2f}s")
    print(f"median harness total (boot, ssh true, shutdown): {med['harness_total']:.2f}s")
    print(f"median vng --run ... -- true: {med['vng']:.2f}s")
    print(f"ratio ready/vng: {med['harness_ready'] / med['vng']:.2f}  (goal <= 0.70)")
    print(f"ratio total/vng: {med['harness_total'] / med['vng']:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"accel": accel, "kernel": kernel.key, "ready": ready, "total": total,
                                         "vng": vng_times, "medians": med}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
