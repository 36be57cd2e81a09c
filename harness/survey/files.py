"""The survey's files: survey.json (per NIC, per technique: the value, how it was
measured or why not), survey.csv (the same as rows), measurements.csv (every
raw row), report.md / report.html with the drivers x techniques table and a plot."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from harness.measurement.measure import save
from harness.nics import nic
from harness.outdir import write_text
from harness.report.cost_plots import plot_families
from harness.survey.techniques import COST_FAMILIES, SurveyResult

PLOTTED = (("rx-maps", "rx DMA maps"), ("page-allocs", "page allocations"), ("build-skb", "build_skb"),
           ("copy-allocs", "copying skb allocations"))


def fmt(v: object) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.0f}"
    return str(v)


def write_survey(out: Path, result: SurveyResult, table: pd.DataFrame) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "survey.json", json.dumps(result.to_json(), indent=1))
    write_text(out / "survey.csv", pd.DataFrame(result.rows()).to_csv(index=False))
    if not table.empty:
        save(table, out, "measurements")
    plots = [p for p in (plot_per_frame(out, result), plot_cost(out, result)) if p]
    write_text(out / "report.md", render_markdown(result, plots))
    write_text(out / "report.html", render_html(result, plots))


def plot_cost(out: Path, result: SurveyResult) -> str | None:
    """Instructions per frame on each driver's rx path, stacked by family (survey --cost)."""
    rows = {f"{m} ({nic(m).driver})": {f: v for f in COST_FAMILIES
                                        if isinstance(v := result.cells[m][f"cost-{f.replace(' ', '-')}"].value,
                                                      int | float)}
            for m in result.cells if f"cost-{COST_FAMILIES[0]}" in result.cells[m]}
    if not any(rows.values()):
        return None
    plot_families(out / "survey_cost.png", rows, "Each driver's rx path in instructions per frame, by family")
    return "survey_cost.png"


def plot_per_frame(out: Path, result: SurveyResult) -> str | None:
    models = list(result.cells)
    if not models:
        return None
    fig, ax = plt.subplots(figsize=(8, 3.4), dpi=110)
    width = 0.8 / len(PLOTTED)
    for i, (tid, label) in enumerate(PLOTTED):
        vals = [result.cells[m][tid].value for m in models]
        nums = [v if isinstance(v, int | float) and not math.isnan(v) else 0.0 for v in vals]
        bars = ax.bar([x + (i - (len(PLOTTED) - 1) / 2) * width for x in range(len(models))], nums, width, label=label)
        for bar, v in zip(bars, vals, strict=True):
            ax.annotate(fmt(v) if isinstance(v, float) else "n/a",
                        (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(models)), [f"{m}\n({nic(m).driver})" for m in models])
    ax.set_ylabel("per received frame")
    ax.set_title("What each driver pays per received frame (n/a: not measured, see the table)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "survey_per_frame.png")
    plt.close(fig)
    return "survey_per_frame.png"


def render_markdown(result: SurveyResult, plots: list[str]) -> str:
    models = list(result.cells)
    k = result.kernel
    lines = [f"# The talk's techniques, driver by driver: kernel {k.get('release')}", "",
             f"- kernel {k.get('release')} ({k.get('source')}, key `{k.get('key')}`)",
             "- each NIC receives from a peer on one private QEMU hub: " + ", ".join(
                 f"{m} <- {result.peers.get(m)}" for m in models),
             "- per received frame unless the row says otherwise; — means not measured, with the reason below", "",
             "| technique | unit | " + " | ".join(f"{m} ({nic(m).driver})" for m in models) + " |",
             "|---|---|" + "---|" * len(models)]
    for t in result.techniques:
        lines.append(f"| {t.title} | {t.unit} | " + " | ".join(fmt(result.cells[m][t.id].value) for m in models) + " |")
    lines += [""] + [f"![{p}]({p})" for p in plots]
    lines += ["", "## How each cell was measured, or why not", ""]
    for m in models:
        lines += [f"### {m}: {nic(m).title}", ""]
        for t in result.techniques:
            c = result.cells[m][t.id]
            lines.append(f"- {t.id}: {fmt(c.value)}: " + (c.how if c.value is not None else f"**not measured**: "
                                                          f"{c.why_not}"))
        lines.append("")
    return "\n".join(lines) + "\n"


def render_html(result: SurveyResult, plots: list[str]) -> str:
    models = list(result.cells)
    esc = html.escape
    head = "".join(f"<th>{esc(m)}<br><small>{esc(nic(m).driver)}</small></th>" for m in models)
    rows = []
    for t in result.techniques:
        cells = []
        for m in models:
            c = result.cells[m][t.id]
            tip = esc(c.how if c.value is not None else "not measured: " + c.why_not)
            cls = "" if c.value is not None else ' class="na"'
            cells.append(f'<td{cls} title="{tip}">{esc(fmt(c.value))}</td>')
        rows.append(f"<tr><td>{esc(t.title)}<br><small>{esc(t.group)}</small></td><td>{esc(t.unit)}</td>"
                    + "".join(cells) + "</tr>")
    details = []
    for m in models:
        items = "".join(f"<li><b>{esc(t.id)}</b>: {esc(fmt(result.cells[m][t.id].value))}: "
                        f"{esc(result.cells[m][t.id].how or 'not measured: ' + result.cells[m][t.id].why_not)}</li>"
                        for t in result.techniques)
        details.append(f"<h3>{esc(m)}: {esc(nic(m).title)}</h3><ul>{items}</ul>")
    k = result.kernel
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Survey: kernel {esc(str(k.get('release')))}</title>
<style>body {{ font: 14px/1.4 system-ui, sans-serif; margin: 2em auto; max-width: 1200px; }}
table {{ border-collapse: collapse; }} th, td {{ border: 1px solid #ccc; padding: .3em .5em; text-align: right; }}
td:first-child {{ text-align: left; }} .na {{ background: #fff0c2; color: #8a6d00; }} img {{ max-width: 100%; }}</style>
</head><body><h1>The talk's techniques, driver by driver: kernel {esc(str(k.get('release')))}</h1>
<p>Each NIC receives from a peer NIC on one private QEMU hub ({esc(', '.join(f'{m} from {p}' for m, p in
result.peers.items()))}); every count is attributed to its own driver. Per received frame unless the unit says
otherwise. A cell marked — was not measured: hover for why, or read the list below.</p>
<table><tr><th>technique</th><th>unit</th>{head}</tr>{''.join(rows)}</table>
{''.join(f'<p><img src="{p}" alt="{p}"></p>' for p in plots)}
<h2>How each cell was measured</h2>{''.join(details)}
<p>Raw rows: <a href="measurements.csv">measurements.csv</a>; cells: <a href="survey.json">survey.json</a>,
<a href="survey.csv">survey.csv</a>.</p></body></html>
"""
