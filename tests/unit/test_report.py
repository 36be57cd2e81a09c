import json
import xml.etree.ElementTree as ET
from types import SimpleNamespace

import pandas as pd

from harness.claims.base import Check, ClaimResult
from harness.report import write_report


def stub_lab():
    return SimpleNamespace(results={}, failures={"rx-no-reuse": "kernel variant 'no-reuse' unavailable: patch failed"},
                           boots=[], table=lambda: pd.DataFrame())


def results():
    return [
        ClaimResult("page-reuse", "pages are reused", "7",
                    [Check("igb rx DMA maps per frame (stock)", 0.0, "<", 0.05, how="kprobe"),
                     Check("igb rx DMA maps per frame, kernel patched so igb_can_reuse_rx_page() is false",
                           None, ">", 0.9, how="kprobe")],
                    ["Stock igb maps 0 per frame."], ["experiment rx-no-reuse not measured"]),
        ClaimResult("barriers", "no fences", "9", [Check("fences in rx lines", 2.0, "==", 0, how="objdump -dl")]),
        ClaimResult("page-based-rx", "build_skb", "6", [Check("build_skb/frame", 1.0, "~", 1.0, rel_tol=0.02)]),
    ]


META = {"run_id": "r1", "started": "now", "command": "harness run", "wall_s": 12.0,
        "kernel": {"release": "6.12.95", "key": "k1", "source": "debian-source"},
        "qemu": {"version": "QEMU emulator version 10.0.2", "accel": "tcg"}}


def test_report_files_and_verdicts(tmp_path):
    record = write_report(tmp_path, stub_lab(), results(), META)
    assert record["tally"] == {"inconclusive": 1, "refuted": 1, "confirmed": 1}
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["kernel"]["release"] == "6.12.95"
    assert [(c["id"], c["verdict"]) for c in doc["claims"]] == [
        ("page-reuse", "inconclusive"), ("barriers", "refuted"), ("page-based-rx", "confirmed")]
    assert doc["claims"][1]["metrics"] == {"fences in rx lines": 2.0}
    html = (tmp_path / "report.html").read_text()
    assert 'class="refuted">refuted' in html and "page_reuse.png" in html
    assert (tmp_path / "page_reuse.png").stat().st_size > 1000
    assert "| barriers | 9 | **refuted** | fences in rx lines == 0 |" in (tmp_path / "report.md").read_text()


def test_junit_maps_verdicts(tmp_path):
    write_report(tmp_path, stub_lab(), results(), META)
    suite = ET.parse(tmp_path / "junit.xml").getroot()
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("3", "1", "1")
    cases = {c.get("name"): c for c in suite}
    assert cases["barriers"].find("failure").get("message") == "refuted: fences in rx lines == 0"
    assert cases["page-reuse"].find("skipped") is not None
    assert cases["page-based-rx"].find("failure") is None
