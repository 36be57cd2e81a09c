"""Claims and verdicts. A verdict comes only from checks over numbers measured
in this run: every check is a readable rule (`metric op target`) with a stable
id; a failed check refutes the claim, a check whose number could not be
measured makes it inconclusive (saying why), a failed experiment the claim
needs (a kernel crash, a dead guest) makes it `error`, and all checks holding
confirm it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .lab import ExperimentFailure, Lab

CONFIRMED, REFUTED, INCONCLUSIVE, ERROR = "confirmed", "refuted", "inconclusive", "error"
VERDICTS = (CONFIRMED, REFUTED, INCONCLUSIVE, ERROR)


@dataclass(frozen=True)
class Check:
    id: str  # stable metric id (reports, baselines and plots look values up by it)
    what: str  # the measured quantity, in words
    value: float | None  # None: could not be measured (`unmeasured` says why)
    op: str  # "<", "<=", ">", ">=", "==", "~" (within rel_tol of target)
    target: float
    rel_tol: float = field(default=0.0, kw_only=True)
    how: str = field(default="", kw_only=True)  # how the value was measured
    unmeasured: str = field(default="", kw_only=True)  # why value is None

    def __post_init__(self) -> None:
        if self.value is not None and not isinstance(self.value, int | float):
            raise TypeError(f"check {self.what!r}: measured value {self.value!r} is not a number")

    def holds(self) -> bool | None:
        v = self.value
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return None
        return {
            "<": v < self.target, "<=": v <= self.target, ">": v > self.target, ">=": v >= self.target,
            "==": v == self.target, "~": math.isclose(v, self.target, rel_tol=self.rel_tol),
        }[self.op]

    @property
    def rule(self) -> str:
        tol = f"{self.rel_tol:.0%}" if self.rel_tol >= 0.01 else f"{self.rel_tol:.1%}"
        target = f"{self.target:g}" + (f" ±{tol}" if self.op == "~" else "")
        return f"{self.what} {'≈' if self.op == '~' else self.op} {target}"

    def describe(self) -> str:
        state = self.holds()
        v = "unavailable" if state is None else f"{self.value:.4g}"
        mark = {True: "holds", False: "FAILS", None: "not measured"}[state]
        why = f": {self.unmeasured}" if state is None and self.unmeasured else ""
        return f"{self.rule}: measured {v} ({mark}{why})"

    def to_json(self) -> dict:
        return {"id": self.id, "rule": self.rule, "value": self.value, "holds": self.holds(), "how": self.how,
                "unmeasured": self.unmeasured if self.holds() is None else ""}


@dataclass
class ClaimResult:
    id: str
    title: str
    slide: str
    checks: list[Check]
    explanation: list[str] = field(default_factory=list)  # one sentence per comparison shown
    notes: list[str] = field(default_factory=list)  # why inconclusive, caveats
    errors: list[ExperimentFailure] = field(default_factory=list)  # failed experiments this claim needs
    region: str = ""  # the traffic the claim speaks of
    sampled: list[dict] = field(default_factory=list)  # the experiments (traffic points) it was judged on
    seconds: float = 0.0
    # Measured figures beside the checks (no rule of their own), compared against baselines
    # like the checks' values: e.g. instructions per frame per function (cost_claims).
    figures: dict[str, float] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        """A failed experiment makes the claim `error` (its evidence is a crash or a
        dead guest, not a measurement); otherwise a failed check refutes even when
        another could not be measured; a claim is confirmed only when every check
        was measured and holds."""
        if self.errors:
            return ERROR
        states = [c.holds() for c in self.checks]
        if any(s is False for s in states):
            return REFUTED
        if not states or any(s is None for s in states):
            return INCONCLUSIVE
        return CONFIRMED

    @property
    def rule(self) -> str:
        return " AND ".join(c.rule for c in self.checks)

    @property
    def deciding_check(self) -> Check | None:
        """What a one-line summary shows: the first check that fails, else the first
        not measured, else the first."""
        for state in (False, None):
            for check in self.checks:
                if check.holds() is state:
                    return check
        return self.checks[0] if self.checks else None

    def summary(self) -> str:
        """One line: the error that decided, else the deciding check."""
        if self.errors:
            return self.errors[0].headline
        check = self.deciding_check
        return check.describe() if check else ""

    def check(self, check_id: str) -> Check:
        for c in self.checks:
            if c.id == check_id:
                return c
        raise KeyError(f"claim {self.id} has no check {check_id!r}")

    @property
    def metrics(self) -> dict[str, float | None]:
        return {c.id: c.value for c in self.checks} | self.figures

    def to_json(self) -> dict:
        return {
            "id": self.id, "title": self.title, "slide": self.slide, "verdict": self.verdict,
            "rule": self.rule, "metrics": self.metrics, "summary": self.summary(),
            "checks": [c.to_json() for c in self.checks],
            "explanation": self.explanation, "notes": self.notes,
            "errors": [e.to_json() for e in self.errors], "seconds": round(self.seconds, 1),
            "region": self.region, "sampled": self.sampled,
        }


class Claim(Protocol):
    id: str
    title: str
    slide: str
    region: str  # the traffic the claim speaks of, in words
    experiments: tuple[str, ...]  # every experiment its checks read (samples expanded)

    def evaluate(self, lab: Lab) -> ClaimResult: ...
