#!/usr/bin/env python3
"""The xsk-zero-copy experiments (AF_XDP zero-copy and copy mode on igb) --runs
times in a row in one guest, each judged by the claim as `harness run` judges it:
prints per run the verdict, the frames igb received, the frames the kernel delivered
to the socket's rx ring, the frames the receiver read and the socket's statistics,
then how many runs confirmed (or were inconclusive for a kernel without igb
zero-copy), refuted, or failed as a measurement. `--delay-traffic S` waits S seconds
in the guest after the receiver bound, before the traffic (the slow host of issue 19
on purpose: the old receiver gave up 5 s after it bound)."""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from collections import Counter
from pathlib import Path

from harness.artifacts.kernel_choice import KernelChoice
from harness.cache import Cache
from harness.claims import experiments as exps
from harness.claims.lab import Lab
from harness.claims.runner import nics_for
from harness.claims.xsk_claims import XskZeroCopy
from harness.guest.vm import Guest
from harness.measurement import measure
from harness.nics import DEFAULT_NICS

METRICS = ("xsk_delivered", "xsk_received", "calls:__xsk_map_redirect", "calls:__xsk_rcv")


def delay_traffic(seconds: float) -> None:
    """Every measurement's link bring-up (just before its probes and traffic) waits first."""
    bring_up = measure.bring_up

    def slow(guest: Guest, ifnames: list[str], timeout: float = 20.0) -> float:
        guest.run(["sleep", str(seconds)], timeout=seconds + 60)
        return bring_up(guest, ifnames, timeout)

    measure.bring_up = slow


def one_run(lab: Lab, claim: XskZeroCopy) -> dict:
    for name in claim.experiments:
        lab.results.pop(name, None)
        lab.failures.pop(name, None)
        exps.run_experiment(lab, name)
    result = claim.evaluate(lab)
    row: dict = {"verdict": result.verdict, "experiments": {}}
    for name in claim.experiments:
        if name in lab.failures:
            row["experiments"][name] = {"failure": lab.failures[name].kind, "why": lab.failures[name].headline}
            continue
        m = lab.results[name]
        counts = {k: m.value(k, "igb") for k in METRICS if not m.rows(k, "igb").empty}
        stats = {k.removeprefix("xsk_stat:"): int(v) for k, v in
                 m.frame[m.frame.metric.str.startswith("xsk_stat:")][["metric", "value"]].values}
        row["experiments"][name] = {"frames": m.traffic.received, **counts, "stats": stats, "phases": m.phases,
                                    "retried": getattr(m, "retried", [])}
    return row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--kernel", default="source", help="a --kernel KIND (default: source)")
    p.add_argument("--kernel-tree", type=Path)
    p.add_argument("--delay-traffic", type=float, default=0.0, metavar="S")
    p.add_argument("--accel", default="auto")
    p.add_argument("--json", type=Path, help="write every run's row here")
    args = p.parse_args()
    if args.delay_traffic:
        delay_traffic(args.delay_traffic)
    choice = KernelChoice("tree", args.kernel_tree) if args.kernel_tree else KernelChoice(args.kernel)
    claim = XskZeroCopy()
    lab = Lab(Cache(), "xsk-soak-" + secrets.token_hex(3), choice=choice, accel=args.accel,
              nics=nics_for([claim], DEFAULT_NICS))
    rows = []
    try:
        for i in range(args.runs):
            started = time.monotonic()
            row = one_run(lab, claim)
            row["seconds"] = round(time.monotonic() - started, 1)
            rows.append(row)
            print(f"run {i + 1}: {row['verdict']} in {row['seconds']}s", flush=True)
            for name, e in row["experiments"].items():
                print(f"  {name}: {json.dumps(e, sort_keys=True)}", flush=True)
    finally:
        lab.close()
    tally = Counter(r["verdict"] for r in rows)
    failed = Counter(name for r in rows for name, e in r["experiments"].items() if e.get("failure") == "error")
    retried = Counter(name for r in rows for name, e in r["experiments"].items() if e.get("retried"))
    release = lab.kernel().release if lab.has_kernel("stock") else "?"
    print(f"{release}: {len(rows)} runs: " + ", ".join(f"{v} {n}" for v, n in tally.items())
          + (f"; experiments failed: {dict(failed)}" if failed else "")
          + (f"; measured twice: {dict(retried)}" if retried else ""))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    # inconclusive: a kernel whose igb has no zero-copy (the bind says so); never refuted or error
    return 0 if set(tally) <= {"confirmed", "inconclusive"} else 1


if __name__ == "__main__":
    sys.exit(main())
