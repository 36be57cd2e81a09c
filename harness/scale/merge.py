"""`harness merge OUT... --out DIR`: shard outputs back into what one process would
have written. Claims: per kernel one record (results.json, report, JUnit, KTAP,
measurements) and, over several kernels, the matrix report on top, written by the
same writers `harness run` uses; the survey and the selftests: each kernel's output
kept whole under its kernel. A shard missing from the plan, a job or a claim
present twice, shards of one kernel that ran different kernel builds: each is
named, and makes the exit status non-zero."""

from __future__ import annotations

import json
import shutil
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from harness.errors import HarnessError
from harness.outdir import write_text
from harness.scale.plan import RECORDS, find_job, load_plan
from harness.scale.shard import SHARD_FILE

if TYPE_CHECKING:
    from harness.selftests.run import KernelSelftests
    from harness.survey.techniques import SurveyResult

# Exit statuses as `harness run` (cli.EXIT_*): a gap in the nightly is an error.
EXIT_REFUTED, EXIT_ERROR = 1, 5


def log(msg: str) -> None:
    print(f"harness: {msg}", file=sys.stderr, flush=True)


@dataclass
class ShardOut:
    path: Path
    kind: str  # claims / survey / selftests
    doc: dict  # its results.json / survey.json / selftests.json
    shard: dict | None  # its shard.json (None: a plain run's out directory)

    @property
    def name(self) -> str:
        return self.shard["job"] if self.shard else str(self.path)

    @property
    def labels(self) -> list[str]:
        if self.kind == "claims":
            return [self.doc["kernel"]["label"]]
        if self.kind == "survey":
            return [self.doc["kernel"]["label"]]
        return [k["label"] for k in self.doc["kernels"]]


@dataclass
class Merged:
    problems: list[str] = field(default_factory=list)  # gaps, doubles, mismatches: each fails the merge
    records: dict[str, dict] = field(default_factory=dict)  # kernel label -> merged claims record
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    survey: dict[str, list[ShardOut]] = field(default_factory=dict)  # kernel label -> its survey's shards
    selftests: list[ShardOut] = field(default_factory=list)
    # kernel label -> (shard, its selftests of that kernel), where a kernel's selftests are split by NIC
    selftest_parts: dict[str, list[tuple[ShardOut, KernelSelftests]]] = field(default_factory=dict)
    shards: list[ShardOut] = field(default_factory=list)


def read_outs(paths: list[Path]) -> tuple[list[ShardOut], list[str]]:
    """Every shard output under `paths` (a shard's out directory, or a directory of
    them, as an artifact download leaves them), and the ones that hold nothing."""
    outs, problems = [], []
    for p in paths:
        if not p.is_dir():
            raise HarnessError(f"{p}: not a directory (give the shards' out directories)")
        dirs = [p] if _is_out(p) else sorted(d for d in p.iterdir() if d.is_dir() and _is_out(d))
        if not dirs:
            raise HarnessError(f"{p}: no shard output there (no {SHARD_FILE}, results.json, survey.json or "
                               f"selftests.json in it or in its subdirectories)")
        for d in dirs:
            shard = json.loads((d / SHARD_FILE).read_text()) if (d / SHARD_FILE).is_file() else None
            found = [(kind, d / name) for name, kind in RECORDS.items() if (d / name).is_file()]
            if not found:
                problems.append(f"shard {shard['job'] if shard else d}: no output (exit status "
                                f"{shard.get('exit_status') if shard else '?'}"
                                f"{': ' + shard['error'] if shard and shard.get('error') else ''})")
                continue
            kind, file = found[0]
            outs.append(ShardOut(d, kind, json.loads(file.read_text()), shard))
    return outs, problems


def _is_out(d: Path) -> bool:
    return (d / SHARD_FILE).is_file() or any((d / n).is_file() for n in RECORDS)


def check_plan(outs: list[ShardOut], plan: dict | None, failed: list[str]) -> list[str]:
    """Shards of other plans, jobs present twice, jobs missing (each named with the
    command that would run it)."""
    problems = []
    planned = [s.shard for s in outs if s.shard]
    ids = {p["plan"] for p in planned} | ({plan["plan"]} if plan else set())
    if len(ids) > 1:
        problems.append(f"shards of different plans: {', '.join(sorted(ids))} (merge one nightly at a time)")
    doubles = [job for job, n in Counter(p["job"] for p in planned).items() if n > 1]
    problems += [f"job {job} is present twice: " + ", ".join(str(s.path) for s in outs
                                                              if s.shard and s.shard["job"] == job)
                 for job in doubles]
    expected = list(dict.fromkeys([*(j["job"] for j in plan["jobs"])] if plan else
                                  [j for p in planned for j in p["jobs"]]))
    present = {p["job"] for p in planned} | {f.split(":")[0].removeprefix("shard ") for f in failed}
    for job in expected:
        if job not in present:
            how = " ".join(["harness", *find_job(plan, job)["argv"]]) if plan else "see the plan"
            problems.append(f"missing shard {job} ({how})")
    return problems


