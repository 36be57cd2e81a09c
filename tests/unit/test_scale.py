"""The nightly at scale, on a recorded run: the plan's shards, a shard's
self-description, and the merge of shard outputs back into one run's verdicts."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from harness.claims.experiments import EXPERIMENTS
from harness.claims.runner import CLAIMS, select
from harness.errors import HarnessError
from harness.measurement.measure import load
from harness.nics import nic
from harness.report.compare import Tolerance
from harness.scale.merge import EXIT_ERROR, merge, write_merged
from harness.scale.plan import Timings, github_matrix, gitlab_child_pipeline, load_timings, make_plan, split_claims
from harness.scale.shard import SHARD_FILE, run_shard

RUN = Path(__file__).parent.parent / "fixtures" / "runs" / "6.12.95-stock"
TOL = Tolerance(0.02, 0.02)


def test_every_claim_is_in_exactly_one_shard_per_kernel_and_the_plan_has_a_stable_id():
    t = load_timings([RUN])
    plan = make_plan(["source", "source-latest"], CLAIMS, 3, ("claims", "survey"), t)
    for kernel in ("source", "source-latest"):
        jobs = [j for j in plan["jobs"] if j["kernel"] == kernel and j["command"] == "run"]
        assert len(jobs) == 3
        claims = [c for j in jobs for c in j["covers"]["claims"]]
        assert sorted(claims) == sorted(c.id for c in CLAIMS)
        assert all(j["argv"][:3] == ["run", "--kernel", kernel] for j in jobs)
    assert [j["job"] for j in plan["jobs"] if j["command"] == "survey"] == ["source-survey", "source-latest-survey"]
    again = make_plan(["source", "source-latest"], CLAIMS, 3, ("claims", "survey"), t)
    assert again["plan"] == plan["plan"] and all(j["plan"] == plan["plan"] for j in plan["jobs"])
    assert make_plan(["source"], CLAIMS, 3, ("claims",), t)["plan"] != plan["plan"]


def test_shards_are_balanced_by_the_seconds_a_claim_adds_to_its_job():
    t = load_timings([RUN])
    parts = split_claims(CLAIMS, 4, t)
    # page-reuse alone needs the no-reuse variant's guest and its slowest experiment.
    seconds = sorted(p.seconds for p in parts)
    assert seconds[-1] <= 1.8 * seconds[0], [(p.claims, round(p.seconds, 1)) for p in parts]
    # A shared experiment is paid once per job: the sum over jobs is less than over claims alone.
    alone = sum(split_claims([c], 1, t)[0].seconds for c in CLAIMS)
    assert sum(p.seconds for p in parts) < alone


def test_each_kernel_is_planned_by_its_own_earlier_timings_where_it_has_them():
    xsk73 = RUN.parent / "7.3.4-xsk"
    t = load_timings([RUN, xsk73])
    assert set(t.kernels) == {"source", "source-latest"}
    assert t.of("source").experiments["rx"] == 5.2 and "rx" not in t.of("source-latest").experiments
    assert t.of("source-latest").experiments["xsk-zc"] == 5.9
    assert t.of("debian") is t  # no earlier run of it: every kernel's
    plan = make_plan(["source", "source-latest", "debian"], CLAIMS, 2, ("claims",), t)
    assert plan["timings_of"] == {"source": "its own runs", "source-latest": "its own runs",
                                  "debian": "every kernel's runs"}
    # 7.3's jobs are estimated from its own four experiments (the rest at their median), not 6.12's.
    by_kernel = {k: sum(j["estimate"] for j in plan["jobs"] if j["kernel"] == k) for k in plan["kernels"]}
    assert by_kernel["source-latest"] != by_kernel["source"]


def test_with_an_artifact_dir_every_job_imports_its_kernel_and_the_guest_image():
    plan = make_plan(["source", "debian"], select(None), 2, ("claims", "survey"), Timings(), artifact_dir="kernels")
    assert plan["exports"] == {"source": "kernels/source.tar.gz"} and plan["image_export"] == "kernels/image.tar.gz"
    for j in plan["jobs"]:
        argv = j["argv"]
        assert argv[argv.index("--image-artifact") + 1] == "kernels/image.tar.gz", j["job"]
        # Debian's prebuilt kernel is fetched by the job itself; a built one is imported.
        which = (["--kernel", "debian"] if j["kernel"] == "debian"
                 else ["--kernel-artifact", "kernels/source.tar.gz"])
        assert argv[1:3] == which
    assert not any("--image-artifact" in j["argv"]
                   for j in make_plan(["source"], select(None), 2, ("claims",), Timings())["jobs"])


def test_without_timings_every_experiment_and_boot_is_one_unit():
    (claim,) = select(["page-reuse"])
    (one,) = split_claims([claim], 1, Timings())
    guests = {(EXPERIMENTS[e].variant, EXPERIMENTS[e].dma_mode) for e in claim.experiments}
    assert ("no-reuse", "direct") in guests and one.guests == guests
    assert one.seconds == len(set(claim.experiments)) + len(guests)


def test_the_matrix_for_github_and_the_child_pipeline_for_gitlab_list_every_job():
    plan = make_plan(["source"], CLAIMS, 2, ("claims", "selftests"), Timings())
    assert [e["job"] for e in github_matrix(plan)["include"]] == [j["job"] for j in plan["jobs"]]
    child = gitlab_child_pipeline(plan)
    assert [m["JOB"] for m in child["harness-shard"]["parallel"]["matrix"]] == [j["job"] for j in plan["jobs"]]


@pytest.mark.parametrize("kwargs, message", [
    ({"shards": 0}, "--shards 0"), ({"kernels": ["sauce"]}, "unknown --kernel sauce"),
    ({"what": ("claims", "bench")}, "--what bench")])
def test_a_bad_plan_request_names_what_is_wrong(kwargs, message):
    args = {"kernels": ["source"], "claims": CLAIMS, "shards": 2, "what": ("claims",), "t": Timings()} | kwargs
    with pytest.raises(HarnessError, match=message):
        make_plan(**args)


# ---- shards of the recorded run, merged ------------------------------------------
def write_shards(tmp_path: Path, plan: dict, drop: str | None = None) -> list[Path]:
    """The recorded run cut along the plan's claims jobs: each shard keeps its claims,
    the experiments they read and those experiments' rows, as `harness shard` leaves it."""
    record = json.loads((RUN / "results.json").read_text())
    table = load(RUN / "measurements.json")
    dirs = []
    for job in plan["jobs"]:
        if job["job"] == drop:
            continue
        d = tmp_path / "shards" / job["job"]
        d.mkdir(parents=True)
        exps = set(job["covers"]["experiments"])
        shard_record = {**record, "run_id": f"{record['run_id']}-{job['job']}",
                        "claims": [c for c in record["claims"] if c["id"] in job["covers"]["claims"]],
                        "experiments": [e for e in record["experiments"] if e["name"] in exps]}
        (d / "results.json").write_text(json.dumps(shard_record))
        (d / "measurements.json").write_text(table[table.experiment.isin(exps)].to_json(orient="records"))
        (d / SHARD_FILE).write_text(json.dumps({"plan": plan["plan"], "job": job["job"],
                                                "jobs": [j["job"] for j in plan["jobs"]], "exit_status": 0}))
        dirs.append(d)
    return dirs


