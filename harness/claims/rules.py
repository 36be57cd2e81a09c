"""Reading measured numbers for the rules. A number is None only when it was not
measured (the experiment failed or could not run, or this kernel has no such
probe), and `why_unmeasured` says which; a probe that ran and counted nothing
gives 0. A missing number makes a check inconclusive, never passes it."""

from __future__ import annotations

import json

from harness.measurement.measure import Measurement

from .lab import Lab

# An skb built around the rx page: napi_build_skb since 6.x's igb, build_skb in
# 6.1's. Neither calls the other, so the sum counts each skb once.
BUILD_SKB = ("calls:napi_build_skb", "calls:build_skb")
COPY_SKB_ALLOCS = ("calls:napi_alloc_skb", "calls:__napi_alloc_skb", "calls:__netdev_alloc_skb")
DMA_ATTR_SKIP_CPU_SYNC = 1 << 5  # include/linux/dma-mapping.h
RX = "from_device"  # the DMA direction of a driver's rx buffers


def measured(lab: Lab, experiment: str) -> Measurement | None:
    return lab.results.get(experiment)


def why_unmeasured(lab: Lab, *experiments: str) -> str:
    """Why a number from these experiments is missing: the first one's failure, or not run."""
    for e in experiments:
        if e in lab.failures:
            return lab.failures[e].headline
        if e not in lab.results:
            return f"experiment {e} was not run"
    return "this kernel had nothing to probe for it (see the experiment's untraceable_functions)"


def value(lab: Lab, experiment: str, metric: str, driver: str) -> float | None:
    m = measured(lab, experiment)
    if m is None:
        return None
    try:
        return m.value(metric, driver)
    except KeyError:
        return None


def frames(lab: Lab, experiment: str) -> int | None:
    m = measured(lab, experiment)
    return None if m is None else m.traffic.received


def per_packet(lab: Lab, experiment: str, metric: str, driver: str) -> float | None:
    v, n = value(lab, experiment, metric, driver), frames(lab, experiment)
    return None if v is None or not n else v / n


def per_packet_by_caller(lab: Lab, experiment: str, metric: str, driver: str,
                         callers: tuple[str, ...]) -> float | None:
    """Calls per frame made with one of `callers` as the innermost traced function
    open around them (function_graph's by_caller detail). A measurement recorded
    without that detail counts every call (never fewer than were made)."""
    total = per_packet(lab, experiment, metric, driver)
    by_caller = detail(lab, experiment, metric, driver).get("by_caller")
    if total is None or by_caller is None:
        return total
    n = frames(lab, experiment)
    return sum(c for f, c in by_caller.items() if f in callers) / n if n else None


def per_packet_sum(lab: Lab, experiment: str, metrics: tuple[str, ...], driver: str) -> float | None:
    """Sum over the metrics that were measured (functions absent from this kernel count as 0
    only if at least one of them was traceable)."""
    parts = [per_packet(lab, experiment, m, driver) for m in metrics]
    known = [p for p in parts if p is not None]
    return sum(known) if known else None


def detail(lab: Lab, experiment: str, metric: str, driver: str) -> dict:
    m = measured(lab, experiment)
    if m is None:
        return {}
    rows = m.rows(metric, driver)
    return json.loads(rows.iloc[0].detail) if not rows.empty and rows.iloc[0].detail else {}


def method(lab: Lab, experiment: str, metric: str, driver: str) -> str | None:
    """How the experiment measured the metric (the probe that ran on this kernel)."""
    m = measured(lab, experiment)
    if m is None:
        return None
    rows = m.rows(metric, driver)
    return str(rows.iloc[0].method) if not rows.empty and "method" in rows and rows.iloc[0].method else None


def attrs_by_direction(lab: Lab, experiments: tuple[str, ...], func: str, driver: str,
                       direction: str) -> tuple[dict[int, int], list[str]]:
    """attrs -> calls of `driver`'s `func` in `direction`, summed over the experiments
    that measured it, and the names of those experiments."""
    total: dict[int, int] = {}
    seen = []
    for e in experiments:
        d = detail(lab, e, f"{func}:attrs", driver)
        if "by_dir_attrs" not in d:
            continue
        seen.append(e)
        for attrs, n in d["by_dir_attrs"].get(direction, {}).items():
            total[int(attrs, 16)] = total.get(int(attrs, 16), 0) + n
    return total, seen


def fraction_with(attrs: dict[int, int], bit: int) -> float | None:
    n = sum(attrs.values())
    return None if not n else sum(c for a, c in attrs.items() if a & bit) / n


def callers(lab: Lab, experiments: tuple[str, ...], func: str, driver: str,
            direction: str | None = RX) -> dict[str, dict[int, int]]:
    """calling function -> {attrs: calls} of `driver`'s `func` (in `direction`), over the experiments."""
    out: dict[str, dict[int, int]] = {}
    for e in experiments:
        for row in detail(lab, e, f"{func}:callers", driver).get("by_caller", []):
            if direction is None or row["dir"] == direction:
                by = out.setdefault(row["caller"], {})
                by[int(row["attrs"], 16)] = by.get(int(row["attrs"], 16), 0) + row["count"]
    return out


def dma_api_errors(lab: Lab, experiments: tuple[str, ...], driver: str) -> tuple[float | None, list[str]]:
    """DMA-API errors that may be `driver`'s over the experiments (the reports naming
    it and every error counted but not printed), and their fingerprints. None when
    an experiment had no counting checker (CONFIG_DMA_API_DEBUG off, or switched off
    during it) or none was measured."""
    total, reports, measured_any = 0, [], False
    for e in experiments:
        m = measured(lab, e)
        if m is None or detail(lab, e, "dma_api_errors", "").get("off_at_boot"):
            continue  # the cost guest's: the checker kept off on purpose (its variants go unchecked)
        v = value(lab, e, "dma_api_errors", "")
        if v is None or v != v:  # NaN: no DMA-API debugging in this kernel, or it switched itself off
            return None, []
        measured_any = True
        d = detail(lab, e, "dma_api_errors", "")
        total += d.get("by_driver", {}).get(driver, 0) + d.get("unattributed", 0)
        reports += [f"{e}: {r['fingerprint']}" for r in d.get("reports", []) if driver in r["message"]]
    return (float(total) if measured_any else None), reports


def fmt(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"
