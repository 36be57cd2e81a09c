"""Write a run's results: results.json, measurements.csv/.json, report.md,
report.html (with matplotlib plots) and JUnit XML for CI."""

from __future__ import annotations

import json
import math
import time
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import jinja2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from harness.measurement.measure import save
from harness.outdir import write_bytes, write_text
from harness.report.compare import Comparison
from harness.report.cost_plots import cost_plots
from harness.selftests.ktap import claims_ktap

TEMPLATES = Path(__file__).resolve().parent / "templates"


@dataclass(frozen=True)
class Plot:
    title: str
    caption: str
    file: str


def fmtnum(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def write_report(out: Path, record: dict, table: pd.DataFrame, baseline: Comparison | None = None) -> float:
    """Every file of one kernel's run, from its record (and the measurement table),
    which is complete when it comes here (its baseline comparison included: the exit
    status reads the record, never what a writer added) and is not changed. Returns
    the seconds the writing took."""
    started = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    if not table.empty:
        save(table, out, "measurements")
    plots = make_plots(out, record)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True)
    env.filters["fmtnum"] = fmtnum
    covered = {c["id"]: coverage_lines(rows) for c in record["claims"]
               if (rows := record.get("coverage", {}).get(c["id"])) is not None}
    write_text(out / "report.html", env.get_template("report.html.j2").render(
        **record, plots=plots, witness=witness_summary(record), af_xdp=af_xdp_rows(record), af_xdp_how=AF_XDP_HOW,
        af_xdp_stats=AF_XDP_STATS, coverage_caveat=COVERAGE_CAVEAT if "coverage" in record else "", covered=covered))
    write_text(out / "report.md", render_markdown(record, plots, baseline))
    write_junit(out / "junit.xml", record, baseline)
    write_text(out / "results.ktap", claims_ktap(record["claims"]))
    write_text(out / "results.json", json.dumps(record, indent=2, default=str))  # last: it says the others exist
    return time.monotonic() - started


def metric(record: dict, claim: str, check_id: str) -> float:
    """A check's measured value by claim and check id (NaN when not measured or absent)."""
    for c in record["claims"]:
        if c["id"] == claim:
            v = c["metrics"].get(check_id)
            return math.nan if v is None else float(v)
    return math.nan