@pytest.fixture
def plan(tmp_path):
    plan = make_plan(["source"], CLAIMS, 3, ("claims",), load_timings([RUN]))
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    return plan


def test_merged_shards_give_the_verdicts_and_numbers_of_the_one_run(tmp_path, plan):
    write_shards(tmp_path, plan)
    merged = merge([tmp_path / "shards"], tmp_path / "plan.json")
    assert merged.problems == []
    status = write_merged(merged, tmp_path / "out", None, TOL)
    one = json.loads((RUN / "results.json").read_text())
    got = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [(c["id"], c["verdict"], c["metrics"]) for c in got["claims"]] == \
        [(c["id"], c["verdict"], c["metrics"]) for c in one["claims"]]
    assert got["tally"] == dict(Counter(c["verdict"] for c in one["claims"])) == {"confirmed": 8} and status == 0
    assert sorted(e["name"] for e in got["experiments"]) == sorted(e["name"] for e in one["experiments"])
    assert {s["job"] for s in got["shards"]} == {j["job"] for j in plan["jobs"]}
    for name in ("report.html", "report.md", "junit.xml", "results.ktap", "measurements.csv", "merge.json"):
        assert (tmp_path / "out" / name).is_file(), name


def test_a_missing_shard_fails_the_merge_and_names_the_job_and_its_command(tmp_path, plan):
    dropped = plan["jobs"][1]
    write_shards(tmp_path, plan, drop=dropped["job"])
    for plan_path in (tmp_path / "plan.json", None):  # the plan given, or read from the shards' shard.json
        merged = merge([tmp_path / "shards"], plan_path)
        (problem,) = merged.problems
        assert problem.startswith(f"missing shard {dropped['job']}")
    merged = merge([tmp_path / "shards"], tmp_path / "plan.json")
    assert "harness run --kernel source --claims " + ",".join(dropped["covers"]["claims"]) in merged.problems[0]
    assert write_merged(merged, tmp_path / "out", None, TOL) == EXIT_ERROR
    assert json.loads((tmp_path / "out" / "merge.json").read_text())["problems"] == merged.problems


