"""KCIDB of recorded outputs: claims, survey and selftests as KernelCI's schema (kcidb-io) takes them."""

import json
import shutil
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from kcidb_io import schema

from harness.errors import HarnessError
from harness.scale.kcidb import kcidb_document
from harness.selftests.ktap import parse_ktap
from harness.selftests.run import KernelSelftests, write_selftests
from harness.selftests.suite import FileResult
from harness.survey.files import write_survey
from harness.survey.techniques import TECHNIQUES, Cell, SurveyResult

RUNS = Path(__file__).resolve().parents[1] / "fixtures" / "runs"
KSFT = "KTAP version 1\n1..3\nok 1 ping.test_v4\nnot ok 2 ping.test_v6\nok 3 ping.test_tcp # SKIP needs socat\n"


def claims_out(tmp_path: Path) -> Path:
    """A recorded main-job run, with one claim refuted, one in error and a check unmeasured."""
    out = tmp_path / "out"
    out.mkdir()
    doc = json.loads((RUNS / "6.12.95-stock" / "results.json").read_text())
    doc["claims"][1]["verdict"] = "refuted"
    doc["claims"][1]["checks"][0]["holds"] = False
    doc["claims"][2]["verdict"] = "error"
    doc["claims"][2]["checks"][0].update(holds=None, value=None)
    doc["claims"][3]["checks"][0].update(value=None, holds=None, unmeasured="no frame reached igb_poll")
    (out / "results.json").write_text(json.dumps(doc))
    return out


def by_path(doc: dict) -> dict[str, dict]:
    return {t["path"]: t for t in doc["tests"]}


def test_a_main_job_run_validates_with_kernelcis_schema(tmp_path):
    out = claims_out(tmp_path)
    doc = kcidb_document(out, "harness_ci")
    schema.LATEST.validate(doc)  # raises on anything KernelCI would reject
    assert schema.LATEST.is_compatible_exactly(doc)
    assert len(doc["checkouts"]) == 1 and len(doc["builds"]) == 1
    build = doc["builds"][0]
    assert build["id"] == "harness_ci:build:2a81307c1d2ea06bc28a"
    assert build["config_name"] == "base+nics+observe+debug-checks+selftests" and "gcc" in build["compiler"]
    claims = json.loads((out / "results.json").read_text())["claims"]
    tests = by_path(doc)
    # One test per claim and one per check, each under its claim.
    assert len(doc["tests"]) == len(claims) + sum(len(c["checks"]) for c in claims)
    assert tests[f"net_rx.claims.{claims[0]['id']}"]["status"] == "PASS"
    assert tests[f"net_rx.claims.{claims[1]['id']}"]["status"] == "FAIL"
    assert tests[f"net_rx.claims.{claims[1]['id']}.{claims[1]['checks'][0]['id']}"]["status"] == "FAIL"
    assert tests[f"net_rx.claims.{claims[2]['id']}"]["status"] == "ERROR"
    assert tests[f"net_rx.claims.{claims[2]['id']}.{claims[2]['checks'][0]['id']}"]["status"] == "ERROR"
    unmeasured = tests[f"net_rx.claims.{claims[3]['id']}.{claims[3]['checks'][0]['id']}"]
    assert unmeasured["status"] == "MISS" and unmeasured["misc"]["unmeasured"] == "no frame reached igb_poll"
    check = tests[f"net_rx.claims.{claims[0]['id']}.{claims[0]['checks'][0]['id']}"]
    assert check["number"]["value"] == claims[0]["checks"][0]["value"] and "how" in check["misc"]
    assert all(f["url"].startswith("file:///") for t in doc["tests"] for f in t.get("output_files", []))


def test_output_files_point_where_the_ci_serves_them(tmp_path):
    doc = kcidb_document(claims_out(tmp_path), "harness_ci", "https://ci.example/artifacts/123")
    files = doc["tests"][0]["output_files"]
    assert files == [{"name": "results_json", "url": "https://ci.example/artifacts/123/results.json"}]


def test_survey_cells_and_selftest_cases_join_the_claims_build(tmp_path):
    out = claims_out(tmp_path)
    kernel = json.loads((out / "results.json").read_text())["kernel"]
    cells = {"igb": {t.id: Cell(1.0, "dma:* events") for t in TECHNIQUES}}
    cells["igb"]["xdp-mode"] = Cell(None, "", "no XDP in this driver")
    cells["igb"]["rx-alloc-failure"] = Cell("fail: the ring stopped refilling", "harness faults")
    cells["igb"]["page-allocs"] = Cell(None, "", "rx:igb: kernel WARNING@igb_poll")
    # What a survey records of its kernel: no source id, so the build's checkout is the claims'.
    survey_kernel = {k: kernel[k] for k in ("key", "label", "release", "source")}
    write_survey(out / "survey", SurveyResult(survey_kernel, ("igb",), cells, {"igb": "e1000e"},
                                                    ["rx:igb: kernel WARNING@igb_poll"]), pd.DataFrame())
    files = [FileResult("ping.py", "igb", 1, 3.5, parse_ktap(KSFT), KSFT),
             FileResult("hang.py", "igb", None, 60, parse_ktap(""), "")]
    write_selftests(out / "selftests", [KernelSelftests(kernel["label"], kernel["release"], files, [])])
    doc = kcidb_document(out, "harness_ci")
    # the survey and the selftests ran the claims' kernel build: one build, one checkout
    assert len(doc["builds"]) == 1 and len(doc["checkouts"]) == 1
    tests = by_path(doc)
    assert tests["net_rx.survey.igb.rx-maps"]["status"] == "DONE" and tests["net_rx.survey.igb.rx-maps"]["number"]
    assert tests["net_rx.survey.igb.xdp-mode"]["status"] == "SKIP"
    assert tests["net_rx.survey.igb.xdp-mode"]["comment"] == "no XDP in this driver"
    assert tests["net_rx.survey.igb.rx-alloc-failure"]["status"] == "FAIL"
    assert tests["net_rx.survey.igb.page-allocs"]["status"] == "ERROR"  # its experiment failed
    assert tests["net_rx.selftests.igb.ping"]["status"] == "FAIL"
    assert [tests[f"net_rx.selftests.igb.ping.ping_test_{c}"]["status"] for c in ("v4", "v6", "tcp")] == [
        "PASS", "FAIL", "SKIP"]
    assert tests["net_rx.selftests.igb.hang"]["status"] == "ERROR"  # timed out
    ktap = tests["net_rx.selftests.igb.ping"]["output_files"][0]
    assert ktap["name"] == "selftests__ktap__source__igb__ping_ktap"
    assert Counter(t["id"] for t in doc["tests"]).most_common(1)[0][1] == 1


def test_a_document_the_schema_rejects_is_never_written(tmp_path, monkeypatch):
    out = claims_out(tmp_path)
    with pytest.raises(HarnessError, match="origins are lowercase"):
        kcidb_document(out, "Harness-CI")
    import harness.scale.kcidb as kcidb

    monkeypatch.setattr(kcidb, "ROOT", "net rx")  # a path KCIDB's pattern refuses
    with pytest.raises(HarnessError, match=r"rejected by kcidb-io's schema v5\.\d+ at tests/0/path"):
        kcidb_document(out, "harness_ci")


def test_overlapping_outputs_are_refused_not_doubled(tmp_path):
    out = claims_out(tmp_path)
    shutil.copytree(out, out / "again")
    with pytest.raises(HarnessError, match="the same test twice"):
        kcidb_document(out, "harness_ci")

