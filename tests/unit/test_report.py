import json
import xml.etree.ElementTree as ET

import pandas as pd

from harness.claims.base import Check, ClaimResult
from harness.claims.lab import ExperimentFailure
from harness.guest.crash import classify
from harness.report.report import write_report

META = {"run_id": "r1", "started": "now", "command": "harness run", "wall_s": 12.0,
        "kernel": {"release": "6.12.95", "key": "k1", "source": "debian-source"},
        "qemu": {"version": "QEMU emulator version 10.0.2", "accel": "tcg"}}
OOPS = ["BUG: unable to handle page fault for address: ffffffff810c0125",
        "#PF: supervisor write access in kernel mode", "RIP: 0010:ftrace_kill+0x25/0x40",
        "Call Trace:", " <TASK>", " dma_map_page_attrs+0x9/0x2c0", "---[ end trace 0000000000000000 ]---"]


def record():
    crash = ExperimentFailure("rx-held", "error", "ssh connection to the guest is gone", (classify(OOPS),),
                              "killed by signal 9 (SIGKILL)")
    claims = [
        ClaimResult("page-reuse", "pages are reused", "7",
                    [Check("igb-rx-maps-per-frame", "igb rx DMA maps per frame (stock)", 0.0, "<", 0.05, how="dma"),
                     Check("no-reuse-maps-per-frame", "igb rx DMA maps per frame, no reuse", None, ">", 0.9,
                           how="dma", unmeasured="experiment rx-no-reuse was not run")],
                    ["Stock igb maps 0 per frame."]),
        ClaimResult("barriers", "no fences", "9",
                    [Check("x86-fences", "fences in rx lines", 2.0, "==", 0, how="objdump -dl")]),
        ClaimResult("page-based-rx", "build_skb", "6",
                    [Check("build-skb-per-frame", "build_skb/frame", 1.0, "~", 1.0, rel_tol=0.02)]),
        ClaimResult("skip-cpu-sync", "attrs", "8",
                    [Check("rx-maps-skip-cpu-sync", "fraction", 1.0, "==", 1.0)], errors=[crash]),
    ]
    tally: dict[str, int] = {}
    for c in claims:
        tally[c.verdict] = tally.get(c.verdict, 0) + 1
    return {**META, "claims": [c.to_json() for c in claims], "experiments": [], "boots": [], "tally": tally,
            "failures": {"rx-held": crash.to_json()}, "run_errors": [], "partial": False,
            "kernel_reports": [{"experiment": "rx-held", "counted_as": "error", **classify(OOPS).to_json()}]}


def test_report_files_and_verdicts(tmp_path):
    import copy

    rec = record()
    before = copy.deepcopy(rec)
    write_report(tmp_path, rec, pd.DataFrame())
    assert rec == before  # the record is complete when built: a writer adds nothing the exit status could read
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc == json.loads(json.dumps(before, default=str))
    assert doc["kernel"]["release"] == "6.12.95"
    assert [(c["id"], c["verdict"]) for c in doc["claims"]] == [
        ("page-reuse", "inconclusive"), ("barriers", "refuted"), ("page-based-rx", "confirmed"),
        ("skip-cpu-sync", "error")]
    assert doc["claims"][1]["metrics"] == {"x86-fences": 2.0}
    assert doc["claims"][0]["checks"][1]["unmeasured"] == "experiment rx-no-reuse was not run"
    html = (tmp_path / "report.html").read_text()
    assert 'class="refuted">refuted' in html and "page_reuse.png" in html
    assert (tmp_path / "page_reuse.png").stat().st_size > 1000
    md = (tmp_path / "report.md").read_text()
    assert "| barriers | 9 | **refuted** | fences in rx lines == 0 |" in md


def test_a_crash_leads_the_report_with_its_fingerprint(tmp_path):
    write_report(tmp_path, record(), pd.DataFrame())
    md = (tmp_path / "report.md").read_text().splitlines()
    assert md[2] == "## Failures and kernel reports"
    assert md[4].startswith("- **error** in experiment `rx-held`: rx-held: kernel BUG@ftrace_kill: BUG: unable "
                            "to handle page fault for address: ADDR")
    html = (tmp_path / "report.html").read_text()
    assert html.index("Failures and kernel reports") < html.index("<h2>Verdicts</h2>")
    assert "killed by signal 9 (SIGKILL)" in html


def test_junit_maps_verdicts(tmp_path):
    write_report(tmp_path, record(), pd.DataFrame())
    suite = ET.parse(tmp_path / "junit.xml").getroot()
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped"), suite.get("errors")) == (
        "4", "1", "1", "1")
    cases = {c.get("name"): c for c in suite}
    assert cases["barriers"].find("failure").get("message").startswith("refuted: fences in rx lines == 0")
    assert cases["page-reuse"].find("skipped") is not None
    assert cases["page-based-rx"].find("failure") is None
    assert "ftrace_kill" in cases["skip-cpu-sync"].find("error").get("message")