def test_a_doubled_job_a_doubled_claim_and_two_kernel_builds_are_each_named(tmp_path, plan):
    dirs = write_shards(tmp_path, plan)
    shutil.copytree(dirs[0], tmp_path / "again" / dirs[0].name)
    other = json.loads((dirs[1] / "results.json").read_text())
    other["kernel"]["key"] = "0" * 20
    (dirs[1] / "results.json").write_text(json.dumps(other))
    problems = merge([tmp_path / "shards", tmp_path / "again"], None).problems
    assert any(p.startswith(f"job {dirs[0].name} is present twice") for p in problems)
    assert any("is in two shards" in p for p in problems)
    assert any("shards ran different kernel builds" in p for p in problems)


def test_a_shard_that_wrote_nothing_is_named_with_its_exit_status(tmp_path, plan):
    dirs = write_shards(tmp_path, plan)
    for f in ("results.json", "measurements.json"):
        (dirs[0] / f).unlink()
    (dirs[0] / SHARD_FILE).write_text(json.dumps({**json.loads((dirs[0] / SHARD_FILE).read_text()),
                                                  "exit_status": 2, "error": "kernel build failed"}))
    (problem,) = merge([tmp_path / "shards"], tmp_path / "plan.json").problems
    assert problem == f"shard {dirs[0].name}: no output (exit status 2: kernel build failed)"


def test_a_shard_runs_its_job_and_says_what_it_covered(tmp_path, plan):
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    job = plan["jobs"][0]
    seen = []

    def dispatch(argv):
        seen.append(argv)
        out = Path(argv[argv.index("--out") + 1])
        out.mkdir(parents=True)
        (out / "results.json").write_text(json.dumps({"kernel": {"key": "k" * 20}}))
        return 1

    assert run_shard(tmp_path / "plan.json", job["job"], tmp_path / "o", ["--accel", "tcg"], dispatch) == 1
    assert seen == [[*job["argv"], "--out", str(tmp_path / "o"), "--accel", "tcg"]]
    shard = json.loads((tmp_path / "o" / SHARD_FILE).read_text())
    assert (shard["plan"], shard["job"], shard["exit_status"], shard["kernel_key"]) == \
        (plan["plan"], job["job"], 1, "k" * 20)
    assert shard["jobs"] == [j["job"] for j in plan["jobs"]] and shard["covers"] == job["covers"]


def test_a_job_not_in_the_plan_is_refused_with_the_plans_jobs(tmp_path, plan):
    with pytest.raises(HarnessError, match=r"job 'x' is not in plan \w+ \(its jobs: source-claims-1of3"):
        run_shard(tmp_path / "plan.json", "x", tmp_path / "o", [], lambda argv: 0)


def test_a_survey_whose_experiment_failed_fails_the_merge_without_its_exit_status(tmp_path, plan):
    """survey.json names its failed experiments: a merge of a plain survey out directory
    (no shard.json, so no exit status) still ends in an error."""
    import pandas as pd

    from harness.survey.files import write_survey
    from harness.survey.techniques import TECHNIQUES, Cell, SurveyResult

    write_shards(tmp_path, plan)
    kernel = json.loads((RUN / "results.json").read_text())["kernel"]
    cells = {"igb": {t.id: Cell(1.0, "dma:* events") for t in TECHNIQUES}}
    cells["igb"]["page-allocs"] = Cell(None, "", "rx:igb: kernel WARNING@igb_poll")
    survey = tmp_path / "shards" / "survey-by-hand"
    write_survey(survey, SurveyResult({k: kernel[k] for k in ("key", "label", "release")}, ("igb",), cells,
                                      {"igb": "e1000e"}, ["rx:igb: kernel WARNING@igb_poll"]), pd.DataFrame())
    merged = merge([tmp_path / "shards"], tmp_path / "plan.json")
    assert write_merged(merged, tmp_path / "out", None, TOL) == EXIT_ERROR
    assert json.loads((tmp_path / "out" / "merge.json").read_text())["survey_errors"] == ["source"]


# ---- the survey split by NIC, merged ---------------------------------------------
HUB = ("igb", "e1000e", "e1000", "virtio-net", "vmxnet3")


