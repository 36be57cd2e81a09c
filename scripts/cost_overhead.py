#!/usr/bin/env python3
"""What the cost probe costs under TCG: the same unpaced pktgen frames (e1000e -> igb)
in the regular guest (no plugin; the DMA-API checker on), then in the cost guest
(dma_debug=off) with the plugin loaded but not armed, then armed (a callback on every
block). Prints pktgen's rate in each and the ratios to the regular guest (rates compared
only inside this one run). Loaded against armed is the plugin's own cost; the regular
guest differs by the checker too, so it is not the plugin's cost alone.

    scripts/cost_overhead.py [--kernel source] [--frames 20000] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import uuid

from harness.artifacts.kernel_choice import KernelChoice
from harness.cache import Cache
from harness.claims.lab import Lab
from harness.measurement.cost import CostProbe
from harness.measurement.measure import RunContext, measure_rx
from harness.measurement.traffic import PktgenConfig


def rates(lab: Lab, cost: bool, armed: bool, cfg: PktgenConfig, runs: int) -> float:
    g = lab.guest("stock", "direct", cost=cost)
    ctx = RunContext(lab.run_id, g.kernel.key)
    pps = []
    for _ in range(runs):
        probes = [CostProbe("igb", "e1000e")] if armed else []
        m = measure_rx(g, ctx, probes, pktgen=cfg, max_loss=1.0, retries=0, witness=False)
        pps.append(m.traffic.result.pps)
    return statistics.median(pps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernel", default="source")
    ap.add_argument("--frames", type=int, default=20_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    cfg = PktgenConfig(count=args.frames)
    lab = Lab(Cache(), f"overhead-{uuid.uuid4().hex[:6]}", choice=KernelChoice(args.kernel))
    try:
        plain = rates(lab, False, False, cfg, args.runs)
        loaded = rates(lab, True, False, cfg, args.runs)
        armed = rates(lab, True, True, cfg, args.runs)
    finally:
        lab.close()
    print(f"pktgen {plain:,.0f} pps in the regular guest, {loaded:,.0f} in the cost guest unarmed "
          f"({loaded / plain:.2f}), {armed:,.0f} armed ({armed / plain:.2f}; armed / unarmed {armed / loaded:.2f}); "
          f"median of {args.runs} runs of {args.frames:,} frames each")


if __name__ == "__main__":
    main()