def make_plots(out: Path, record: dict) -> list[Plot]:
    plots = []
    reuse = [
        ("igb stock", metric(record, "page-reuse", "igb-rx-maps-per-frame")),
        ("igb, receiver\nholds its skbs", metric(record, "page-reuse", "held-skbs-maps-per-frame")),
        ("igb, reuse\npatched out", metric(record, "page-reuse", "no-reuse-maps-per-frame")),
        ("e1000e (control)", metric(record, "page-reuse", "e1000e-rx-maps-per-frame")),
    ]
    if any(not math.isnan(v) for _, v in reuse):
        fig, ax = plt.subplots(figsize=(7, 3.2), dpi=110)
        labels, values = zip(*reuse, strict=True)
        bars = ax.bar(labels, [0 if math.isnan(v) else v for v in values],
                      color=["#2e7d32", "#f9a825", "#c62828", "#1565c0"])
        for bar, v in zip(bars, values, strict=True):
            ax.annotate("n/a" if math.isnan(v) else f"{v:.3f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=10)
        ax.set_ylabel("rx DMA maps per received frame")
        ax.set_ylim(0, max(1.2, *[v for v in values if not math.isnan(v)]) * 1.1)
        ax.set_title("page-reuse: DMA maps per frame on the receive side")
        fig.tight_layout()
        fig.savefig(out / "page_reuse.png")
        plt.close(fig)
        plots.append(Plot("page-reuse, four ways", "Receive-side DMA maps per frame (dma:dma_map_page events keyed "
                          "by device): stock igb, the same igb with a receiver that holds every skb (a page serves "
                          "its two halves, then is given up), igb with igb_can_reuse_rx_page() patched to false, "
                          "and the e1000e receiving.", "page_reuse.png"))
    skb = [
        ("default", metric(record, "build-skb-vs-copy", "default-build-skb"),
         metric(record, "build-skb-vs-copy", "default-copy-allocs")),
        ("legacy-rx", metric(record, "build-skb-vs-copy", "legacy-build-skb"),
         metric(record, "build-skb-vs-copy", "legacy-copy-allocs")),
        ("XDP_DROP", metric(record, "xdp", "drop-build-skb"), math.nan),
        ("XDP_PASS", metric(record, "xdp", "pass-build-skb"), math.nan),
    ]
    if any(not math.isnan(b) for _, b, _ in skb):
        fig, ax = plt.subplots(figsize=(7, 3.2), dpi=110)
        xs = range(len(skb))
        for offset, idx, label, color in ((-0.2, 1, "build_skb (skb around the rx page)", "#2e7d32"),
                                          (0.2, 2, "copying skb allocations", "#ef6c00")):
            vals = [row[idx] for row in skb]
            bars = ax.bar([x + offset for x in xs], [0 if math.isnan(v) else v for v in vals], 0.4,
                          label=label, color=color)
            for bar, v in zip(bars, vals, strict=True):
                ax.annotate("n/a" if math.isnan(v) else f"{v:.2f}",
                            (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom",
                            fontsize=8)
        ax.set_xticks(list(xs), [name for name, _, _ in skb])
        ax.set_ylabel("calls per received frame")
        ax.set_ylim(0, 1.35)
        ax.legend(fontsize=8, loc="upper right")
        ax.set_title("skb construction under igb_poll")
        fig.tight_layout()
        fig.savefig(out / "skb_paths.png")
        plt.close(fig)
        plots.append(Plot("skb construction per frame", "function_graph under igb_poll: build_skb by default, a "
                          "separate skb to copy into with legacy-rx, none at all under XDP_DROP.", "skb_paths.png"))
    for claim in record["claims"]:
        if claim["id"] == "rx-cost":
            cost_plots(out, claim, lambda title, caption, file: plots.append(Plot(title, caption, file)))
    return plots


def problems_markdown(record: dict) -> list[str]:
    """The run's failures first: crashed or failed experiments, kernel reports, partial results."""
    lines = []
    if record.get("partial"):
        lines.append("- **partial results**: the run stopped before every experiment ran "
                     f"({record.get('stopped_by', 'interrupted')}); what did not run is unmeasured")
    for name, f in record.get("failures", {}).items():
        if f["kind"] == "error":
            lines.append(f"- **error** in experiment `{name}`: {f['headline']}")
            for r in f["reports"][:1]:
                lines += ["", "```", *r["lines"][:30], "```", ""]
    for r in record.get("kernel_reports", []):
        if r["counted_as"] == "evidence":
            lines.append(f"- DMA-API report during `{r['experiment']}` (evidence for the DMA claims): "
                         f"{r['fingerprint']}")
    lines += [f"- **error**: {e}" for e in record.get("run_errors", [])]
    lines += [f"- QEMU itself aborted during {a['during']} ({a['fingerprint']}, {a['exit_status']}): {a['then']}"
              for a in record.get("qemu_aborts", [])]
    return lines


def witness_summary(record: dict) -> str | None:
    """One line on the device witness: how many experiments it covered, and any
    where the frames QEMU's model wrote differ from the frames the driver counted."""
    seen = [(e["name"], e["device_witness"]) for e in record.get("experiments", []) if e.get("device_witness")]
    if not seen:
        return None
    off = [f"{name}: {w['driver']}'s model wrote {w['written']}, the driver counted {w['counted']}"
           for name, w in seen if w["written"] != w["counted"]]
    return (f"device witness: frames QEMU's NIC model wrote = frames the driver counted in {len(seen) - len(off)} "
            f"of {len(seen)} experiments" + (" (differences: " + "; ".join(off) + ")" if off else ""))


AF_XDP_HOW = ("delivered: the socket's rx ring producer index, which the kernel writes; read: frames the receiver "
              "(xsk_rx) took off the ring; unread: entries left on the ring once it drained; statistics: getsockopt "
              "XDP_STATISTICS; each the difference of the receiver's snapshots just before and after the traffic")
AF_XDP_STATS = ("rx_dropped", "rx_ring_full", "rx_fill_ring_empty_descs", "rx_invalid_descs")


def af_xdp_rows(record: dict) -> list[dict]:
    """One row per experiment with an AF_XDP socket: frames the driver received, the
    kernel delivered to the socket and the receiver read, and the socket's statistics."""
    return [{"experiment": e["name"], "mode": "zero-copy" if s.get("zerocopy") else "copy", "frames": e["frames"],
             "delivered": s["delivered"], "read": s["read"], "unread": s["unread"], "wakeups": s.get("wakeups", 0),
             **{k: s["stats"].get(k) for k in AF_XDP_STATS}}
            for e in record.get("experiments", []) if (s := e.get("af_xdp"))]


def af_xdp_markdown(record: dict) -> list[str]:
    rows = af_xdp_rows(record)
    if not rows:
        return []
    lines = ["## AF_XDP sockets", "", AF_XDP_HOW + ".", "",
             "| experiment | in effect | frames the driver received | delivered to the socket | read | unread | "
             + " | ".join(AF_XDP_STATS) + " | wakeups |", "|---" * (7 + len(AF_XDP_STATS)) + "|"]
    for r in rows:
        lines.append(f"| {r['experiment']} | {r['mode']} | {r['frames']} | {r['delivered']} | {r['read']} | "
                     f"{r['unread']} | " + " | ".join(str(r[k]) for k in AF_XDP_STATS) + f" | {r['wakeups']} |")
    return ["", *lines]


def retried_markdown(record: dict) -> list[str]:
    return [f"- `{e['name']}` was measured a second time; the first attempt failed: {why}"
            for e in record.get("experiments", []) for why in e.get("retried", [])]


def sampled_markdown(claim: dict) -> list[str]:
    """The traffic the claim speaks of and the experiments (points) it was judged on."""
    if not claim.get("region"):
        return []
    return ["", f"Traffic it speaks of: {claim['region']}. Sampled at:", "",
            *[f"- `{s['experiment']}`: {s['what']}" for s in claim.get("sampled", [])]]


# What a --coverage run's verdicts are (measured: tx-bulking's burst of 32 wrote the tail
# 0.074 times per frame on the instrumented igb of 6.12.95, 0.031 on the plain one).
COVERAGE_CAVEAT = ("coverage run: igb is gcov-instrumented, so these verdicts are the instrumented driver's; "
                   "a slower driver changes timing-sensitive counts (BQL stopping the tx queue mid-burst); "
                   "judge the kernel on a plain run")


def coverage_lines(rows: list[dict] | None) -> list[str]:
    """Per covered file: the lines and branches of the claim's functions its experiments ran."""
    out = []
    for r in rows or []:
        name = r["file"].rsplit("/", 1)[-1]
        if r.get("unmeasured"):
            out.append(f"{name}: not measured ({r['unmeasured']})")
            continue
        never = ", ".join(map(str, r["never_run"])) + (" ..." if r["never_run_total"] > len(r["never_run"]) else "")
        out.append(f"{name} ({', '.join(r['functions'])}): {r['lines']} of {r['of_lines']} lines and "
                   f"{r['branches']} of {r['of_branches']} branches executed by {', '.join(r['experiments'])}"
                   + (f"; never run: lines {never}" if never else ""))
    return out


def coverage_markdown(rows: list[dict] | None) -> list[str]:
    if rows is None:
        return []
    return ["", "Coverage (gcov, a --coverage kernel: igb instrumented):", "",
            *[f"- {line}" for line in coverage_lines(rows) or ["no instrumented driver code for this claim"]]]


def debug_line(debug: dict) -> str:
    leaks = debug.get("leaks") or []
    return (f"kernel flavour: {debug['flavour']}; kmemleak and page_owner checked after "
            f"{debug['experiments_checked']} experiments: "
            + (f"leaks in {', '.join(leaks)}" if leaks else "nothing leaked from the drivers under test"))


def render_markdown(record: dict, plots: list[Plot], baseline: Comparison | None = None) -> str:
    k = record["kernel"]
    lines = [f"# igb page-based receive: claims on kernel {k['release']}", ""]
    problems = problems_markdown(record)
    if problems:
        lines += ["## Failures and kernel reports", "", *problems, ""]
    if baseline is not None:
        lines += ["## Against the baseline", "", baseline.to_markdown(), ""]
    lines += [
             f"- kernel: {k['release']} ({k.get('source')}, key `{k['key']}`"
             + (f", patched with {', '.join(k['patches'])}" if k.get("patches") else "") + ")",
             f"- QEMU: {record['qemu']['version']}, accelerator {record['qemu']['accel']}",
             f"- run `{record['run_id']}`, {record['wall_s']:.0f} s wall: `{record['command']}`",
             f"- verdicts: {', '.join(f'{n} {v}' for v, n in record['tally'].items())}",
             *([f"- {COVERAGE_CAVEAT}"] if "coverage" in record else []),
             *([f"- {debug_line(record['debug'])}"] if "debug" in record else []),
             *([f"- {w}"] if (w := witness_summary(record)) else []), "",
             "| claim | slide | verdict | rule |", "|---|---|---|---|"]
    for c in record["claims"]:
        lines.append(f"| {c['id']} | {c['slide']} | **{c['verdict']}** | {c['rule']} |")
    for c in record["claims"]:
        lines += ["", f"## {c['id']}: {c['verdict']}", "", c["title"], ""]
        lines += [f"- **error**: {e['headline']}" for e in c.get("errors", [])]
        lines += [f"- {e}" for e in c["explanation"]]
        lines += sampled_markdown(c)
        lines += coverage_markdown(record.get("coverage", {}).get(c["id"]))
        lines += ["", "| check | measured | result | how measured |", "|---|---|---|---|"]
        for ch in c["checks"]:
            res = {True: "holds", False: "**fails**", None: "not measured"}[ch["holds"]]
            if ch["holds"] is None and ch.get("unmeasured"):
                res += f": {ch['unmeasured']}"
            lines.append(f"| {ch['rule']} | {fmtnum(ch['value'])} | {res} | {ch['how']} |")
        lines += [f"- note: {n}" for n in c["notes"]]
    lines += af_xdp_markdown(record)
    if retried := retried_markdown(record):
        lines += ["", "## Experiments measured twice", "", *retried]
    lines += ["", "## Plots", ""] + [f"![{p.title}]({p.file}) {p.caption}" for p in plots]
    return "\n".join(lines) + "\n"


def junit_suite(name: str, claims: list[dict], baseline: dict | None = None) -> ET.Element:
    """One <testsuite>: a testcase per claim (refuted = failure, error = error,
    inconclusive = skipped), plus one for the baseline comparison when there is one."""
    tally = Counter(c["verdict"] for c in claims)
    regressions = [ch for ch in (baseline or {}).get("changes", []) if ch.get("regression")]
    suite = ET.Element("testsuite", name=name, tests=str(len(claims) + (baseline is not None)),
                       failures=str(tally["refuted"] + bool(regressions)), skipped=str(tally["inconclusive"]),
                       errors=str(tally["error"]), time=f"{sum(c['seconds'] for c in claims):.1f}")
    for c in claims:
        case = ET.SubElement(suite, "testcase", classname=f"{name}.claims", name=c["id"], time=f"{c['seconds']:.1f}")
        checks = [f"{ch['rule']}: measured {fmtnum(ch['value'])}" for ch in c["checks"]]
        details = "\n".join(checks + c["explanation"] + c["notes"])
        if c["verdict"] == "error":
            errors = c.get("errors", [])
            ET.SubElement(case, "error", message="; ".join(e["headline"] for e in errors)[:500]).text = "\n".join(
                [details] + [line for e in errors for r in e["reports"][:1] for line in r["lines"]])
        elif c["verdict"] == "refuted":
            ET.SubElement(case, "failure", message=f"refuted: {c.get('summary') or c['rule']}").text = details
        elif c["verdict"] == "inconclusive":
            ET.SubElement(case, "skipped", message="inconclusive: " + "; ".join(c["notes"])[:500]).text = details
        else:
            ET.SubElement(case, "system-out").text = details
    if baseline is not None:
        case = ET.SubElement(suite, "testcase", classname=f"{name}.baseline", name="against-baseline", time="0")
        lines = [ch["text"] for ch in baseline.get("changes", [])]
        if regressions:
            ET.SubElement(case, "failure", message=f"{len(regressions)} regressions against "
                          f"{baseline.get('base', 'the baseline')}").text = "\n".join(lines)
        else:
            ET.SubElement(case, "system-out").text = "\n".join(lines) or "no change beyond tolerance"
    return suite


def write_junit(path: Path, record: dict, baseline: Comparison | None = None) -> None:
    suite = junit_suite("harness-claims", record["claims"], baseline.to_dict() if baseline is not None else None)
    write_bytes(path, ET.tostring(suite, encoding="utf-8", xml_declaration=True))


def write_junit_suites(path: Path, runs: list[tuple[str, dict]]) -> None:
    """A kernel matrix: one <testsuite> per kernel (named by its label)."""
    root = ET.Element("testsuites", name="harness-matrix")
    for label, record in runs:
        root.append(junit_suite(f"harness-claims.{label}", record["claims"], record.get("baseline")))
    write_bytes(path, ET.tostring(root, encoding="utf-8", xml_declaration=True))
