"""`harness plan`: the nightly as independent jobs, for a CI engine's matrix.

A job is one harness command on one kernel: a share of the claims (`run --claims`),
the survey, or the selftests. Each kernel's claims are split into `--shards` jobs
balanced by time: a claim costs the experiments it adds to its job (an experiment
two claims share runs once per job) and the boot of each guest (kernel variant, DMA
mode) it adds. The seconds come from earlier results.json (`timings.experiments`,
`boots[].boot_s`), the kernel's own where an earlier run had that kernel (its label),
else every kernel's; what no earlier run measured counts as the median of what was
measured, or as one unit each when nothing was (the plan says which).

The plan is a JSON file every job reads (`harness shard PLAN JOB`) and `harness
merge` checks the outputs against: its id is a hash of its jobs, so a shard of
another plan is never merged by mistake."""

from __future__ import annotations

import hashlib
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from harness.artifacts.kernel_choice import KINDS, PREBUILT_SERIES
from harness.claims.experiments import EXPERIMENTS
from harness.errors import HarnessError
from harness.nics import CATALOGUE, DEFAULT_NICS

PLAN_FORMAT = 1
WHAT = ("claims", "survey", "selftests")
# Without any earlier timing: every experiment and every boot weigh the same.
UNIT_S = 1.0
# The survey and the selftests are one job per kernel each, unless --survey-shards /
# --selftests-shards split their NICs (each still run on the whole hub, with its peer).
# Their estimate when no earlier run is given: seconds measured here (README: a warm
# survey of five NICs 167 s; selftests on igb and e1000e, two kernels, 475 s), in
# units a guess of as many experiments.
WHOLE_JOB_S = {"survey": 170.0, "selftests": 240.0}
WHOLE_JOB_UNITS = {"survey": 20.0, "selftests": 30.0}
# The hub of each (their commands' default --nics): a shard runs some of its NICs.
HUBS = {"survey": tuple(CATALOGUE), "selftests": DEFAULT_NICS}


@dataclass
class Timings:
    """Seconds per experiment and per guest boot, from earlier runs."""

    experiments: dict[str, float] = field(default_factory=dict)
    boots: dict[tuple[str, str], float] = field(default_factory=dict)  # (variant, dma_mode)
    whole: dict[str, float] = field(default_factory=dict)  # "survey" / "selftests": a job's seconds
    sources: list[str] = field(default_factory=list)
    selftest_nics: dict[str, float] = field(default_factory=dict)  # NETIF model -> its files' seconds
    # The same, from the records of one kernel (its label: source, source-latest, ...).
    kernels: dict[str, Timings] = field(default_factory=dict)

    def of(self, kernel: str) -> Timings:
        """`kernel`'s own timings where an earlier run measured it (a 7.3 guest, or a
        debug one, is not as fast as a 6.12 one), else those of every kernel."""
        own = self.kernels.get(kernel)
        return own if own is not None and own.measured else self

    @property
    def measured(self) -> bool:
        return bool(self.experiments)

    def experiment(self, name: str) -> float:
        if name in self.experiments:
            return self.experiments[name]
        return statistics.median(self.experiments.values()) if self.experiments else UNIT_S

    def boot(self, key: tuple[str, str]) -> float:
        if key in self.boots:
            return self.boots[key]
        return statistics.median(self.boots.values()) if self.boots else UNIT_S

    def whole_job(self, what: str) -> float:
        if what in self.whole:
            return self.whole[what]
        return WHOLE_JOB_S[what] if self.measured else WHOLE_JOB_UNITS[what]

    def nic_share(self, what: str, model: str, models: tuple[str, ...]) -> float:
        """One NIC's share of the survey (its experiments' seconds: survey.json names
        them kind:model) or of the selftests (its files' seconds), else an equal share."""
        own = ([s for name, s in self.experiments.items() if name.endswith(f":{model}")] if what == "survey"
               else [self.selftest_nics[model]] if model in self.selftest_nics else [])
        return sum(own) if own else self.whole_job(what) / len(models)


# The records a run writes, by what wrote them: `harness run`, `survey`, `selftests`.
RECORDS = {"results.json": "claims", "survey.json": "survey", "selftests.json": "selftests"}


def record_files(path: Path) -> list[Path]:
    """The records at `path`: a file, an out directory, or a directory of them, two
    levels down at most (a merge of one kernel: results.json, survey/, selftests/; of
    several: one directory per kernel, each with its survey/ and selftests/)."""
    if path.is_file():
        return [path]
    found = sorted({f for n in RECORDS for pattern in (n, f"*/{n}", f"*/*/{n}") for f in path.glob(pattern)})
    if not found:
        raise HarnessError(f"--timings {path}: no {', '.join(RECORDS)} there or in its subdirectories")
    return found