def merge_claims(outs: list[ShardOut]) -> tuple[dict[str, dict], dict[str, pd.DataFrame], list[str]]:
    """One record and one measurement table per kernel from its claims shards."""
    problems: list[str] = []
    by_label: dict[str, list[ShardOut]] = {}
    for s in outs:
        by_label.setdefault(s.labels[0], []).append(s)
    records, tables = {}, {}
    for label, shards in by_label.items():
        keys = {s.doc["kernel"].get("key") for s in shards}
        if len(keys) > 1:
            problems.append(f"{label}: shards ran different kernel builds (keys {', '.join(sorted(map(str, keys)))})"
                            " - build once and import it in every job")
        seen: dict[str, str] = {}
        for s in shards:
            for c in s.doc["claims"]:
                if c["id"] in seen:
                    problems.append(f"{label}: claim {c['id']} is in two shards ({seen[c['id']]} and {s.name})")
                seen.setdefault(c["id"], s.name)
        records[label] = merged_record([s.doc for s in shards], [s.name for s in shards])
        tables[label] = merged_table(shards)
    return records, tables, problems


def merged_record(docs: list[dict], names: list[str]) -> dict:
    """The claims records of one kernel's shards as one record: claims in the order
    `harness run` gives them, each experiment once (the first shard that measured it)."""
    from harness.claims.runner import ALL_CLAIMS, COST_CLAIMS

    order = {c.id: i for i, c in enumerate(ALL_CLAIMS + COST_CLAIMS)}
    claims, seen_claims = [], set()
    for d in docs:
        for c in d["claims"]:
            if c["id"] not in seen_claims:
                claims.append(c)
                seen_claims.add(c["id"])
    claims.sort(key=lambda c: order.get(c["id"], len(order)))
    experiments, first_in = [], {}
    for d, name in zip(docs, names, strict=True):
        for e in d["experiments"]:
            if e["name"] not in first_in:
                first_in[e["name"]] = name
                experiments.append({**e, "shard": name})
    first = docs[0]
    failures: dict = {}
    for d in docs:
        for k, v in d.get("failures", {}).items():
            failures.setdefault(k, v)
    record = {
        **{k: v for k, v in first.items() if k not in MERGED_KEYS},
        "run_id": "merged-" + "+".join(d["run_id"] for d in docs),
        "command": " ; ".join(d["command"] for d in docs),
        "started": min(d["started"] for d in docs),
        "wall_s": max(d["wall_s"] for d in docs),
        "partial": any(d.get("partial") for d in docs),
        "claims": claims, "experiments": experiments, "failures": failures,
        "kernel_reports": [{**r, "shard": n} for d, n in zip(docs, names, strict=True)
                           for r in d.get("kernel_reports", [])],
        "run_errors": [f"{n}: {e}" for d, n in zip(docs, names, strict=True) for e in d.get("run_errors", [])],
        "boots": [b for d in docs for b in d.get("boots", [])],
        "qemu_aborts": [a for d in docs for a in d.get("qemu_aborts", [])],
        "boot_retries": [b for d in docs for b in d.get("boot_retries", [])],
        "tally": dict(Counter(c["verdict"] for c in claims)),
        "timings": {"boots": round(sum(d.get("timings", {}).get("boots", 0) for d in docs), 1),
                    "experiments": {e["name"]: e["seconds"] for e in experiments},
                    "shards": {n: d["wall_s"] for d, n in zip(docs, names, strict=True)}},
        "shards": [{"job": n, "run_id": d["run_id"], "claims": [c["id"] for c in d["claims"]],
                    "wall_s": d["wall_s"], "qemu": d.get("qemu")} for d, n in zip(docs, names, strict=True)],
    }
    for key in ("coverage", "stopped_by"):
        parts = [d[key] for d in docs if key in d]
        if parts:
            record[key] = ({k: v for p in parts for k, v in p.items()} if isinstance(parts[0], dict)
                           else "; ".join(parts))
    return record


# Keys merged_record builds from every shard; the rest (kernel, qemu, format, debug) is
# the same in every shard of one kernel and taken from the first.
MERGED_KEYS = {"run_id", "command", "started", "wall_s", "partial", "claims", "experiments", "failures",
               "kernel_reports", "run_errors", "boots", "qemu_aborts", "boot_retries", "tally", "timings",
               "coverage", "stopped_by", "baseline"}


