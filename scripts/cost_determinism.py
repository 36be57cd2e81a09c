#!/usr/bin/env python3
"""How repeatable the cost probe's number is: the same experiment (igb receiving
from the e1000e, the cost regime of harness.claims.cost_claims) in N separate
guests, each booted afresh. Prints, per run, igb's rx instructions per frame
(QEMU's TCG plugin: a NAPI poll that received one frame, and beside it every
poll's instructions per frame, batched or idle polls included), the NAPI polls
per frame and, as the wall-clock
witness of the same guest, pktgen's elapsed time per frame of the same frames
sent unpaced right after (a paced run's wall time is its pacing), then the
spread (max - min) / median of each:

    spread X % instructions per frame
    spread Y % wall-clock per frame

    scripts/cost_determinism.py [--runs 5] [--kernel source] [--experiment rx-cost] [--frames N]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
import uuid

from harness.artifacts.kernel_choice import KernelChoice
from harness.cache import Cache
from harness.claims.cost_claims import RX, RX_COST, rx_per_frame
from harness.claims.experiments import EXPERIMENTS, run_experiment
from harness.claims.lab import Lab
from harness.measurement.measure import RunContext, measure_rx
from harness.nics import nic


def one_run(cache: Cache, kernel: str, experiment: str) -> tuple[float, float, float, float]:
    """(rx instructions per one-frame poll, per frame over all polls, polls per frame,
    wall seconds per frame) in a fresh guest."""
    exp = EXPERIMENTS[experiment]
    lab = Lab(cache, f"determinism-{uuid.uuid4().hex[:6]}", choice=KernelChoice(kernel))
    try:
        run_experiment(lab, experiment)
        if experiment not in lab.results:
            sys.exit(f"{experiment} failed: {lab.failures[experiment].headline}")
        g = lab.guest(exp.variant, exp.dma_mode, cost=exp.cost)
        unpaced = measure_rx(g, RunContext(lab.run_id, g.kernel.key), [], src=exp.sender, dst=exp.receiver,
                             pktgen=dataclasses.replace(exp.traffic(), rate_pps=0), max_loss=1.0, retries=0,
                             witness=False)
    finally:
        lab.close()
    m = lab.results[experiment]
    driver = nic(exp.receiver).driver
    one = rx_per_frame(lab, experiment, driver)
    if one is None:
        sys.exit(f"{experiment}: too few frames had a NAPI poll of their own")
    return (one, m.per_packet(RX, driver), m.per_packet("entries:rx", driver),
            unpaced.traffic.result.usec / 1e6 / unpaced.traffic.result.sent)


def spread(values: list[float]) -> float:
    return (max(values) - min(values)) / statistics.median(values)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--kernel", default="source")
    ap.add_argument("--experiment", default=RX_COST)
    ap.add_argument("--frames", type=int, help="another frame count than the experiment's (same pace)")
    args = ap.parse_args()
    if args.frames:  # this process's catalogue only
        exp = EXPERIMENTS.base[args.experiment]
        EXPERIMENTS.base[args.experiment] = dataclasses.replace(
            exp, pktgen=dataclasses.replace(exp.pktgen, count=args.frames))
    cache = Cache()
    runs = []
    for i in range(args.runs):
        started = time.monotonic()
        insns, all_polls, polls, wall = one_run(cache, args.kernel, args.experiment)
        runs.append((insns, all_polls, polls, wall))
        print(f"run {i + 1}: {insns:.1f} instructions per one-frame poll ({all_polls:.1f} per frame over all "
              f"polls), {polls:.3f} polls per frame, "
              f"{wall * 1e6:.1f} us wall-clock per frame ({time.monotonic() - started:.0f} s with the boot)",
              flush=True)
    print(f"spread {spread([r[0] for r in runs]) * 100:.2f} % instructions per frame "
          f"(median {statistics.median(r[0] for r in runs):.1f})")
    print(f"spread {spread([r[1] for r in runs]) * 100:.2f} % instructions per frame over all polls "
          f"(median {statistics.median(r[1] for r in runs):.1f})")
    print(f"spread {spread([r[3] for r in runs]) * 100:.2f} % wall-clock per frame "
          f"(median {statistics.median(r[3] for r in runs) * 1e6:.1f} us)")


if __name__ == "__main__":
    main()
