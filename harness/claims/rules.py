"""Reading measured numbers for the rules: None (not measured) instead of an
exception, so a missing experiment makes a check inconclusive, never passes it."""

from __future__ import annotations

import json

from ..measure import Measurement
from .lab import Lab

# An skb built around the rx page: napi_build_skb since 6.x's igb, build_skb in
# 6.1's. Neither calls the other, so the sum counts each skb once.
BUILD_SKB = ("calls:napi_build_skb", "calls:build_skb")
COPY_SKB_ALLOCS = ("calls:napi_alloc_skb", "calls:__napi_alloc_skb", "calls:__netdev_alloc_skb")
DMA_ATTR_SKIP_CPU_SYNC = 1 << 5  # include/linux/dma-mapping.h


def measured(lab: Lab, experiment: str) -> Measurement | None:
    return lab.results.get(experiment)


def value(lab: Lab, experiment: str, metric: str, driver: str) -> float | None:
    m = measured(lab, experiment)
    if m is None:
        return None
    try:
        return m.value(metric, driver)
    except KeyError:
        return None


def per_packet(lab: Lab, experiment: str, metric: str, driver: str) -> float | None:
    m = measured(lab, experiment)
    v = value(lab, experiment, metric, driver)
    return None if v is None or m is None or not m.traffic.received else v / m.traffic.received


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


def attr_fraction(lab: Lab, experiment: str, func: str, driver: str, bit: int,
                  direction: str | None = None) -> tuple[float | None, int]:
    """Fraction of `driver`'s calls of `func` (in DMA `direction`, e.g. "from_device",
    if given) whose attrs have `bit` set, and the call count."""
    d = detail(lab, experiment, f"{func}:attrs", driver)
    by = d.get("by_attrs") if direction is None else d.get("by_dir_attrs", {}).get(direction)
    if by is None:
        return None, 0
    total = sum(by.values())
    with_bit = sum(n for attrs, n in by.items() if int(attrs, 16) & bit)
    return (with_bit / total if total else None), total


def fmt(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"
