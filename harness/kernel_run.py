"""`harness run` on one kernel: the lab, the experiments, the verdicts, the one
results record, the report. An interrupted or failed run still writes what it
measured (marked partial) before it stops."""

from __future__ import annotations

import secrets
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from harness.artifacts.kernel_choice import KernelChoice
from harness.cache import Cache
from harness.claims.coverage import claim_coverage
from harness.claims.experiments import EXPERIMENTS
from harness.claims.lab import Lab
from harness.claims.runner import evaluate_claims, experiment_order, run_experiments
from harness.nics import DEFAULT_NICS
from harness.report.compare import Tolerance, compare_results
from harness.report.report import write_report
from harness.report.run_record import build_record, with_baseline


@dataclass
class KernelRun:
    label: str
    record: dict  # results.json
    table: pd.DataFrame  # every measurement row (measurements.csv)


def log(msg: str) -> None:
    print(f"harness: {msg}", file=sys.stderr, flush=True)


def run_kernel(choice: KernelChoice, claims: list, cache: Cache, out: Path, accel: str,
               baseline: dict | None, tol: Tolerance, *, keep: bool = False,
               nics: tuple[str, ...] = DEFAULT_NICS, coverage: bool = False) -> KernelRun:
    """The claims on one kernel; writes `out` and returns the run. `coverage`: the
    kernel is a gcov build (cli --coverage), and the record says per claim which
    lines and branches of igb its experiments executed."""
    from harness.smoke import qemu_version

    run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)
    started = time.monotonic()
    lab = Lab(cache, run_id, choice=choice, accel=accel, nics=nics, coverage=coverage)

    def meta() -> dict:
        kernel = lab.kernel("stock")
        return {
            "run_id": run_id, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "command": shlex.join(["harness", *sys.argv[1:]]), "wall_s": round(time.monotonic() - started, 1),
            "kernel": {"label": choice.label, "release": kernel.release, "key": kernel.key, **kernel.meta},
            "qemu": {"version": qemu_version(), "accel": lab.boots[0]["accel"] if lab.boots else "none"},
        }

    try:
        order = experiment_order(claims)
        if order:  # a guest will be needed
            lab.prefetch_image()
            lab.prefetch_kernels({EXPERIMENTS[e].variant for e in order})
        lab.kernel("stock")  # fail early on a kernel that cannot be had
        run_experiments(lab, claims)
    except BaseException as e:
        if lab.has_kernel("stock") and (lab.results or lab.failures):
            _write_partial(out, lab, claims, meta(), f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        raise
    finally:
        lab.close()
    evaluated = time.monotonic()
    results = evaluate_claims(lab, claims)
    lab.timings["evaluate"] = round(time.monotonic() - evaluated, 1)
    covered = claim_coverage(lab, claims) if coverage else None
    for experiment, objects in lab.gcov.items():  # the raw counts, for gcov by hand (with the .gcno kept)
        for stem, data in objects.items():
            (out / "gcov" / experiment).mkdir(parents=True, exist_ok=True)
            (out / "gcov" / experiment / f"{stem}.gcda").write_bytes(data)
    record = build_record(lab, results, meta(), coverage=covered)
    comparison = compare_results(baseline, record, tol) if baseline is not None else None
    if comparison is not None:
        record = with_baseline(record, comparison.to_dict())
    log(f"report written in {write_report(out, record, lab.table(), baseline=comparison):.1f}s")
    for r in results:
        print(f"  {r.verdict:12s} {r.id:18s} {r.summary()}")
    if comparison is not None:
        print(comparison.to_markdown())
    log(f"{choice.label}: {', '.join(f'{n} {v}' for v, n in record['tally'].items())} in "
        f"{record['wall_s']:.0f}s; report: {out / 'report.html'}")
    if keep:
        _keep(lab)
    return KernelRun(choice.label, record, lab.table())


def _write_partial(out: Path, lab: Lab, claims: list, meta: dict, why: str) -> None:
    """What was measured before the run stopped, judged and written, marked partial."""
    try:
        record = build_record(lab, evaluate_claims(lab, claims), meta, partial=True, stopped_by=why)
        write_report(out, record, lab.table())
        log(f"partial results written to {out} ({len(lab.results)} experiments measured)")
    except Exception as e:  # never hide the reason the run stopped behind one of these
        log(f"could not write the partial results: {e}")


def _keep(lab: Lab) -> None:
    """Boot the kernel under test again and hold it until Ctrl-C (the harness owns QEMU)."""
    from harness.investigate import prepare_guest, usage

    g = lab.guest("stock", "direct")
    try:
        prepare_guest(g, lab.cache)
        print(usage(g, "press Ctrl-C here to stop the guest"), file=sys.stderr, flush=True)
        while g.alive():
            time.sleep(1)
        log("the guest exited")
    except KeyboardInterrupt:
        log("stopping the kept guest")
    finally:
        lab.close()
