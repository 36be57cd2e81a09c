"""A kernel matrix: the results of `harness run` on several kernels (one
kernel_run each) side by side, and the baselines they are compared with."""

from __future__ import annotations

import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import jinja2
import pandas as pd

from harness.artifacts.kernel_choice import KernelChoice
from harness.errors import HarnessError
from harness.outdir import write_text
from harness.report.compare import Tolerance, load_results, metric_matrix, verdict_matrix
from harness.report.report import TEMPLATES, fmtnum, write_junit_suites

if TYPE_CHECKING:
    from harness.kernel_run import KernelRun


def log(msg: str) -> None:
    print(f"harness: {msg}", file=sys.stderr, flush=True)


def load_baselines(path: Path, choices: list[KernelChoice]) -> dict[str, dict]:
    """Baseline results per kernel label. One kernel: `path` is its results.json or
    out directory. Several: `path` is a matrix out directory (one subdirectory per
    kernel); a kernel without a baseline there is compared with nothing (said in its report)."""
    if len(choices) == 1:
        return {choices[0].label: load_results(path)}
    if not path.is_dir():
        raise HarnessError(f"--baseline {path}: for a run over several kernels give the earlier run's out "
                           "directory (one subdirectory per kernel)")
    found = {c.label: load_results(path / c.label) for c in choices if (path / c.label / "results.json").is_file()}
    if not found:
        raise HarnessError(f"--baseline {path}: no results.json under any of "
                           f"{', '.join(c.label + '/' for c in choices)}")
    return found


# ---- the comparison report of a matrix run ------------------------------------
def write_matrix(out: Path, kernel_runs: list[KernelRun], tol: Tolerance) -> dict:
    """out/matrix.json, report.html and report.md comparing the kernels (the first
    is the reference for the deltas), and one JUnit file with a suite per kernel,
    from the runs' records and tables in memory."""
    runs = [(r.label, r.record) for r in kernel_runs]
    verdicts = verdict_matrix(runs)
    metrics = metric_matrix(runs, tol)
    labels = [label for label, _ in runs]
    kernels = {label: {"release": r["kernel"]["release"], "source": r["kernel"].get("source"),
                       "tally": r["tally"], "wall_s": r["wall_s"], "dir": label,
                       "baseline": r.get("baseline")} for label, r in runs}
    counts = count_matrix({r.label: r.table for r in kernel_runs}, labels, tol)
    record = {"labels": labels, "reference": labels[0], "kernels": kernels, "verdicts": verdicts,
              "metrics": metrics, "counts": counts.rows, "counts_same": counts.same,
              "counts_one_sided": counts.one_sided, "counts_batching": counts.batching,
              "tolerance": {"rel": tol.rel, "abs": tol.abs}}
    write_text(out / "matrix.json", json.dumps(record, indent=2, default=_nan_to_none))
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True)
    env.filters["fmtnum"] = fmtnum
    env.filters["signed"] = _signed
    write_text(out / "report.html", env.get_template("matrix.html.j2").render(
        **record, batching_note=BATCHING_NOTE.format(n=record["counts_batching"])))
    write_text(out / "report.md", render_matrix_markdown(record))
    write_junit_suites(out / "junit.xml", [(label, r) for label, r in runs])
    differing = sum(1 for m in metrics if m["differs"] and not m["one_sided"])
    one_sided = sum(1 for m in metrics if m["one_sided"])
    log(f"matrix of {len(labels)} kernels: {differing} of {len(metrics)} figures differ beyond tolerance, "
        f"{one_sided} measured on some kernels only; report: {out / 'report.html'}")
    return record


# Per-frame rows that are about the run rather than the driver (pktgen's own rate).
NOT_COMPARED = ("pktgen_pps", "pktgen_sent")
# Counts that follow interrupt timing, not the driver's per-frame work: calls made
# once per NAPI poll or refill batch (per frame: how many frames each poll found),
# and the sender's TX unmaps (completions of the last batch may still be pending
# when the probes are read). Two runs of one kernel under TCG differ in them by up
# to 50 %, so kernels are not compared on them.
BATCHING = re.compile(r"^calls:\w*(_poll|_alloc_rx_buffers)$")


def _timing_dependent(m: pd.DataFrame) -> pd.Series:
    return m.metric.str.match(BATCHING) | ((m.direction == "tx") & m.metric.str.startswith("dma_unmap_page_attrs"))


BATCHING_NOTE = ("Not compared: {n} counts that follow interrupt timing (calls of the poll and refill functions "
                 "per frame, the sender's TX unmaps); two runs of one kernel differ in them by up to 50 % under TCG.")


@dataclass
class CountMatrix:
    rows: list[dict]  # measured on every kernel, differing beyond the tolerance
    same: int  # measured on every kernel, within the tolerance
    one_sided: list[str]  # measured on some kernels only
    batching: int  # left out: timing-dependent counts (_timing_dependent)


