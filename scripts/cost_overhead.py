#!/usr/bin/env python3
"""What the cost probe costs under TCG, in a guest like the cost guest but without the
plugin (TCG, dma_debug=off), then in the cost guest with the plugin loaded but not armed,
then armed (a callback on every block), and in the regular guest (no plugin, the DMA-API
checker on): the wall time of a CPU-bound guest command (sha256 of 64 MiB, every block
the plugin sees) and pktgen's unpaced rate, each the median of N, with the ratios to the
first (compared only inside this one run; pktgen's rate under TCG is the noisier).

    scripts/cost_overhead.py [--kernel source] [--frames 20000] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid

from harness.artifacts.kernel_choice import KernelChoice
from harness.cache import Cache
from harness.claims.lab import Lab
from harness.guest.vm import Guest, GuestOptions
from harness.measurement import dma_debug
from harness.measurement.cost import CostProbe
from harness.measurement.measure import RunContext, measure_rx
from harness.measurement.traffic import PktgenConfig

BUSY = "head -c 64M /dev/zero | sha256sum"


def rates(g: Guest, run_id: str, armed: bool, cfg: PktgenConfig, runs: int) -> tuple[float, float]:
    """(seconds of BUSY, pktgen frames/s), medians of `runs`."""
    ctx = RunContext(run_id, g.kernel.key)
    pps, busy = [], []
    for _ in range(runs):
        probe = CostProbe("igb", "e1000e")
        if armed:
            probe.arm(g)
        started = time.monotonic()
        g.run(BUSY)
        busy.append(time.monotonic() - started)
        if armed:
            probe.cleanup(g)
        m = measure_rx(g, ctx, [probe] if armed else [], pktgen=cfg, max_loss=1.0, retries=0, witness=False)
        pps.append(m.traffic.result.pps)
    return statistics.median(busy), statistics.median(pps)


def without_plugin(lab: Lab, cfg: PktgenConfig, runs: int) -> tuple[float, float]:
    """The cost guest's options but the plugin (a Guest of its own: no lab guest is like it)."""
    opts = GuestOptions(accel="tcg", nics=lab.nics, cmdline_extra=(dma_debug.OFF_AT_BOOT,))
    with Guest(lab.kernel("stock"), lab.image(), opts, lab.cache) as g:
        return rates(g, lab.run_id, False, cfg, runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernel", default="source")
    ap.add_argument("--frames", type=int, default=20_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    cfg = PktgenConfig(count=args.frames)
    lab = Lab(Cache(), f"overhead-{uuid.uuid4().hex[:6]}", choice=KernelChoice(args.kernel))
    try:
        bare = without_plugin(lab, cfg, args.runs)
        loaded = rates(lab.guest("stock", "direct", cost=True), lab.run_id, False, cfg, args.runs)
        armed = rates(lab.guest("stock", "direct", cost=True), lab.run_id, True, cfg, args.runs)
        regular = rates(lab.guest("stock", "direct"), lab.run_id, False, cfg, args.runs)
    finally:
        lab.close()
    for i, what in ((0, f"{BUSY!r}, seconds"), (1, f"pktgen, {args.frames:,} frames unpaced, frames/s")):
        print(f"{what}: {bare[i]:.3g} without the plugin (TCG, dma_debug=off), {loaded[i]:.3g} loaded "
              f"({loaded[i] / bare[i]:.2f}), {armed[i]:.3g} armed ({armed[i] / bare[i]:.2f}), {regular[i]:.3g} in the "
              f"regular guest (DMA-API checker on: {regular[i] / bare[i]:.2f}); median of {args.runs}")


if __name__ == "__main__":
    main()