def survey_of(models: tuple[str, ...], key: str = "k1"):
    """A survey.json of `models` measured on the whole hub, as `survey --only` writes it."""
    from harness.survey.techniques import TECHNIQUES, Cell, SurveyResult, peer_of

    cells = {m: {t.id: Cell(float(HUB.index(m) * 100 + i), f"how {t.id}") for i, t in enumerate(TECHNIQUES)}
             for m in models}
    return SurveyResult({"label": "source", "release": "6.12.95", "key": key, "wall_s": 30.0 * len(models)}, HUB,
                        cells, {m: peer_of(m, HUB) for m in models}, [],
                        {"experiments": {f"rx:{m}": 10.0 + HUB.index(m) for m in models}})


def write_survey_shards(tmp_path: Path, plan: dict, **keys: str) -> None:
    from harness.survey.files import write_survey

    for j in plan["jobs"]:
        d = tmp_path / "shards" / j["job"]
        write_survey(d, survey_of(tuple(j["covers"]["nics"]), keys.get(j["job"], "k1")), pd.DataFrame())
        (d / SHARD_FILE).write_text(json.dumps({"plan": plan["plan"], "job": j["job"], "exit_status": 0,
                                                "jobs": [x["job"] for x in plan["jobs"]]}))


def test_the_survey_split_by_nic_is_balanced_and_merges_into_the_one_table(tmp_path):
    full = survey_of(HUB)
    (tmp_path / "earlier").mkdir()
    (tmp_path / "earlier" / "survey.json").write_text(json.dumps(full.to_json()))
    t = load_timings([tmp_path / "earlier"])
    plan = make_plan(["source"], CLAIMS, 2, ("survey",), t, nic_shards={"survey": 2})
    jobs = plan["jobs"]
    assert [j["job"] for j in jobs] == ["source-survey-1of2", "source-survey-2of2"]
    assert sorted(m for j in jobs for m in j["covers"]["nics"]) == sorted(HUB)
    for j in jobs:  # every NIC is measured on the whole hub, with the peers of one survey
        assert j["argv"][j["argv"].index("--nics") + 1] == ",".join(HUB)
        assert j["argv"][j["argv"].index("--only") + 1] == ",".join(j["covers"]["nics"])
    # Balanced by each NIC's own experiments (rx:igb 10 s ... rx:vmxnet3 14 s, the slowest first).
    assert sorted(j["estimate"] for j in jobs) == [25.0, 35.0]
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    write_survey_shards(tmp_path, plan)
    merged = merge([tmp_path / "shards"], tmp_path / "plan.json")
    assert merged.problems == []
    assert write_merged(merged, tmp_path / "out", None, TOL) == 0
    doc = json.loads((tmp_path / "out" / "survey" / "survey.json").read_text())
    assert list(doc["drivers"]) == list(HUB) and doc["drivers"] == full.to_json()["drivers"]
    assert doc["peers"] == full.peers and doc["kernel"]["wall_s"] == 150.0
    report = (tmp_path / "out" / "survey" / "report.md").read_text()
    (header,) = [line for line in report.splitlines() if line.startswith("| technique | unit |")]
    assert header == "| technique | unit | " + " | ".join(f"{m} ({nic(m).driver})" for m in HUB) + " |"


def test_a_survey_shard_missing_or_of_another_build_is_named(tmp_path):
    plan = make_plan(["source"], CLAIMS, 2, ("survey",), Timings(), nic_shards={"survey": 3})
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    first, second = plan["jobs"][0]["job"], plan["jobs"][1]["job"]
    write_survey_shards(tmp_path, plan, **{second: "k2"})
    shutil.rmtree(tmp_path / "shards" / first)
    merged = merge([tmp_path / "shards"], tmp_path / "plan.json")
    gone = plan["jobs"][0]["covers"]["nics"]
    assert any(p.startswith(f"missing shard {first} (harness survey --kernel source --nics") for p in merged.problems)
    assert [p for p in merged.problems if "survey of" in p] == [f"source: survey of {m} missing (no shard ran it)"
                                                                 for m in gone]
    assert any("survey shards ran different kernel builds (keys k1, k2)" in p for p in merged.problems)
    assert write_merged(merged, tmp_path / "out", None, TOL) == EXIT_ERROR


# ---- the selftests split by NIC, merged ------------------------------------------
KSFT = ("KTAP version 1\n1..2\nok 1 ping.test_v4\n# Exception| CmdExitFailure: ping -c 1 -W0.5 2001:db8::2\n"
        "not ok 2 ping.test_v6\n# Totals: pass:1 fail:1 xfail:0 xpass:0 skip:0 error:0\n")