def load_timings(paths: list[Path]) -> Timings:
    """The slowest time seen per experiment and per boot over the given runs (a
    plan that underestimates one shard makes the whole nightly wait for it), over
    every kernel and per kernel label."""
    t = Timings()
    for p in (f for path in paths for f in record_files(path)):
        try:
            record = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise HarnessError(f"--timings {p}: not a readable record ({e})") from e
        if p.name == "selftests.json":
            for k in record.get("kernels", []):
                seconds = sum(f.get("seconds", 0.0) for f in k.get("files", []))
                per_nic: dict[str, float] = {}
                for f in k.get("files", []):
                    per_nic[f["nic"]] = per_nic.get(f["nic"], 0.0) + f.get("seconds", 0.0)
                for into in _both(t, k.get("label")):
                    into.whole["selftests"] = max(into.whole.get("selftests", 0.0), seconds)
                    for m, sec in per_nic.items():
                        into.selftest_nics[m] = max(into.selftest_nics.get(m, 0.0), sec)
        for into in _both(t, (record.get("kernel") or {}).get("label")):
            if p.name == "survey.json" and "wall_s" in record.get("kernel", {}):
                into.whole["survey"] = max(into.whole.get("survey", 0.0), float(record["kernel"]["wall_s"]))
            for name, s in (record.get("timings", {}).get("experiments") or {}).items():
                into.experiments[name] = max(into.experiments.get(name, 0.0), float(s))
            for b in record.get("boots") or []:
                key = (b.get("variant", "stock"), b.get("dma_mode", "direct"))
                into.boots[key] = max(into.boots.get(key, 0.0), float(b.get("boot_s", 0.0)))
            into.sources.append(str(p))
    return t


def _both(t: Timings, label: str | None) -> list[Timings]:
    """Where a record's figures go: every kernel's timings, and its own kernel's."""
    return [t] if not label else [t, t.kernels.setdefault(label, Timings())]


@dataclass
class Shard:
    claims: list[str] = field(default_factory=list)
    experiments: set[str] = field(default_factory=set)
    guests: set[tuple[str, str]] = field(default_factory=set)
    seconds: float = 0.0

    def added_cost(self, experiments: tuple[str, ...], t: Timings) -> float:
        new = set(experiments) - self.experiments
        guests = {guest_of(e) for e in new} - self.guests
        return sum(t.experiment(e) for e in new) + sum(t.boot(g) for g in guests)

    def add(self, claim_id: str, experiments: tuple[str, ...], t: Timings) -> None:
        self.seconds += self.added_cost(experiments, t)
        self.claims.append(claim_id)
        self.experiments |= set(experiments)
        self.guests |= {guest_of(e) for e in experiments}


def guest_of(experiment: str) -> tuple[str, str]:
    e = EXPERIMENTS[experiment]
    return (e.variant + ("+cost" if e.cost else ""), e.dma_mode)


def split_claims(claims: list, shards: int, t: Timings) -> list[Shard]:
    """Claims into at most `shards` jobs: the costliest claim first, each into the job
    it adds the least time to relative to that job's total (LPT with shared experiments)."""
    bins = [Shard() for _ in range(min(shards, len(claims)))]
    alone = {c.id: Shard().added_cost(c.experiments, t) for c in claims}
    for c in sorted(claims, key=lambda c: (-alone[c.id], c.id)):
        best = min(bins, key=lambda b: (b.seconds + b.added_cost(c.experiments, t), len(b.claims)))
        best.add(c.id, c.experiments, t)
    order = {c.id: i for i, c in enumerate(claims)}
    for b in bins:
        b.claims.sort(key=order.__getitem__)
    return [b for b in bins if b.claims]


def split_nics(what: str, models: tuple[str, ...], shards: int, t: Timings) -> list[tuple[list[str], float]]:
    """The NICs of the survey or the selftests into at most `shards` jobs (each NIC run
    on the whole hub, with the peer one job would give it): the slowest NIC first, each
    into the least loaded job."""
    share = {m: t.nic_share(what, m, models) for m in models}
    bins: list[list[str]] = [[] for _ in range(min(shards, len(models)))]
    load = [0.0] * len(bins)
    for m in sorted(models, key=lambda m: (-share[m], models.index(m))):
        i = min(range(len(bins)), key=lambda i: (load[i], len(bins[i])))
        bins[i].append(m)
        load[i] += share[m]
    return [(sorted(nics, key=models.index), load[i]) for i, nics in enumerate(bins) if nics]