def merged_table(shards: list[ShardOut]) -> pd.DataFrame:
    """The shards' measurement rows, each experiment's from the shard that is first
    to have measured it (as merged_record keeps its record)."""
    from harness.measurement.measure import load

    frames, taken = [], set()
    for s in shards:
        path = s.path / "measurements.json"
        if not path.is_file():
            continue
        t = load(path)
        if "experiment" in t.columns:
            t = t[~t.experiment.isin(taken)]
            taken |= set(t.experiment)
        frames.append(t)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def merge(paths: list[Path], plan_path: Path | None) -> Merged:
    outs, failed = read_outs(paths)
    plan = load_plan(plan_path) if plan_path else None
    m = Merged(problems=list(failed), shards=outs)
    m.problems += check_plan(outs, plan, failed)
    records, tables, problems = merge_claims([s for s in outs if s.kind == "claims"])
    m.records, m.tables = records, tables
    m.problems += problems
    for s in outs:
        if s.kind == "survey":
            m.survey.setdefault(s.labels[0], []).append(s)
        elif s.kind == "selftests":
            m.selftests.append(s)
    m.problems += [p for label, shards in m.survey.items() for p in check_survey(label, shards)]
    m.selftest_parts = split_selftests(m.selftests)
    m.problems += [p for label, parts in m.selftest_parts.items() for p in check_selftests(label, parts)]
    return m


def split_selftests(shards: list[ShardOut]) -> dict[str, list[tuple[ShardOut, KernelSelftests]]]:
    """The kernels whose selftests were split by NIC (`selftests --only`: more than one
    shard, or one that ran fewer NICs than its hub), with each shard's part read back."""
    from harness.selftests.run import read_selftests

    parts: dict[str, list[tuple[ShardOut, KernelSelftests]]] = {}
    for s in shards:
        for run in read_selftests(s.path):
            parts.setdefault(run.label, []).append((s, run))
    return {label: p for label, p in parts.items()
            if len(p) > 1 or set(p[0][1].nics) - {f.nic for f in p[0][1].results}}


def check_selftests(label: str, parts: list[tuple[ShardOut, KernelSelftests]]) -> list[str]:
    return check_nic_split(label, "selftests", [(s.name, run.nics, list(dict.fromkeys(f.nic for f in run.results)))
                                                for s, run in parts])


def check_nic_split(label: str, what: str, parts: list[tuple[str, tuple[str, ...], list[str]]]) -> list[str]:
    """The shards that split a kernel's `what` (survey, selftests) by NIC, each as
    (shard, its hub, the NICs it ran): one hub, every NIC of it run by exactly one."""
    problems = []
    hubs = {hub for _, hub, _ in parts}
    if len(hubs) > 1:
        problems.append(f"{label}: {what} shards on different hubs ({'; '.join(','.join(h) for h in sorted(hubs))})")
    seen: dict[str, str] = {}
    for name, _, nics in parts:
        for model in nics:
            if model in seen:
                problems.append(f"{label}: {what} of {model} is in two shards ({seen[model]} and {name})")
            seen.setdefault(model, name)
    problems += [f"{label}: {what} of {model} missing (no shard ran it)"
                 for model in dict.fromkeys(m for h in hubs for m in h) if model not in seen]
    return problems


def merged_selftests(label: str, parts: list[tuple[ShardOut, KernelSelftests]]) -> KernelSelftests:
    """One kernel's selftests from its shards, the NICs in the hub's order."""
    from harness.selftests.run import KernelSelftests

    hub = parts[0][1].nics
    results = sorted((f for _, run in parts for f in run.results),
                     key=lambda f: hub.index(f.nic) if f.nic in hub else len(hub))
    missing = sorted({t for _, run in parts for t in run.missing_tools})
    return KernelSelftests(label, parts[0][1].release, results, missing, hub)


def check_survey(label: str, shards: list[ShardOut]) -> list[str]:
    """A kernel's survey from its shards (`survey --only`): one kernel build, and the
    NICs split as check_nic_split wants."""
    problems = []
    keys = {s.doc["kernel"].get("key") for s in shards}
    if len(keys) > 1:
        problems.append(f"{label}: survey shards ran different kernel builds "
                        f"(keys {', '.join(sorted(map(str, keys)))})")
    return problems + check_nic_split(label, "survey", [(s.name, tuple(s.doc["nics"]), list(s.doc["drivers"]))
                                                         for s in shards])


