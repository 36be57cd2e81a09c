#!/usr/bin/env python3
"""How repeatable the cost probe's number is: the same experiment (igb receiving
from the e1000e, the cost regime of harness.claims.cost_claims) in N separate
guests, each booted afresh. Prints, per run, igb's rx instructions per frame
(QEMU's TCG plugin: a NAPI poll that received one frame and completed, not
rescheduling its NAPI; beside it every
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
from harness.measurement.measure import Measurement, RunContext, measure_rx
from harness.nics import nic


def functions_per_frame(m: Measurement, driver: str) -> dict[str, float]:
    """rx instructions per frame by function (every poll), as listed by the probe."""
    rows = m.frame[(m.frame.driver == driver) & m.frame.metric.str.startswith(f"{RX}:fn:")]
    return {metric.removeprefix(f"{RX}:fn:"): value / m.traffic.received
            for metric, value in zip(rows.metric, rows.value, strict=True)}


def one_run(cache: Cache, kernel: str, experiment: str) -> tuple[float, float, float, float, float, dict[str, float]]:
    """(rx instructions per completed one-frame poll, per frame over all polls, polls per
    frame, wall seconds per frame, one-frame polls that rescheduled their NAPI per frame (NaN:
    not told apart), rx instructions per frame by function) in a fresh guest."""
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
        sys.exit(f"{experiment}: too few frames had a completed NAPI poll of their own")
    return (one, m.per_packet(RX, driver), m.per_packet("entries:rx", driver),
            unpaced.traffic.result.usec / 1e6 / unpaced.traffic.result.sent,
            m.per_packet("instances:rx:one-rescheduled", driver), functions_per_frame(m, driver))


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
    by_function: list[dict[str, float]] = []
    for i in range(args.runs):
        started = time.monotonic()
        insns, all_polls, polls, wall, rescheduled, functions = one_run(cache, args.kernel, args.experiment)
        runs.append((insns, all_polls, polls, wall))
        by_function.append(functions)
        print(f"run {i + 1}: {insns:.1f} instructions per completed one-frame poll ({all_polls:.1f} per frame "
              f"over all polls), {polls:.3f} polls per frame, {rescheduled:.3f} one-frame polls per frame that "
              "scheduled their NAPI again, "
              f"{wall * 1e6:.1f} us wall-clock per frame ({time.monotonic() - started:.0f} s with the boot)",
              flush=True)
    print(f"spread {spread([r[0] for r in runs]) * 100:.2f} % instructions per frame "
          f"(median {statistics.median(r[0] for r in runs):.1f})")
    print(f"spread {spread([r[1] for r in runs]) * 100:.2f} % instructions per frame over all polls "
          f"(median {statistics.median(r[1] for r in runs):.1f})")
    names = {name for functions in by_function for name in functions}
    # A function under the listing share in a run is a 0 there (it is small anyway).
    moved = sorted(((max(f.get(n, 0.0) for f in by_function) - min(f.get(n, 0.0) for f in by_function), n)
                    for n in names), reverse=True)[:8]
    print("functions whose rx instructions per frame (every poll) moved most between runs: "
          + ", ".join(f"{n} {d:.1f}" for d, n in moved))
    print(f"spread {spread([r[3] for r in runs]) * 100:.2f} % wall-clock per frame "
          f"(median {statistics.median(r[3] for r in runs) * 1e6:.1f} us)")


if __name__ == "__main__":
    main()