def make_plan(kernels: list[str], claims: list, shards: int, what: tuple[str, ...], t: Timings,
              extra_args: tuple[str, ...] = (), artifact_dir: str | None = None,
              nic_shards: dict[str, int] | None = None) -> dict:
    """The plan: every job with the harness command it runs and its estimate. With
    `artifact_dir`, a kernel the harness builds is the build job's export there
    (`--kernel-artifact DIR/KIND.tar.gz`: built once, imported by every job), and so
    is the guest image (`--image-artifact DIR/image.tar.gz`)."""
    split = {"survey": 1, "selftests": 1, **(nic_shards or {})}
    if shards < 1 or min(split.values()) < 1:
        raise HarnessError(f"--shards {shards}, --survey-shards {split['survey']}, --selftests-shards "
                           f"{split['selftests']}: give at least 1 each")
    unknown = [k for k in kernels if k not in KINDS]
    if unknown:
        raise HarnessError(f"unknown --kernel {', '.join(unknown)}; known: {', '.join(KINDS)}")
    bad = [w for w in what if w not in WHAT]
    if bad:
        raise HarnessError(f"--what {','.join(bad)}: give some of {', '.join(WHAT)}")
    jobs = []
    for kernel in dict.fromkeys(kernels):
        tk = t.of(kernel)
        if "claims" in what:
            parts = split_claims(claims, shards, tk)
            for i, part in enumerate(parts, 1):
                jobs.append(job(f"{kernel}-claims-{i}of{len(parts)}", kernel, "run",
                                ["--claims", ",".join(part.claims), *extra_args], part.seconds,
                                {"claims": part.claims, "experiments": sorted(part.experiments)}, artifact_dir))
        for whole in ("survey", "selftests"):
            if whole not in what:
                continue
            if split[whole] == 1:
                jobs.append(job(f"{kernel}-{whole}", kernel, whole, list(extra_args), tk.whole_job(whole), {},
                                artifact_dir))
                continue
            hub = HUBS[whole]
            parts = split_nics(whole, hub, split[whole], tk)
            for i, (nics, seconds) in enumerate(parts, 1):
                jobs.append(job(f"{kernel}-{whole}-{i}of{len(parts)}", kernel, whole,
                                ["--nics", ",".join(hub), "--only", ",".join(nics), *extra_args], seconds,
                                {"nics": nics}, artifact_dir))
    body = {"format": PLAN_FORMAT, "kernels": list(dict.fromkeys(kernels)), "what": list(what),
            "shards_per_kernel": shards, "claims": [c.id for c in claims], "artifact_dir": artifact_dir,
            "exports": {k: export_path(artifact_dir, k) for k in dict.fromkeys(kernels)
                        if artifact_dir and k not in PREBUILT_SERIES},
            "image_export": image_export_path(artifact_dir) if artifact_dir else None,
            "estimates": ("seconds from " + ", ".join(t.sources)) if t.measured else
            "units (no --timings: every experiment and boot counts as one)",
            "timings_of": {k: "its own runs" if t.of(k) is not t else "every kernel's runs"
                           for k in dict.fromkeys(kernels)} if t.measured else {}, "jobs": jobs}
    plan_id = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]
    for j in jobs:
        j["plan"] = plan_id
    return {"plan": plan_id, **body}


def export_path(artifact_dir: str | None, kernel: str) -> str:
    return f"{artifact_dir}/{kernel}.tar.gz"


def image_export_path(artifact_dir: str) -> str:
    return f"{artifact_dir}/image.tar.gz"


def job(job_id: str, kernel: str, command: str, args: list[str], estimate: float, covers: dict,
        artifact_dir: str | None = None) -> dict:
    imported = artifact_dir is not None and kernel not in PREBUILT_SERIES
    which = ["--kernel-artifact", export_path(artifact_dir, kernel)] if imported else ["--kernel", kernel]
    if artifact_dir is not None:
        which += ["--image-artifact", image_export_path(artifact_dir)]
    return {"job": job_id, "kernel": kernel, "command": command, "argv": [command, *which, *args],
            "estimate": round(estimate, 1), "covers": covers}


def github_matrix(plan: dict) -> dict:
    """For `strategy.matrix: ${{ fromJSON(...) }}`: one include entry per job, with the
    few strings a job step needs (the plan file itself travels as an artifact)."""
    return {"include": [{"job": j["job"], "kernel": j["kernel"], "command": j["command"]} for j in plan["jobs"]]}


def gitlab_child_pipeline(plan: dict, template: str = "ci-examples/gitlab-shard.yml") -> dict:
    """A GitLab child pipeline (JSON is YAML): the shard job of `template` once per job
    through `parallel: matrix`, each with its JOB and KERNEL."""
    return {"include": [{"local": template}],
            "harness-shard": {"extends": ".harness-shard",
                              "parallel": {"matrix": [{"JOB": j["job"], "KERNEL": j["kernel"]}
                                                      for j in plan["jobs"]]}}}


def find_job(plan: dict, job_id: str) -> dict:
    for j in plan["jobs"]:
        if j["job"] == job_id:
            return j
    raise HarnessError(f"job {job_id!r} is not in plan {plan['plan']} (its jobs: "
                       f"{', '.join(j['job'] for j in plan['jobs'])})")


def load_plan(path: Path) -> dict:
    try:
        plan = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise HarnessError(f"plan {path}: not a readable plan ({e}); write one with harness plan --out FILE") from e
    if plan.get("format") != PLAN_FORMAT or "jobs" not in plan:
        raise HarnessError(f"plan {path}: not a harness plan of format {PLAN_FORMAT}")
    return plan
