"""`harness survey` on one kernel: a lab with every NIC asked for on the hub,
the survey's experiments, the barrier analysis of each driver, the files."""

from __future__ import annotations

import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from harness.artifacts.kernel_choice import KernelChoice
from harness.cache import Cache
from harness.claims.lab import ERROR, Lab
from harness.nics import nic
from harness.survey.driver_barriers import driver_barrier_cells
from harness.survey.files import write_survey
from harness.survey.techniques import SurveyResult, cells_for, peer_of, run_survey


@dataclass
class SurveyRun:
    result: SurveyResult
    errors: list[str]  # failed experiments (kernel reports, dead guests): the survey exits 5


def log(msg: str) -> None:
    print(f"harness: {msg}", file=sys.stderr, flush=True)


def survey_kernel(choice: KernelChoice, models: tuple[str, ...], cache: Cache, out: Path, accel: str,
                  cost: bool = False, measured: tuple[str, ...] | None = None) -> SurveyRun:
    """The survey of the `measured` NICs (default: every one of `models`, the hub: a
    shard of the nightly measures some of them with the same hub and peers)."""
    run_id = "survey-" + time.strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)
    started = time.monotonic()
    rows = measured or models
    lab = Lab(cache, run_id, choice=choice, accel=accel, nics=models)
    lab.prefetch_image()
    kernel = lab.kernel("stock")
    run_survey(lab, models, cost, rows)
    barriers = {m: driver_barrier_cells(kernel, nic(m), cache) for m in rows}
    kernel_meta = {"label": choice.label, "release": kernel.release, "key": kernel.key,
                   "source": kernel.meta.get("source"), "patches": kernel.meta.get("patches", []),
                   "wall_s": round(time.monotonic() - started, 1),
                   "bound": {n["mac"]: n["driver"] for b in lab.boots for n in b.get("nics", [])}}
    errors = [f.headline for f in lab.failures.values() if f.kind == ERROR]
    result = SurveyResult(kernel_meta, models, {m: cells_for(lab, m, barriers[m]) for m in rows},
                          {m: peer_of(m, models) for m in rows}, errors,
                          {"experiments": {name: round(m.seconds, 1) for name, m in lab.results.items()}})
    write_survey(out, result, lab.table())
    for e in errors:
        log(f"error: {e}")
    unmeasured = sum(1 for cells in result.cells.values() for c in cells.values() if c.value is None)
    log(f"survey of {', '.join(rows)} on {kernel.release}: {unmeasured} cells not measured (each says why), "
        f"{len(errors)} failed experiments, {time.monotonic() - started:.0f}s; report: {out / 'report.html'}")
    return SurveyRun(result, errors)