def selftest_shards(tmp_path: Path, plan: dict) -> None:
    """Each job's NICs run ping.py (a failure: a KTAP case) and stats.py (no KTAP at all),
    as `selftests --only` writes them."""
    from harness.selftests.ktap import parse_ktap
    from harness.selftests.run import KernelSelftests, write_selftests
    from harness.selftests.suite import FileResult, whole_file_result

    for j in plan["jobs"]:
        files = [r for m in j["covers"]["nics"] for r in (
            FileResult("ping.py", m, 1, 3.5, parse_ktap(KSFT), KSFT),
            FileResult("stats.py", m, None, 300.0, whole_file_result("stats.py", None, ""), ""))]
        d = tmp_path / "shards" / j["job"]
        write_selftests(d, [KernelSelftests("source", "6.12.95", files, ["socat"], ("igb", "e1000e"))])
        (d / SHARD_FILE).write_text(json.dumps({"plan": plan["plan"], "job": j["job"], "exit_status": 1,
                                                "jobs": [x["job"] for x in plan["jobs"]]}))


def test_the_selftests_split_by_nic_merge_into_the_one_report(tmp_path):
    plan = make_plan(["source"], CLAIMS, 2, ("selftests",), Timings(), nic_shards={"selftests": 2})
    assert [(j["job"], j["covers"]["nics"]) for j in plan["jobs"]] == [
        ("source-selftests-1of2", ["igb"]), ("source-selftests-2of2", ["e1000e"])]
    assert plan["jobs"][1]["argv"][-4:] == ["--nics", "igb,e1000e", "--only", "e1000e"]
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    selftest_shards(tmp_path, plan)
    merged = merge([tmp_path / "shards"], tmp_path / "plan.json")
    assert merged.problems == []
    assert write_merged(merged, tmp_path / "out", None, TOL) == 1  # the failing ping case, as one run gives
    doc = json.loads((tmp_path / "out" / "selftests" / "selftests.json").read_text())
    (k,) = doc["kernels"]
    assert [(f["test"], f["nic"]) for f in k["files"]] == [
        ("ping.py", "igb"), ("stats.py", "igb"), ("ping.py", "e1000e"), ("stats.py", "e1000e")]
    one = json.loads((tmp_path / "shards" / "source-selftests-1of2" / "selftests.json").read_text())
    assert k["files"][:2] == one["kernels"][0]["files"]  # read back and written again: the same record
    assert k["nics"] == ["igb", "e1000e"] and k["missing_tools"] == ["socat"]
    junit = (tmp_path / "out" / "selftests" / "junit.xml").read_text()
    assert junit.count('classname="source.igb"') == junit.count('classname="source.e1000e"') > 0
    assert (tmp_path / "out" / "selftests" / "ktap" / "source" / "e1000e" / "ping.ktap").read_text() == KSFT


def test_a_selftests_shard_missing_or_doubled_names_the_nic(tmp_path):
    plan = make_plan(["source"], CLAIMS, 2, ("selftests",), Timings(), nic_shards={"selftests": 2})
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    selftest_shards(tmp_path, plan)
    shutil.copytree(tmp_path / "shards" / "source-selftests-1of2", tmp_path / "again" / "a")
    shutil.rmtree(tmp_path / "shards" / "source-selftests-2of2")
    alone = merge([tmp_path / "shards"], None)  # the shards' own list of jobs, and the hub, name the gap
    assert alone.problems == ["missing shard source-selftests-2of2 (see the plan)",
                              "source: selftests of e1000e missing (no shard ran it)"]
    # ping.py's failing case makes it 1, which goes before the gap's 5 (the CLI's order of statuses).
    assert write_merged(alone, tmp_path / "out", None, TOL) == 1
    twice = merge([tmp_path / "shards", tmp_path / "again"], None)
    assert any(p.startswith("source: selftests of igb is in two shards") for p in twice.problems)


def test_timings_come_from_every_record_of_a_merged_out(tmp_path):
    """The nightly's baseline is the last merge: results.json on top, survey/ and
    selftests/ below it (one kernel), or all of it one level further down (several)."""
    for where in (tmp_path / "one", tmp_path / "two" / "source"):
        (where / "survey").mkdir(parents=True)
        shutil.copy(RUN / "results.json", where / "results.json")
        (where / "survey" / "survey.json").write_text(json.dumps(survey_of(HUB).to_json()))
    for path in (tmp_path / "one", tmp_path / "two"):
        t = load_timings([path])
        assert len(t.sources) == 2 and t.experiments["rx:vmxnet3"] == 14.0 and t.experiments["rx"] == 5.2
        assert t.whole["survey"] == 150.0 and t.of("source") is not t