def merged_survey(shards: list[ShardOut]) -> tuple[SurveyResult, pd.DataFrame]:
    """One survey of the hub from its shards: cells in the hub's order, the kernel as
    the first shard ran it with their wall times summed, every measurement row."""
    from harness.measurement.measure import load
    from harness.survey.techniques import SurveyResult

    parts = [SurveyResult.from_json(s.doc) for s in shards]
    hub = parts[0].nics
    cells = {m: c for p in parts for m, c in p.cells.items()}
    kernel = {**parts[0].kernel, "wall_s": round(sum(p.kernel.get("wall_s", 0.0) for p in parts), 1),
              "shards": [s.name for s in shards]}
    result = SurveyResult(kernel, hub, {m: cells[m] for m in hub if m in cells},
                          {m: p.peers[m] for p in parts for m in p.peers}, [e for p in parts for e in p.errors],
                          {"experiments": {n: t for p in parts for n, t in p.timings.get("experiments", {}).items()}})
    tables = [load(s.path / "measurements.json") for s in shards if (s.path / "measurements.json").is_file()]
    return result, pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def write_merged(m: Merged, out: Path, baseline: Path | None, tol) -> int:
    """The merged outputs under `out` (one kernel: as `harness run --out out` writes;
    several: one directory per kernel and the matrix on top), merge.json, and the
    exit status `harness run` would give, or EXIT_ERROR for a gap."""
    from harness.cli import run_status
    from harness.kernel_run import KernelRun
    from harness.report.compare import compare_results, load_results
    from harness.report.matrix import write_matrix
    from harness.report.report import write_report
    from harness.report.run_record import with_baseline

    labels = list(dict.fromkeys([*m.records, *m.survey, *(lbl for s in m.selftests for lbl in s.labels)]))
    several = len(labels) > 1
    runs = []
    for label, record in m.records.items():
        where = out / label if several else out
        if baseline is not None:
            base_file = baseline / label if several and (baseline / label).is_dir() else baseline
            if (Path(base_file) / "results.json").is_file() or Path(base_file).is_file():
                record = with_baseline(record, compare_results(load_results(base_file), record, tol).to_dict())
        write_report(where, record, m.tables[label])
        runs.append(KernelRun(label, record, m.tables[label]))
    if len(runs) > 1:
        write_matrix(out, runs, tol)
    for label, shards in m.survey.items():
        where = (out / label if several else out) / "survey"
        if len(shards) == 1:
            _copy(shards[0].path, where)
        else:
            from harness.survey.files import write_survey

            write_survey(where, *merged_survey(shards))
    for s in m.selftests:
        if not set(s.labels) & set(m.selftest_parts):
            _copy(s.path, (out / s.labels[0] if several and len(s.labels) == 1 else out) / "selftests")
    for label, parts in m.selftest_parts.items():
        from harness.selftests.run import write_selftests

        write_selftests((out / label if several else out) / "selftests", [merged_selftests(label, parts)])
    status = run_status([r.record for r in runs]) if runs else 0
    # A survey's failed experiments: in survey.json, and in its shard's exit status.
    survey_errors = [label for label, shards in m.survey.items()
                     if any(s.doc.get("errors") or (s.shard and s.shard.get("exit_status") == EXIT_ERROR)
                            for s in shards)]
    selftests_failed = [f"{k['label']}: {f['test']} on {f['nic']}" for s in m.selftests for k in s.doc["kernels"]
                        for f in k["files"] if selftest_failed(f)]
    if selftests_failed and status == 0:
        status = EXIT_REFUTED
    if (m.problems or survey_errors) and status in (0, 3, 4):
        status = EXIT_ERROR
    write_text(out / "merge.json", json.dumps({
        "shards": [{"path": str(s.path), "kind": s.kind, "job": s.shard["job"] if s.shard else None,
                    "plan": s.shard["plan"] if s.shard else None, "labels": s.labels} for s in m.shards],
        "kernels": labels, "problems": m.problems, "selftests_failed": selftests_failed,
        "survey_errors": survey_errors, "exit_status": status}, indent=1))
    for p in m.problems:
        log(f"merge: {p}")
    log(f"merged {len(m.shards)} shard outputs over {len(labels)} kernel(s) into {out}: "
        f"{sum(len(r['claims']) for r in m.records.values())} claim results, {len(m.survey)} survey(s), "
        f"{len(m.selftests)} selftests output(s); {len(m.problems)} problem(s); exit {status}")
    return status


def selftest_failed(f: dict) -> bool:
    """A file of selftests.json judged as the suite judged it."""
    from harness.selftests.suite import file_failed

    return file_failed(f.get("rc"), [c.get("status") for c in f.get("cases", [])], f.get("problems") or [],
                       f.get("kmemleak") or [])


def _copy(src: Path, dst: Path) -> None:
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
