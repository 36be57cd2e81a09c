"""`harness run` end to end through the CLI: a baseline compare passes on an
unchanged rerun and flags a deliberately changed stored result (exit 3)."""

import json
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.vm

CLAIM = "page-based-rx"  # one experiment (10,000 frames): the cheapest claim to run twice


def harness(*args: str, cache) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args[:1], "--cache", str(cache), *args[1:]],
                          capture_output=True, text=True, timeout=900, check=False)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, harness_cache):
    out = tmp_path_factory.mktemp("run") / "first"
    res = harness("run", "--claims", CLAIM, "--out", str(out), cache=harness_cache.root)
    assert res.returncode == 0, res.stderr[-3000:]
    return out


def test_run_writes_every_file(first_run):
    for name in ("report.html", "report.md", "results.json", "measurements.csv", "measurements.json", "junit.xml"):
        assert (first_run / name).is_file(), name
    record = json.loads((first_run / "results.json").read_text())
    assert [c["id"] for c in record["claims"]] == [CLAIM]
    assert record["claims"][0]["verdict"] == "confirmed"


def test_unchanged_rerun_passes_its_baseline(first_run, tmp_path, harness_cache):
    res = harness("run", "--claims", CLAIM, "--out", str(tmp_path / "second"), "--baseline", str(first_run),
                  cache=harness_cache.root)
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    assert "no change beyond tolerance" in res.stdout.lower() or "0 changes" in res.stdout, res.stdout
    record = json.loads((tmp_path / "second" / "results.json").read_text())
    assert record["baseline"]["ok"] and record["baseline"]["compared_metrics"] >= 2
    assert "against-baseline" in (tmp_path / "second" / "junit.xml").read_text()


def test_edited_baseline_is_flagged(first_run, tmp_path):
    edited = tmp_path / "edited"
    shutil.copytree(first_run, edited)
    record = json.loads((edited / "results.json").read_text())
    metrics = record["claims"][0]["metrics"]
    name = "build-skb-per-frame"
    assert name in metrics, metrics
    metrics[name] = 0.5  # as if build_skb ran for every second frame
    (edited / "results.json").write_text(json.dumps(record))
    res = subprocess.run([sys.executable, "-m", "harness.cli", "compare", str(edited), str(first_run)],
                         capture_output=True, text=True, check=False)
    assert res.returncode == 3, res.stdout + res.stderr
    assert name in res.stdout and "| 0.5000 | 1.0000 |" in res.stdout, res.stdout