def count_matrix(tables: dict[str, pd.DataFrame], labels: list[str], tol: Tolerance) -> CountMatrix:
    """Every per-frame count of every experiment (each kernel's measurement table),
    side by side: the rows measured on every kernel that differ beyond `tol` from
    the reference kernel, how many agree, the rows measured on some kernels only,
    and how many per-poll counts were left out."""
    frames = []
    left_out: set[tuple[str, str, str]] = set()
    for label in labels:
        m = tables.get(label)
        if m is not None and not m.empty:
            m = m[~m.metric.isin(NOT_COMPARED) & (m.driver.fillna("") != "")]
            timing = _timing_dependent(m)
            left_out |= set(zip(m.experiment[timing], m.driver[timing], m.metric[timing], strict=True))
            frames.append(m[~timing].assign(kernel=label))
    result = CountMatrix([], 0, [], len(left_out))
    if not frames:
        return result
    table = pd.concat(frames).pivot_table(index=["experiment", "driver", "metric"], columns="kernel",
                                          values="per_packet", aggfunc="sum", dropna=False)
    rows, one_sided = result.rows, result.one_sided
    ref = labels[0]
    for (experiment, driver, metric), values in table.iterrows():
        vals = {lb: _finite(values.get(lb)) for lb in labels}
        if all(v is None for v in vals.values()):
            continue  # a combination the pivot made up
        if any(v is None for v in vals.values()):
            # A function or counter one kernel does not have (renamed, another rx queue): listed apart.
            one_sided.append(f"{experiment}/{driver}/{metric} (" + ", ".join(
                lb for lb in labels if vals[lb] is not None) + ")")
            continue
        deltas = {lb: vals[lb] - vals[ref] for lb in labels[1:]}
        if any(tol.moved(vals[ref], vals[lb]) for lb in labels[1:]):
            rows.append({"experiment": experiment, "driver": driver, "metric": metric, "values": vals,
                         "delta": deltas})
        else:
            result.same += 1
    return result


def _finite(x: object) -> float | None:
    try:
        v = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _nan_to_none(x: object) -> object:
    return None if isinstance(x, float) and x != x else str(x)


def _signed(x: float | None, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and x != x):
        return ""
    return f"{x:+.{digits}f}"


def render_matrix_markdown(record: dict) -> str:
    labels = record["labels"]
    ref = record["reference"]
    lines = ["# igb page-based receive: the claims on several kernels", ""]
    for label in labels:
        k = record["kernels"][label]
        tally = ", ".join(f"{n} {v}" for v, n in k["tally"].items())
        lines.append(f"- **{label}**: {k['release']} ({k['source']}), {tally}, {k['wall_s']:.0f} s; "
                     f"details in [{label}/report.md]({label}/report.md)")
    lines += ["", "## Verdicts", "", "| claim | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
    for row in record["verdicts"]:
        lines.append(f"| {row['claim']} | " + " | ".join(row["verdicts"].get(label) or "—" for label in labels) + " |")
    rel, abs_ = record["tolerance"]["rel"], record["tolerance"]["abs"]
    lines += ["", f"## Figures (per received frame unless the name says otherwise; Δ against {ref}; "
              f"**bold**: a row that differs beyond ±{rel:.0%} and ±{abs_:g})", "",
              "| claim | figure | " + " | ".join(labels) + " | " + " | ".join(f"Δ {lb}" for lb in labels[1:]) + " |",
              "|---" * (2 + 2 * len(labels) - 1) + "|"]
    for m in record["metrics"]:
        values = [fmtnum(m["values"].get(label)) for label in labels]
        deltas = []
        for label in labels[1:]:
            d = _signed(m["delta"].get(label))
            deltas.append(f"**{d}**" if d and m["differs"] else d)
        lines.append(f"| {m['claim']} | {m['metric']} | " + " | ".join(values) + " | " + " | ".join(deltas) + " |")
    lines += ["", f"## Per-frame counts of every experiment that differ ({len(record['counts'])} differ, "
              f"{record['counts_same']} agree, {len(record['counts_one_sided'])} measured on some kernels only)", "",
              "| experiment | driver | count | " + " | ".join(labels) + " | "
              + " | ".join(f"Δ {lb}" for lb in labels[1:]) + " |", "|---" * (3 + 2 * len(labels) - 1) + "|"]
    for c in record["counts"]:
        lines.append(f"| {c['experiment']} | {c['driver']} | {c['metric']} | "
                     + " | ".join(fmtnum(c["values"][lb]) for lb in labels) + " | "
                     + " | ".join(_signed(c["delta"][lb]) for lb in labels[1:]) + " |")
    if record["counts_one_sided"]:
        lines += ["", "Measured on some kernels only (renamed functions, other rx queues): "
                  + "; ".join(record["counts_one_sided"])]
    lines += ["", BATCHING_NOTE.format(n=record["counts_batching"])]
    return "\n".join(lines) + "\n"
