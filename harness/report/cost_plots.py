"""The rx-cost claim's plots: instructions per frame on the rx path by function
family for each experiment of the claim (stacked bars), and the most expensive
functions of the stock rx path (bars). Read from the claim's figures in the run
record (`<experiment>/instructions/tcg-plugin:rx:...`)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import matplotlib.pyplot as plt

from harness.measurement.cost import METRIC

FAMILY = re.compile(rf"^(?P<exp>[^/]+)/{re.escape(METRIC)}:rx:family:(?P<family>.+)/(?P<driver>[^/]+)$")
FUNCTION = re.compile(rf"^(?P<exp>[^/]+)/{re.escape(METRIC)}:rx:fn:(?P<fn>.+)/(?P<driver>[^/]+)$")
TOP_FUNCTIONS = 15


def by_family(figures: dict[str, float]) -> dict[str, dict[str, float]]:
    """experiment -> family -> rx instructions per frame."""
    out: dict[str, dict[str, float]] = {}
    for key, value in figures.items():
        if (m := FAMILY.match(key)) and value is not None:
            out.setdefault(m["exp"], {})[m["family"]] = value
    return out


def top_functions(figures: dict[str, float], experiment: str, n: int = TOP_FUNCTIONS) -> list[tuple[str, float]]:
    rows = [(m["fn"], v) for k, v in figures.items() if (m := FUNCTION.match(k)) and m["exp"] == experiment and v]
    return sorted(rows, key=lambda kv: -kv[1])[:n]


def plot_families(path: Path, rows: dict[str, dict[str, float]], title: str) -> None:
    """Horizontal bars, one per row label, stacked by family, the total at the end."""
    names = sorted({f for fams in rows.values() for f in fams})
    labels = list(rows)
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(labels) + 2.4), dpi=110)
    left = [0.0] * len(labels)
    cmap = plt.get_cmap("tab20")
    for i, fam in enumerate(names):
        vals = [rows[label].get(fam, 0.0) for label in labels]
        ax.barh(labels, vals, left=left, label=fam, color=cmap(i % 20))
        left = [a + b for a, b in zip(left, vals, strict=True)]
    for y, total in enumerate(left):
        ax.annotate(f"{total:.0f}", (total, y), va="center", fontsize=8, xytext=(3, 0), textcoords="offset points")
    ax.set_xlabel("rx instructions per frame (QEMU TCG plugin)")
    ax.invert_yaxis()
    ax.legend(fontsize=7, ncol=5, loc="upper center", bbox_to_anchor=(0.5, -0.18), frameon=False)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def cost_plots(out: Path, claim: dict, plot: Callable[[str, str, str], None]) -> None:
    """Writes the plots of an rx-cost claim into `out`; `plot(title, caption, file)` records each."""
    figures = claim.get("metrics", {})
    families = by_family(figures)
    if families:
        plot_families(out / "rx_cost_families.png", families, "rx path cost by function family")
        plot("rx cost by family", "Guest instructions per received frame executed in the receiver's NAPI poll "
             "(its tx clean and interrupts taken meanwhile excepted), by family of the function they ran in; "
             "counted by QEMU's TCG plugin, one traffic regime.", "rx_cost_families.png")
    top = top_functions(figures, "rx-cost")
    if top:
        fig, ax = plt.subplots(figsize=(8, 0.3 * len(top) + 1.2), dpi=110)
        ax.barh([fn for fn, _ in top], [v for _, v in top], color="#1565c0")
        for y, (_, v) in enumerate(top):
            ax.annotate(f"{v:.0f}", (v, y), va="center", fontsize=8, xytext=(3, 0), textcoords="offset points")
        ax.invert_yaxis()
        ax.tick_params(axis="y", labelsize=8)
        ax.set_xlabel("instructions per frame")
        ax.set_title("igb rx path (stock, 60-byte frames): the most expensive functions")
        fig.tight_layout()
        fig.savefig(out / "rx_cost_functions.png")
        plt.close(fig)
        plot("rx cost by function", "The functions of igb's rx path with the most instructions per frame (stock "
             "kernel, 60-byte frames), counted by QEMU's TCG plugin.", "rx_cost_functions.png")
