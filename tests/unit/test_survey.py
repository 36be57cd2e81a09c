"""The survey's table: a cell per (NIC, technique), a number or the reason there is none."""

import json

import pandas as pd

from harness.survey.files import write_survey
from harness.survey.techniques import TECHNIQUES, Cell, SurveyResult, peer_of


def test_each_nic_receives_from_a_peer_on_the_hub():
    models = ("igb", "e1000e", "vmxnet3")
    assert peer_of("igb", models) == "e1000e" and peer_of("vmxnet3", models) == "e1000e"
    assert peer_of("e1000e", models) == "igb"


def result() -> SurveyResult:
    cells = {}
    for m in ("igb", "e1000e"):
        cells[m] = {t.id: Cell(0.0 if m == "igb" else 1.0, "dma:* events") for t in TECHNIQUES}
    cells["e1000e"]["xdp-mode"] = Cell("generic", "probed")
    cells["e1000e"]["pp-slow-allocs-xdp"] = Cell(None, "", "xdp_pass:e1000e: kernel WARNING@x")
    return SurveyResult({"release": "6.12.95", "source": "debian-source", "key": "k"}, ("igb", "e1000e"), cells,
                        {"igb": "e1000e", "e1000e": "igb"})


def test_survey_files_say_what_each_cell_is(tmp_path):
    write_survey(tmp_path, result(), pd.DataFrame())
    doc = json.loads((tmp_path / "survey.json").read_text())
    assert set(doc["drivers"]) == {"igb", "e1000e"}
    e = doc["drivers"]["e1000e"]["cells"]
    assert e["pp-slow-allocs-xdp"] == {"value": None, "how": "", "why_not": "xdp_pass:e1000e: kernel WARNING@x"}
    assert e["xdp-mode"]["value"] == "generic"
    rows = pd.read_csv(tmp_path / "survey.csv")
    assert len(rows) == 2 * len(TECHNIQUES)
    md = (tmp_path / "report.md").read_text()
    assert "| rx DMA maps | per frame | 0 | 1 |" in md
    assert "- pp-slow-allocs-xdp: —: **not measured**: xdp_pass:e1000e: kernel WARNING@x" in md
    assert (tmp_path / "survey_per_frame.png").stat().st_size > 1000
    assert 'class="na"' in (tmp_path / "report.html").read_text()


def test_memory_per_frame_is_truesize_over_the_frames_that_reached_gro():
    from types import SimpleNamespace

    import pandas as pd

    from harness.measurement.measure import Measurement
    from harness.survey.techniques import memory_cells

    def measured(total: float, frames: float, rx_bytes: float) -> Measurement:
        rows = [{"metric": "rx_truesize_bytes", "driver": "igb", "value": total, "detail": ""},
                {"metric": "rx_truesize_frames", "driver": "igb", "value": frames, "detail": ""},
                {"metric": "counter:link.rx_bytes", "driver": "igb", "value": rx_bytes, "detail": ""}]
        return Measurement(SimpleNamespace(received=2000), pd.DataFrame(rows), 1.0)

    lab = SimpleNamespace(results={"memory-60:igb": measured(2000 * 2304, 2000, 2000 * 60),
                                   "memory-1514:igb": measured(2000 * 2304, 2000, 2000 * 1514)}, failures={})
    cells = memory_cells(lab, "igb")
    assert cells["rx-truesize-60"].value == 2304
    assert abs(cells["rx-truesize-per-byte"].value - 2304 / 1514) < 1e-9
    lab.results["memory-60:igb"] = measured(0, 0, 0)
    assert cells["rx-truesize-1514"].value == 2304
    assert memory_cells(lab, "igb")["rx-truesize-60"].why_not.startswith("no frame of igb reached")
