"""Compare the results of two `harness run`s (a baseline check) or of several (a kernel matrix).

Pure logic on the `results.json` records written by `harness.report`: claims are
matched by id, metrics by name. A verdict that changed, a claim that went missing
and a metric that moved beyond the tolerance are regressions; claims and metrics
only the new run has are reported but do not fail the comparison.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

RESULTS_NAME = "results.json"

CHANGE_KINDS = ("verdict", "inconclusive", "metric", "claim-missing", "claim-new", "metric-missing", "metric-new")
REGRESSION_KINDS = frozenset({"verdict", "inconclusive", "metric", "claim-missing", "metric-missing"})


def load_results(path: Path) -> dict:
    """Read a run's results.json (or DIR/results.json); a user error raises HarnessError naming the path."""
    path = Path(path)
    file = path / RESULTS_NAME if path.is_dir() else path
    hint = "give a results.json written by `harness run` or its directory"
    if not file.is_file():
        raise HarnessError(f"{file} not found: {hint}")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise HarnessError(f"{file} is not valid UTF-8 (byte {e.start}): {hint}") from e
    except OSError as e:
        raise HarnessError(f"cannot read {file}: {e.strerror or e}") from e
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise HarnessError(f"{file} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}): {hint}") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("claims"), list):
        raise HarnessError(f'{file} is not a harness result (no "claims" list): {hint}')
    for i, claim in enumerate(doc["claims"]):
        if not isinstance(claim, dict) or not isinstance(claim.get("id"), str):
            raise HarnessError(f'{file} is not a harness result (claim #{i + 1} has no "id"): {hint}')
    return doc


def run_label(results: dict) -> str:
    """`6.12.95 (20261125T110631-a40910)`: the kernel release and run id of a run, as far as it records them."""
    kernel = results.get("kernel") or {}
    release = kernel.get("release") if isinstance(kernel, dict) else None
    run_id = results.get("run_id")
    if release and run_id:
        return f"{release} ({run_id})"
    return str(release or run_id or "unlabelled run")


