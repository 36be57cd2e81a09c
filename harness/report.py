"""Write a run's results: results.json, measurements.csv/.json, report.md,
report.html (with matplotlib plots) and JUnit XML for CI."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import jinja2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from .claims.base import ClaimResult
from .claims.experiments import EXPERIMENTS
from .claims.lab import Lab
from .compare import Comparison
from .measure import save

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


def run_record(lab: Lab, results: list[ClaimResult], meta: dict) -> dict:
    experiments = []
    for name, m in lab.results.items():
        e = EXPERIMENTS[name]
        experiments.append({"name": name, "what": e.what, "variant": e.variant, "dma_mode": e.dma_mode,
                            "frames": m.traffic.received, "pps": m.traffic.result.pps, "seconds": m.seconds})
    return {**meta, "claims": [r.to_json() for r in results], "experiments": experiments,
            "failures": lab.failures, "boots": lab.boots,
            "tally": dict(Counter(r.verdict for r in results))}


def write_report(out: Path, lab: Lab, results: list[ClaimResult], meta: dict,
                 baseline: Comparison | None = None) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    record = run_record(lab, results, meta)
    if baseline is not None:
        record["baseline"] = baseline.to_dict()
    (out / "results.json").write_text(json.dumps(record, indent=2, default=str))
    table = lab.table()
    if not table.empty:
        save(table, out, "measurements")
    plots = make_plots(out, results)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True)
    env.filters["fmtnum"] = fmtnum
    (out / "report.html").write_text(env.get_template("report.html.j2").render(**record, plots=plots))
    (out / "report.md").write_text(render_markdown(record, plots, baseline))
    write_junit(out / "junit.xml", results, baseline)
    return record


def _value(results: list[ClaimResult], claim: str, what: str) -> float:
    for r in results:
        if r.id == claim:
            for c in r.checks:
                if c.what == what and c.value is not None:
                    return float(c.value)
    return math.nan


def make_plots(out: Path, results: list[ClaimResult]) -> list[Plot]:
    plots = []
    reuse = [
        ("igb stock", _value(results, "page-reuse", "igb rx DMA maps per frame (stock)")),
        ("igb, reuse patched out",
         _value(results, "page-reuse",
                "igb rx DMA maps per frame, kernel patched so igb_can_reuse_rx_page() is false")),
        ("e1000e (control)", _value(results, "page-reuse", "e1000e rx DMA maps per frame (control NIC, receiving)")),
    ]
    if any(not math.isnan(v) for _, v in reuse):
        fig, ax = plt.subplots(figsize=(7, 3.2), dpi=110)
        labels, values = zip(*reuse, strict=True)
        bars = ax.bar(labels, [0 if math.isnan(v) else v for v in values], color=["#2e7d32", "#c62828", "#1565c0"])
        for bar, v in zip(bars, values, strict=True):
            ax.annotate("n/a" if math.isnan(v) else f"{v:.3f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=10)
        ax.set_ylabel("rx DMA maps per received frame")
        ax.set_ylim(0, max(1.2, *[v for v in values if not math.isnan(v)]) * 1.1)
        ax.set_title("page-reuse: DMA maps per frame on the receive side")
        fig.tight_layout()
        fig.savefig(out / "page_reuse.png")
        plt.close(fig)
        plots.append(Plot("page-reuse, three ways", "Receive-side DMA maps per frame (kprobe on dma_map_page_attrs "
                          "keyed by device): stock igb, the same igb with igb_can_reuse_rx_page() patched to false, "
                          "and the e1000e receiving.", "page_reuse.png"))
    skb = [
        ("default", _value(results, "build-skb-vs-copy", "build_skb per frame (default)"),
         _value(results, "build-skb-vs-copy", "copying skb allocations per frame (default)")),
        ("legacy-rx", _value(results, "build-skb-vs-copy", "build_skb per frame (legacy-rx)"),
         _value(results, "build-skb-vs-copy", "copying skb allocations per frame (legacy-rx)")),
        ("XDP_DROP", _value(results, "xdp", "build_skb per frame under XDP_DROP"), math.nan),
        ("XDP_PASS", _value(results, "xdp", "build_skb per frame under XDP_PASS"), math.nan),
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
    return plots


def render_markdown(record: dict, plots: list[Plot], baseline: Comparison | None = None) -> str:
    k = record["kernel"]
    lines = [f"# igb page-based receive: claims on kernel {k['release']}", ""]
    if baseline is not None:
        lines += ["## Against the baseline", "", baseline.to_markdown(), ""]
    lines += [
             f"- kernel: {k['release']} ({k.get('source')}, key `{k['key']}`"
             + (f", patched with {', '.join(k['patches'])}" if k.get("patches") else "") + ")",
             f"- QEMU: {record['qemu']['version']}, accelerator {record['qemu']['accel']}",
             f"- run `{record['run_id']}`, {record['wall_s']:.0f} s wall: `{record['command']}`",
             f"- verdicts: {', '.join(f'{n} {v}' for v, n in record['tally'].items())}", "",
             "| claim | slide | verdict | rule |", "|---|---|---|---|"]
    for c in record["claims"]:
        lines.append(f"| {c['id']} | {c['slide']} | **{c['verdict']}** | {c['rule']} |")
    for c in record["claims"]:
        lines += ["", f"## {c['id']}: {c['verdict']}", "", c["title"], ""]
        lines += [f"- {e}" for e in c["explanation"]]
        lines += ["", "| check | measured | result | how measured |", "|---|---|---|---|"]
        for ch in c["checks"]:
            res = {True: "holds", False: "**fails**", None: "not measured"}[ch["holds"]]
            lines.append(f"| {ch['rule']} | {fmtnum(ch['value'])} | {res} | {ch['how']} |")
        lines += [f"- note: {n}" for n in c["notes"]]
    lines += ["", "## Plots", ""] + [f"![{p.title}]({p.file}) {p.caption}" for p in plots]
    return "\n".join(lines) + "\n"


def junit_suite(name: str, claims: list[dict], baseline: dict | None = None) -> ET.Element:
    """One <testsuite>: a testcase per claim (refuted = failure, inconclusive = skipped),
    plus one for the baseline comparison when there is one."""
    tally = Counter(c["verdict"] for c in claims)
    regressions = [ch for ch in (baseline or {}).get("changes", []) if ch.get("regression")]
    suite = ET.Element("testsuite", name=name, tests=str(len(claims) + (baseline is not None)),
                       failures=str(tally["refuted"] + bool(regressions)), skipped=str(tally["inconclusive"]),
                       errors="0", time=f"{sum(c['seconds'] for c in claims):.1f}")
    for c in claims:
        case = ET.SubElement(suite, "testcase", classname=f"{name}.claims", name=c["id"], time=f"{c['seconds']:.1f}")
        checks = [f"{ch['rule']}: measured {fmtnum(ch['value'])}" for ch in c["checks"]]
        details = "\n".join(checks + c["explanation"] + c["notes"])
        if c["verdict"] == "refuted":
            ET.SubElement(case, "failure", message=f"refuted: {c['rule']}").text = details
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


def write_junit(path: Path, results: list[ClaimResult], baseline: Comparison | None = None) -> None:
    suite = junit_suite("harness-claims", [r.to_json() for r in results],
                        baseline.to_dict() if baseline is not None else None)
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)


def write_junit_suites(path: Path, runs: list[tuple[str, dict]]) -> None:
    """A kernel matrix: one <testsuite> per kernel (named by its label)."""
    root = ET.Element("testsuites", name="harness-matrix")
    for label, record in runs:
        root.append(junit_suite(f"harness-claims.{label}", record["claims"], record.get("baseline")))
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
