"""`harness faults` on one kernel (always its debug flavour): the rx-alloc-failure
experiment on each NIC asked for, judged, written as faults.json and a report."""

from __future__ import annotations

import json
import math
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from harness.artifacts.kernel_choice import KernelChoice
from harness.cache import Cache
from harness.claims.lab import Lab
from harness.faults.experiment import (
    CLEAN_PKTGEN,
    FAILURES,
    FAULT_KINDS,
    FAULT_PKTGEN,
    PROBABILITY,
    RECOVERY_WAIT_S,
    exp_name,
    fault_experiment,
)
from harness.faults.verdict import FAIL, PASS, FaultRow, judge
from harness.nics import CATALOGUE
from harness.survey.techniques import apart_last, peer_of


@dataclass
class FaultsRun:
    rows: list[FaultRow]
    kernel: dict
    table: pd.DataFrame  # every observation, with how it was measured and its detail

    @property
    def failed(self) -> bool:
        return any(r.verdict == FAIL for r in self.rows)


def log(msg: str) -> None:
    print(f"harness: {msg}", file=sys.stderr, flush=True)


def values_of(lab: Lab, name: str) -> dict[str, float]:
    m = lab.results[name]
    return {str(k): float(v) for k, v in m.frame.groupby("metric").value.sum(min_count=1).items()}


def rows_of(lab: Lab, models: tuple[str, ...]) -> list[FaultRow]:
    rows = []
    for model in models:
        name = exp_name(model)
        failure = lab.failures.get(name)
        row = judge(model, values_of(lab, name) if name in lab.results else {},
                    (failure.kind, failure.headline) if failure else None)
        if name in lab.results:
            m = lab.results[name]
            row.figures["seconds"] = {"experiment": round(m.seconds, 1), **m.phases}
        rows.append(row)
    return rows


def faults_kernel(choice: KernelChoice, models: tuple[str, ...], cache: Cache, out: Path, accel: str) -> FaultsRun:
    run_id = "faults-" + time.strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)
    started = time.monotonic()
    lab = Lab(cache, run_id, choice=choice, accel=accel, nics=models)
    lab.prefetch_image()
    kernel = lab.kernel("stock")
    if not kernel.debug:
        from harness.errors import HarnessError

        raise HarnessError(f"{kernel.label} is not the debug flavour: `harness faults` needs its fault injection "
                           "and leak checks (it builds the debug kernel itself unless --fragment replaces the list)")
    try:
        for model in apart_last(models, models):
            fault_experiment(lab, model, peer_of(model, models))
    finally:
        lab.close()
    rows = rows_of(lab, models)
    meta = {"label": choice.label, "release": kernel.release, "key": kernel.key, "run_id": run_id,
            "wall_s": round(time.monotonic() - started, 1), "boots": lab.boots,
            "stray_reports": [r.to_json() for r in lab.stray_reports]}
    run = FaultsRun(rows, meta, lab.table())
    write_faults(out, run)
    for r in rows:
        log(f"rx-alloc-failure on {r.nic}: {r.verdict}{': ' + '; '.join(r.reasons) if r.reasons else ''}")
    log(f"faults on {kernel.release} in {meta['wall_s']:.0f}s; report: {out / 'faults.md'}")
    return run


POOL_UNDER_XDP = ", ".join(m for m, n in CATALOGUE.items() if n.rx_pool_under_xdp)
HOW = (f"Per NIC, on the debug kernel: fail_page_alloc, then failslab (and fail_function on page_pool's "
       f"allocation, under an XDP_PASS program, for {POOL_UNDER_XDP}), each failing {PROBABILITY} % "
       f"of the calls whose call stack passes through the driver's text (stack filter), at most {FAILURES}, "
       f"while {FAULT_PKTGEN.count} frames arrive at {FAULT_PKTGEN.rate_pps}/s from its peer and a UDP socket that "
       f"never reads holds them (a driver that recycles its pages must allocate); then injection off, the frames "
       f"given back, "
       f"{RECOVERY_WAIT_S:.0f} s, and a clean burst of {CLEAN_PKTGEN.count} frames, every one of which must arrive. "
       f"kmemleak (two scans) and page_owner (live pages per allocation stack, before and after) look for what the "
       f"driver leaked; any kernel report (KASAN, lockdep, WARNING, ...) fails it. The guest's management NIC "
       f"(ssh) never shares the driver under test: with every model on the hub, the virtio-net row gets a guest of "
       f"its own with its peer, whose management NIC is of another model (nics.MGMT_MODELS).")


def write_faults(out: Path, run: FaultsRun) -> None:
    doc = {"kernel": run.kernel, "how": HOW, "kinds": list(FAULT_KINDS),
           "counters": {m: n.rx_alloc_fail_counter or None for m, n in CATALOGUE.items()},
           "nics": [r.to_json() for r in run.rows]}
    (out / "faults.json").write_text(json.dumps(doc, indent=2, default=_plain) + "\n")
    (out / "faults.md").write_text(render_markdown(run))
    if not run.table.empty:
        run.table.to_csv(out / "measurements.csv", index=False)


def _plain(v: object) -> object:
    return None if isinstance(v, float) and math.isnan(v) else str(v)


def _fmt(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, dict):
        return ", ".join(f"{k} {n}" for k, n in v.items())
    return f"{v:.0f}" if isinstance(v, float) else str(v)


def render_markdown(run: FaultsRun) -> str:
    k = run.kernel
    lines = [f"# rx allocation failures: {k['release']} ({k['label']}, debug flavour)", "", HOW, "",
             "| NIC | verdict | injected | counted by the driver | clean burst | leaked objects / pages | why |",
             "|---|---|---|---|---|---|---|"]
    for r in run.rows:
        f = r.figures
        burst = (f"{_fmt(f.get('recovery_frames_received'))} of {_fmt(f.get('recovery_frames_sent'))}"
                 if "recovery_frames_sent" in f else "-")
        leaks = f"{_fmt(f.get('leaked_driver_objects'))} / {_fmt(f.get('leaked_driver_pages'))}"
        mark = {PASS: "pass", FAIL: "**fail**"}.get(r.verdict, r.verdict)
        lines.append(f"| {r.nic} | {mark} | {_fmt(f.get('injected'))} | {_fmt(f.get('faults_counted_by_driver'))} "
                     f"| {burst} | {leaks} | {'; '.join(r.reasons) or '-'} |")
    lines += ["", f"Wall time {k['wall_s']:.0f} s. Counted by the driver: the ethtool -S counter per NIC in "
              "faults.json (`counters`); - where the driver has none the harness reads."]
    return "\n".join(lines) + "\n"
