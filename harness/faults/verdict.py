"""The rx-alloc-failure experiment's verdict per NIC, from what was recorded (pure:
unit-tested on recorded values)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from harness.measurement.leaks import PAGE_LEAK_FLOOR

PASS, FAIL, UNMEASURED = "pass", "fail", "unmeasured"


@dataclass
class FaultRow:
    nic: str
    verdict: str
    reasons: list[str]  # why it failed or is unmeasured; empty for pass
    figures: dict = field(default_factory=dict)  # metric -> value, as measured

    def to_json(self) -> dict:
        return {"nic": self.nic, "verdict": self.verdict, "reasons": self.reasons, **self.figures}


def _n(v: float | None) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def judge(model: str, values: dict[str, float], failure: tuple[str, str] | None = None) -> FaultRow:
    """`values`: the experiment's metrics (faults_injected:<kind>, faults_counted_by_driver,
    recovery_frames_*, dma_api_errors, leaked_driver_*); `failure`: (kind, headline) when
    the experiment has no measurement (an error: a kernel report or a leak; unmeasurable)."""
    if failure is not None:
        kind, headline = failure
        return FaultRow(model, UNMEASURED if kind == "unmeasurable" else FAIL, [headline])
    figures = {k: _n(v) for k, v in values.items()}
    injected = {k.split(":", 1)[1]: int(v) for k, v in values.items() if k.startswith("faults_injected:")}
    figures["injected"] = injected
    if not any(injected.values()):
        return FaultRow(model, UNMEASURED, ["no allocation under the driver's text failed while frames arrived "
                                            "(nothing eligible: the stack filter matched no call)"], figures)
    reasons = []
    counted = _n(values.get("faults_counted_by_driver"))
    if counted is not None and counted == 0:
        reasons.append(f"the driver counted none of the {sum(injected.values())} failures injected "
                       f"({', '.join(f'{k} {v}' for k, v in injected.items())})")
    sent, got = values.get("recovery_frames_sent", 0), values.get("recovery_frames_received", 0)
    if not sent or got < sent:
        reasons.append(f"no recovery: {int(got)} of {int(sent)} frames of the clean burst after injection arrived")
    for metric, what in (("dma_api_errors", "DMA-API errors"), ("leaked_driver_objects", "slab objects leaked"),
                         ("leaked_driver_pages", "pages leaked")):
        v = _n(values.get(metric))
        if metric == "leaked_driver_pages" and v is not None and v < PAGE_LEAK_FLOOR:
            v = None
        if v:
            reasons.append(f"{int(v)} {what}")
    if reasons:
        return FaultRow(model, FAIL, reasons, figures)
    if _n(values.get("dma_api_errors")) is None:
        # Absent or NaN: the checker was not counting, so "no DMA-API error" cannot be said.
        return FaultRow(model, UNMEASURED, ["the DMA-API checker did not count over the experiment (switched "
                                            "itself off, or not in this kernel): its error count is unknown"],
                        figures)
    return FaultRow(model, PASS, reasons, figures)