# Why these bounds: the per-frame counts come from 5,000-10,000 received frames
# and repeat within +-2 % from run to run (TCG timing moves the odd refill or
# interrupt, not the per-frame work), hence rel = 2 %. Near zero a relative bound
# is meaningless (page allocations per frame under TCG are 0.004 in one run and
# 0.017 in the next: +325 %, yet both mean "none"), hence the absolute floor,
# in the metric's own unit.
@dataclass(frozen=True)
class Tolerance:
    """A metric moved when |new - old| > max(rel * |old|, abs)."""

    rel: float = 0.02
    abs: float = 0.02

    def __post_init__(self) -> None:
        for name in ("rel", "abs"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise HarnessError(f"tolerance {name} must be a finite number >= 0, not {value!r}")

    def bound(self, old: float) -> float:
        """The largest |new - old| that still counts as unchanged."""
        return max(self.rel * abs(old), self.abs)

    def moved(self, old: float, new: float) -> bool:
        # The epsilon keeps a delta of exactly the bound (1.00 -> 1.02) from counting through float rounding.
        return abs(new - old) > self.bound(old) + 1e-12 * max(abs(old), abs(new), 1.0)

    def describe(self) -> str:
        return f"rel {self.rel * 100:g} %, abs {self.abs:g}"


DEFAULT_TOLERANCE = Tolerance()
# Instruction counts (the cost probe: QEMU's TCG plugin) repeat within 0.5 % in separate
# guests (scripts/cost_determinism.py), so they have their own, tighter bound: a change
# beyond 1 % of a figure, or beyond one instruction per frame near zero, is flagged.
COST_TOLERANCE = Tolerance(rel=0.01, abs=1.0)


def tolerance_for(metric: str, tol: Tolerance) -> Tolerance:
    return COST_TOLERANCE if "instructions/" in metric else tol


def _norm(value: Any) -> Any:
    """NaN and None both mean "not measured" (None); ints become floats; anything else is kept."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return value


def _is_num(value: Any) -> bool:
    return isinstance(value, float) and math.isfinite(value)


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if _is_num(value):
        return f"{value:.4f}" if abs(value) < 1e6 else f"{value:.6g}"
    return str(value)


def _metric_delta(old: Any, new: Any, tol: Tolerance) -> tuple[bool, float | None, float | None, float | None]:
    """(moved, delta, rel, bound) of a metric's normalised values; delta/rel/bound are None when not computable."""
    if _is_num(old) and _is_num(new):
        delta = new - old
        rel = delta / abs(old) if old != 0 else None
        return tol.moved(old, new), delta, rel, tol.bound(old)
    return old != new, None, None, None


@dataclass
class Change:
    """One difference between the base and the new run."""

    kind: str
    claim: str
    metric: str = ""
    old: Any = None
    new: Any = None
    delta: float | None = None
    rel: float | None = None
    tolerance: float | None = None  # the absolute bound the metric was held to (metric changes)

    def __post_init__(self) -> None:
        if self.kind not in CHANGE_KINDS:
            raise ValueError(f"unknown change kind {self.kind!r}; one of {', '.join(CHANGE_KINDS)}")

    @property
    def is_regression(self) -> bool:
        return self.kind in REGRESSION_KINDS

    def change_text(self) -> str:
        """The "change" column: what happened, without the claim, metric and values."""
        if self.kind in ("verdict", "inconclusive"):
            return "became inconclusive" if self.kind == "inconclusive" else "verdict changed"
        if self.kind == "claim-missing":
            return "claim missing from the new run"
        if self.kind == "claim-new":
            return "new claim (informational)"
        if self.kind == "metric-missing":
            return "metric missing from the new run"
        if self.kind == "metric-new":
            return "new metric (informational)"
        if self.delta is None:
            if self.new is None:
                return "no longer measured"
            if self.old is None:
                return "now measured, was not"
            return "value changed"
        parts = [f"{self.delta:+.4f}"]
        if self.rel is not None:
            parts.append(f"{self.rel * 100:+.1f} %")
        if self.tolerance is not None:
            parts.append(f"tolerance ±{self.tolerance:.4f}")
        return ", ".join(parts)

    def describe(self) -> str:
        """One line for a kernel engineer, e.g. `barriers: verdict confirmed -> refuted`."""
        if self.kind in ("verdict", "inconclusive"):
            return f"{self.claim}: verdict {self.old} -> {self.new}"
        if self.kind == "claim-missing":
            return f"{self.claim}: claim missing from the new run (was {self.old})"
        if self.kind == "claim-new":
            return f"{self.claim}: new claim, not in the base run ({self.new})"
        if self.kind == "metric-missing":
            return f'{self.claim}: "{self.metric}" missing from the new run (was {_fmt(self.old)})'
        if self.kind == "metric-new":
            return f'{self.claim}: "{self.metric}" new metric, not in the base run ({_fmt(self.new)})'
        return f'{self.claim}: "{self.metric}" {_fmt(self.old)} -> {_fmt(self.new)} ({self.change_text()})'

    def to_dict(self) -> dict:
        return _json_ready({"kind": self.kind, "claim": self.claim, "metric": self.metric, "old": self.old,
                            "new": self.new, "delta": self.delta, "rel": self.rel, "tolerance": self.tolerance,
                            "regression": self.is_regression, "text": self.describe()})


def _json_ready(value: Any) -> Any:
    """NaN and infinities become None, recursively, so json.dumps(..., allow_nan=False) accepts the result."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    return value


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


@dataclass
class Comparison:
    """The changes of a new run against a base run."""

    base_label: str
    new_label: str
    tolerance: Tolerance
    changes: list[Change] = field(default_factory=list)
    compared_metrics: int = 0
    compared_claims: int = 0

    @property
    def regressions(self) -> list[Change]:
        return [c for c in self.changes if c.is_regression]

    @property
    def ok(self) -> bool:
        return not self.regressions

    def summary_line(self) -> str:
        """One line, e.g. `2 changes beyond tolerance (rel 2 %, abs 0.02) against 6.12.95 (r1) (...)`."""
        n = len(self.regressions)
        head = _plural(n, "change") if n else "no change"
        line = (f"{head} beyond tolerance ({self.tolerance.describe()}) against {self.base_label} "
                f"({_plural(self.compared_claims, 'claim')}, {_plural(self.compared_metrics, 'metric')} compared)")
        info = len(self.changes) - n
        if info:
            line += f"; {info} informational (new claims or metrics)"
        return line

    def to_markdown(self) -> str:
        """The summary line and, when anything changed, a table claim | metric | base | new | change."""
        lines = [self.summary_line()]
        if self.changes:
            lines += ["", f"| claim | metric | base ({_md_cell(self.base_label)}) | new ({_md_cell(self.new_label)}) "
                          "| change |", "|---|---|---|---|---|"]
            for c in self.changes:
                metric = {"verdict": "(verdict)", "inconclusive": "(verdict)", "claim-missing": "",
                          "claim-new": ""}.get(c.kind, c.metric)
                old = "absent" if c.kind in ("claim-new", "metric-new") else _fmt(c.old)
                new = "absent" if c.kind in ("claim-missing", "metric-missing") else _fmt(c.new)
                cells = [c.claim, metric, old, new, c.change_text()]
                lines.append("| " + " | ".join(_md_cell(x) for x in cells) + " |")
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict:
        """JSON-ready (NaN as None)."""
        return {"base": self.base_label, "new": self.new_label,
                "tolerance": {"rel": self.tolerance.rel, "abs": self.tolerance.abs},
                "ok": self.ok, "compared_claims": self.compared_claims, "compared_metrics": self.compared_metrics,
                "regressions": len(self.regressions), "summary": self.summary_line(),
                "changes": [c.to_dict() for c in self.changes]}


def _claims(results: dict) -> dict[str, dict]:
    """Claims by id, in run order (the first of a repeated id wins)."""
    out: dict[str, dict] = {}
    for claim in results.get("claims") or []:
        if isinstance(claim, dict) and "id" in claim:
            out.setdefault(str(claim["id"]), claim)
    return out


# Check ids a later harness renamed, by claim: a run recorded before compares under
# the new id. xsk-zero-copy (Dec 2026): the socket's frames are those the kernel
# delivered to its rx ring; a receiver that read fewer now fails the experiment.
RENAMED_CHECKS = {"xsk-zero-copy": {"zc-frames-received": "zc-frames-delivered",
                                    "copy-frames-received": "copy-frames-delivered"}}


def _metrics(claim: dict) -> dict[str, Any]:
    metrics = claim.get("metrics")
    renamed = RENAMED_CHECKS.get(str(claim.get("id")), {})
    return {renamed.get(str(k), str(k)): _norm(v) for k, v in metrics.items()} if isinstance(metrics, dict) else {}


def compare_results(base: dict, new: dict, tol: Tolerance = DEFAULT_TOLERANCE, *,
                    base_label: str | None = None, new_label: str | None = None) -> Comparison:
    """Changes of `new` against `base`: claims matched by id, metrics by name."""
    cmp = Comparison(base_label or run_label(base), new_label or run_label(new), tol)
    base_claims, new_claims = _claims(base), _claims(new)
    for cid, bc in base_claims.items():
        nc = new_claims.get(cid)
        if nc is None:
            cmp.changes.append(Change("claim-missing", cid, old=bc.get("verdict")))
            continue
        cmp.compared_claims += 1
        old_v, new_v = bc.get("verdict"), nc.get("verdict")
        if old_v != new_v:
            cmp.changes.append(Change("inconclusive" if new_v == "inconclusive" else "verdict", cid,
                                      old=old_v, new=new_v))
        bm, nm = _metrics(bc), _metrics(nc)
        for name, old in bm.items():
            if name not in nm:
                cmp.changes.append(Change("metric-missing", cid, name, old=old))
                continue
            cmp.compared_metrics += 1
            moved, delta, rel, bound = _metric_delta(old, nm[name], tolerance_for(name, tol))
            if moved:
                cmp.changes.append(Change("metric", cid, name, old, nm[name], delta, rel, bound))
        for name, value in nm.items():
            if name not in bm:
                cmp.changes.append(Change("metric-new", cid, name, new=value))
    for cid, nc in new_claims.items():
        if cid not in base_claims:
            cmp.changes.append(Change("claim-new", cid, new=nc.get("verdict")))
    return cmp


def _check_labels(runs: list[tuple[str, dict]]) -> list[str]:
    labels = [label for label, _ in runs]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise HarnessError(f"runs need distinct labels; repeated: {', '.join(dup)}")
    return labels


def metric_matrix(runs: list[tuple[str, dict]], tol: Tolerance = DEFAULT_TOLERANCE) -> list[dict]:
    """One row per (claim, metric) over the runs, in order of first appearance.

    Row: `claim`, `metric`, `values` {label: value or None}, `delta` and `rel` {label: vs the first run, or None}
    for every run after the first, `differs` (some run moved beyond `tol` from the first, or was measured
    on one side only) and `one_sided` (measured on some runs only). JSON-ready: NaN is None.
    """
    labels = _check_labels(runs)
    keys: dict[tuple[str, str], None] = {}
    per_run: list[dict[tuple[str, str], Any]] = []
    for _, results in runs:
        values = {}
        for cid, claim in _claims(results).items():
            for name, value in _metrics(claim).items():
                keys.setdefault((cid, name), None)
                values[(cid, name)] = value
        per_run.append(values)
    rows = []
    for key in keys:
        values = [pr.get(key) for pr in per_run]
        row: dict[str, Any] = {"claim": key[0], "metric": key[1], "values": dict(zip(labels, values, strict=True)),
                               "delta": {}, "rel": {}, "differs": False,
                               "one_sided": 0 < sum(map(_is_num, values)) < len(values)}
        for label, value in zip(labels[1:], values[1:], strict=True):
            moved, delta, rel, _ = _metric_delta(values[0], value, tolerance_for(key[1], tol))
            row["delta"][label], row["rel"][label] = delta, rel
            row["differs"] = row["differs"] or moved
        rows.append(_json_ready(row))
    return rows


def verdict_matrix(runs: list[tuple[str, dict]]) -> list[dict]:
    """One row per claim id over the runs: `claim`, `title`, `verdicts` {label: verdict or None}, `differs`."""
    labels = _check_labels(runs)
    claims = [_claims(results) for _, results in runs]
    ids: dict[str, str] = {}
    for per_run in claims:
        for cid, claim in per_run.items():
            ids.setdefault(cid, str(claim.get("title", "")))
    rows = []
    for cid, title in ids.items():
        verdicts = {label: (c[cid].get("verdict") if cid in c else None) for label, c in zip(labels, claims,
                                                                                              strict=True)}
        rows.append({"claim": cid, "title": title, "verdicts": verdicts,
                     "differs": len(set(verdicts.values())) > 1})
    return rows
