"""The record of one `harness run` on one kernel, built once from the lab and the
verdicts, then handed in memory to the report, the baseline comparison and the
kernel matrix (results.json is this record, written as it is)."""

from __future__ import annotations

import json
from collections import Counter

from harness.claims.base import ClaimResult
from harness.claims.experiments import EXPERIMENTS
from harness.claims.lab import ERROR, Lab
from harness.measurement.measure import Measurement

RECORD_FORMAT = 2  # 2: checks have ids, metrics are keyed by them; errors and kernel reports recorded


def kernel_reports(lab: Lab) -> list[dict]:
    """Every kernel report of the run, where it came from and what it counted as:
    a crash that failed an experiment, a DMA-API report (evidence for the claims),
    or a report outside any experiment (boot, teardown: fails the run)."""
    out = []
    for name, f in lab.failures.items():
        out += [{"experiment": name, "counted_as": "error", **r.to_json()} for r in f.reports]
    for name, m in lab.results.items():
        rows = m.rows("dma_api_errors", "")
        if rows.empty or not rows.iloc[0].detail:
            continue
        d = json.loads(rows.iloc[0].detail)
        out += [{"experiment": name, "counted_as": "evidence", "kind": "DMA-API", **r} for r in d.get("reports", [])]
        if d.get("unattributed"):
            out.append({"experiment": name, "counted_as": "evidence", "kind": "DMA-API",
                        "fingerprint": f"{d['unattributed']} more DMA-API errors counted, not printed",
                        "message": "debugfs dma-api/error_count moved beyond the reports printed"})
    out += [{"experiment": None, "counted_as": "error", **r.to_json()} for r in lab.stray_reports]
    return out


def witness(m: Measurement) -> dict | None:
    """Frames the receiving NIC's QEMU model wrote and its driver counted, where the
    harness reads that model's trace (measure.witness_observations)."""
    rows = m.frame[m.frame.metric == "device:witness_rx_diff"]
    if rows.empty or not rows.iloc[0].detail:
        return None
    d = json.loads(rows.iloc[0].detail)
    return {"driver": rows.iloc[0].driver, "written": int(d["written"]), "counted": int(d["counted"])}


def af_xdp(m: Measurement) -> dict | None:
    """The AF_XDP socket's side of an xsk experiment: frames the kernel delivered to its
    rx ring, frames the receiver read, XDP_STATISTICS (xsk.XskCounts)."""
    rows = m.frame[m.frame.metric == "xsk_delivered"]
    if rows.empty or not rows.iloc[0].detail:
        return None
    zc = m.frame[m.frame.metric == "xsk_zerocopy"]
    return {"driver": rows.iloc[0].driver, "zerocopy": bool(zc.iloc[0].value) if not zc.empty else None,
            **json.loads(rows.iloc[0].detail)}


def build_record(lab: Lab, results: list[ClaimResult], meta: dict, *, partial: bool = False,
                 stopped_by: str = "", coverage: dict | None = None) -> dict:
    """The run's record, whole: what report writers, the baseline comparison and the
    exit status read. Built once; `with_baseline` adds the comparison as a new record."""
    experiments = []
    for name, m in lab.results.items():
        e = EXPERIMENTS[name]
        experiments.append({"name": name, "what": e.what, "variant": e.variant, "dma_mode": e.dma_mode,
                            "frames": m.traffic.received, "pps": m.traffic.result.pps,
                            "seconds": round(m.seconds, 1), "phases": m.phases, "device_witness": witness(m),
                            **({"af_xdp": sock} if (sock := af_xdp(m)) else {}),
                            **({"retried": m.retried} if m.retried else {})})
    run_errors = [f"kernel report outside any experiment: {r.fingerprint}" for r in lab.stray_reports]
    claims = [r.to_json() for r in results]
    return {
        **meta, "format": RECORD_FORMAT, "partial": partial, "claims": claims, "experiments": experiments,
        "failures": {name: f.to_json() for name, f in lab.failures.items()},
        "kernel_reports": kernel_reports(lab), "run_errors": run_errors, "boots": lab.boots,
        "qemu_aborts": lab.qemu_aborts, "boot_retries": lab.boot_retries,
        **({"stopped_by": stopped_by} if stopped_by else {}),
        **({"coverage": coverage} if coverage is not None else {}),
        **({"debug": debug} if (debug := debug_summary(lab)) else {}),
        "tally": dict(Counter(c["verdict"] for c in claims)),
        "timings": {**lab.timings, "boots": round(sum(b.get("boot_s", 0) for b in lab.boots), 1),
                    "experiments": {e["name"]: e["seconds"] for e in experiments}},
    }


LEAK_METRICS = ("leaked_driver_objects", "leaked_driver_pages")


def debug_summary(lab: Lab) -> dict | None:
    """On the debug flavour: what the leak checks after each experiment found (a leak
    from a driver under test is already that experiment's error)."""
    checked = {name: {metric: float(m.frame[m.frame.metric == metric].value.sum()) for metric in LEAK_METRICS}
               for name, m in lab.results.items() if (m.frame.metric == LEAK_METRICS[0]).any()}
    if not checked and not any(b.get("debug") for b in lab.boots):
        return None
    return {"flavour": "debug (kernel-configs/debug.config: KASAN, KFENCE, UBSAN, lockdep, kmemleak, page_owner, "
                       "fault injection)",
            "experiments_checked": len(checked), "leak_checks": checked,
            "leaks": sorted(f.experiment for f in lab.failures.values()
                            for r in f.reports if r.kind in ("kmemleak", "page leak"))}


def with_baseline(record: dict, comparison: dict) -> dict:
    """The record and its comparison against a baseline (compare.Comparison.to_dict())."""
    return {**record, "baseline": comparison}


def has_errors(record: dict) -> bool:
    return bool(record.get("run_errors")) or any(c["verdict"] == ERROR for c in record["claims"])
