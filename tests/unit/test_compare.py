"""harness.compare on a real results.json (6.12.95, TCG, all eight claims confirmed) and edited copies of it."""

import copy
import json
import math
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.report.compare import (
    Change,
    Tolerance,
    compare_results,
    load_results,
    metric_matrix,
    run_label,
    verdict_matrix,
)

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "results-6.12.95.json"
REUSE = "igb rx DMA maps per frame, kernel patched so igb_can_reuse_rx_page() is false"  # 1.0 in the fixture
ALLOC = "page allocations per frame under igb_poll (stock)"  # 0.0039 in the fixture


@pytest.fixture(scope="module")
def base() -> dict:
    return load_results(FIXTURE)


def claim(results: dict, cid: str) -> dict:
    return next(c for c in results["claims"] if c["id"] == cid)


def edited(results: dict, cid: str, **metrics: float) -> dict:
    new = copy.deepcopy(results)
    claim(new, cid)["metrics"].update(metrics)
    return new


def test_fixture_shape(base):
    assert len(base["claims"]) == 8
    assert claim(base, "page-reuse")["metrics"][REUSE] == 1.0
    assert claim(base, "page-reuse")["metrics"][ALLOC] == 0.0039
    assert run_label(base) == "6.12.95 (20261125T110631-a40910)"


def test_identical_is_ok(base):
    cmp = compare_results(base, copy.deepcopy(base))
    assert cmp.ok
    assert cmp.changes == []
    assert cmp.compared_claims == 8
    assert cmp.compared_metrics == sum(len(c["metrics"]) for c in base["claims"])
    assert cmp.summary_line().startswith("no change beyond tolerance (rel 2 %, abs 0.02) against 6.12.95 (")
    assert "|" not in cmp.to_markdown()


def test_metric_up_50_percent_is_one_regression(base):
    cmp = compare_results(base, edited(base, "page-reuse", **{REUSE: 1.5}))
    assert not cmp.ok
    assert len(cmp.changes) == 1
    [c] = cmp.regressions
    assert (c.kind, c.claim, c.metric, c.old, c.new) == ("metric", "page-reuse", REUSE, 1.0, 1.5)
    assert c.delta == pytest.approx(0.5)
    assert c.rel == pytest.approx(0.5)
    assert c.describe() == f'page-reuse: "{REUSE}" 1.0000 -> 1.5000 (+0.5000, +50.0 %, tolerance ±0.0200)'
    assert cmp.summary_line().startswith("1 change beyond tolerance (rel 2 %, abs 0.02) against 6.12.95")


def test_metric_from_zero_has_no_rel(base):
    cmp = compare_results(base, edited(base, "page-reuse", **{"igb rx DMA maps per frame (stock)": 1.0}))
    [c] = cmp.changes
    assert c.delta == 1.0
    assert c.rel is None
    assert c.describe() == ('page-reuse: "igb rx DMA maps per frame (stock)" 0.0000 -> 1.0000 '
                            "(+1.0000, tolerance ±0.0200)")


def test_within_tolerance_is_no_change(base):
    assert compare_results(base, edited(base, "page-reuse", **{REUSE: 1.01})).ok
    assert compare_results(base, edited(base, "page-reuse", **{REUSE: 0.99})).changes == []
    # exactly at the bound does not count, despite float rounding (1.02 - 1.0 > 0.02 in binary)
    assert compare_results(base, edited(base, "page-reuse", **{REUSE: 1.02})).ok


def test_large_value_uses_relative_bound(base):
    metric = "largest sync for the device (bytes)"  # 1536.0
    assert compare_results(base, edited(base, "half-page-sync", **{metric: 1560.0})).ok  # +1.6 %
    [c] = compare_results(base, edited(base, "half-page-sync", **{metric: 2048.0})).changes
    assert c.tolerance == pytest.approx(30.72)


def test_near_zero_absolute_floor(base):
    # page allocations per frame under TCG: 0.004 in one run, 0.017 in the next (+325 %) both mean "none"
    old = edited(base, "page-reuse", **{ALLOC: 0.004})
    assert compare_results(old, edited(base, "page-reuse", **{ALLOC: 0.017})).changes == []
    [c] = compare_results(old, edited(base, "page-reuse", **{ALLOC: 0.05})).changes
    assert c.kind == "metric"
    assert c.tolerance == 0.02


def test_verdict_refuted_is_regression(base):
    new = copy.deepcopy(base)
    claim(new, "barriers")["verdict"] = "refuted"
    cmp = compare_results(base, new)
    [c] = cmp.changes
    assert (c.kind, c.claim, c.metric, c.old, c.new) == ("verdict", "barriers", "", "confirmed", "refuted")
    assert c.is_regression
    assert c.describe() == "barriers: verdict confirmed -> refuted"
    assert not cmp.ok


def test_verdict_inconclusive_kind(base):
    new = copy.deepcopy(base)
    claim(new, "xdp")["verdict"] = "inconclusive"
    [c] = compare_results(base, new).changes
    assert c.kind == "inconclusive"
    assert c.is_regression


def test_claim_missing_and_new(base):
    new = copy.deepcopy(base)
    new["claims"] = [c for c in new["claims"] if c["id"] != "xdp"]
    cmp = compare_results(base, new)
    [c] = cmp.changes
    assert (c.kind, c.claim, c.old) == ("claim-missing", "xdp", "confirmed")
    assert c.is_regression
    assert cmp.compared_claims == 7
    back = compare_results(new, base)
    [c] = back.changes
    assert c.kind == "claim-new"
    assert not c.is_regression
    assert back.ok


def test_metric_missing_and_new(base):
    new = copy.deepcopy(base)
    del claim(new, "page-reuse")["metrics"][REUSE]
    [c] = compare_results(base, new).changes
    assert (c.kind, c.metric, c.old, c.new) == ("metric-missing", REUSE, 1.0, None)
    assert c.is_regression
    [c] = compare_results(new, base).changes
    assert (c.kind, c.new) == ("metric-new", 1.0)
    assert not c.is_regression


def test_nan_and_none(base):
    nan_both = compare_results(edited(base, "xdp", **{"napi_build_skb per frame under XDP_PASS": math.nan}),
                               edited(base, "xdp", **{"napi_build_skb per frame under XDP_PASS": None}))
    assert nan_both.changes == []
    [c] = compare_results(base, edited(base, "page-reuse", **{REUSE: math.nan})).changes
    assert (c.kind, c.old, c.new, c.delta, c.rel) == ("metric", 1.0, None, None, None)
    assert "n/a" in c.describe()
    assert c.is_regression


def test_nan_as_json_writes_it(tmp_path, base):
    doc = edited(base, "page-reuse", **{REUSE: math.nan})
    (tmp_path / "results.json").write_text(json.dumps(doc, indent=2))
    assert "NaN" in (tmp_path / "results.json").read_text()
    cmp = compare_results(load_results(tmp_path), load_results(tmp_path))
    assert cmp.ok
    assert cmp.changes == []


def test_load_results_directory_and_file(tmp_path):
    (tmp_path / "results.json").write_text(FIXTURE.read_text())
    assert load_results(tmp_path)["run_id"] == load_results(tmp_path / "results.json")["run_id"]


def test_load_results_missing(tmp_path):
    with pytest.raises(HarnessError, match=r"not found: give a results\.json") as e:
        load_results(tmp_path / "nope.json")
    assert str(tmp_path / "nope.json") in str(e.value)
    with pytest.raises(HarnessError) as e:
        load_results(tmp_path)  # a directory without results.json
    assert str(tmp_path / "results.json") in str(e.value)
    assert "\n" not in str(e.value)


def test_load_results_bad_json(tmp_path):
    bad = tmp_path / "results.json"
    bad.write_text('{"claims": [\n  {"id": "x",}\n]}')
    with pytest.raises(HarnessError, match=r"not valid JSON \(line 2, column") as e:
        load_results(bad)
    assert str(bad) in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("doc", [{"run_id": "r"}, {"claims": {}}, [1, 2], {"claims": [{"verdict": "confirmed"}]}])
def test_load_results_not_a_result(tmp_path, doc):
    f = tmp_path / "other.json"
    f.write_text(json.dumps(doc))
    with pytest.raises(HarnessError, match="is not a harness result") as e:
        load_results(f)
    assert str(f) in str(e.value)


def test_to_dict_and_markdown(base):
    new = edited(base, "page-reuse", **{REUSE: math.nan, ALLOC: 0.5})
    claim(new, "barriers")["verdict"] = "refuted"
    claim(new, "xdp")["metrics"]["a | new metric"] = 2.0
    cmp = compare_results(base, new, Tolerance(rel=0.05, abs=0.01))
    doc = cmp.to_dict()
    text = json.dumps(doc, allow_nan=False)
    assert json.loads(text)["regressions"] == 3
    assert doc["ok"] is False
    assert doc["tolerance"] == {"rel": 0.05, "abs": 0.01}
    assert [c["kind"] for c in doc["changes"]] == ["metric", "metric", "verdict", "metric-new"]
    nan_change = next(c for c in doc["changes"] if c["metric"] == REUSE)
    assert (nan_change["old"], nan_change["new"], nan_change["delta"]) == (1.0, None, None)
    assert nan_change["text"] == f'page-reuse: "{REUSE}" 1.0000 -> n/a (no longer measured)'
    md = cmp.to_markdown()
    lines = md.splitlines()
    assert lines[0] == cmp.summary_line()
    assert lines[0].startswith("3 changes beyond tolerance (rel 5 %, abs 0.01) against 6.12.95 (")
    assert "1 informational" in lines[0]
    assert lines[2].startswith("| claim | metric | base (6.12.95 (")
    assert lines[3] == "|---|---|---|---|---|"
    assert len(lines) == 4 + 4
    assert "| barriers | (verdict) | confirmed | refuted | verdict changed |" in md
    assert f"| page-reuse | {ALLOC} | 0.0039 | 0.5000 | +0.4961, +12720.5 %, tolerance ±0.0100 |" in md
    assert "| xdp | a \\| new metric | absent | 2.0000 |" in md


def test_tolerance_validation():
    assert Tolerance().bound(0.0) == 0.02
    assert Tolerance().bound(10.0) == pytest.approx(0.2)
    with pytest.raises(HarnessError):
        Tolerance(rel=-0.1)
    with pytest.raises(ValueError):
        Change("bogus", "x")


def test_metric_matrix_two_runs(base):
    new = edited(base, "page-reuse", **{REUSE: 1.5, ALLOC: 0.017})
    claim(new, "xdp")["metrics"]["napi_build_skb per frame under XDP_PASS"] = math.nan
    rows = metric_matrix([("6.12.95", base), ("6.13", new)])
    assert len(rows) == sum(len(c["metrics"]) for c in base["claims"])
    by = {(r["claim"], r["metric"]): r for r in rows}
    r = by[("page-reuse", REUSE)]
    assert r["values"] == {"6.12.95": 1.0, "6.13": 1.5}
    assert r["delta"]["6.13"] == pytest.approx(0.5)
    assert r["rel"]["6.13"] == pytest.approx(0.5)
    assert "6.12.95" not in r["delta"]
    assert r["differs"] is True
    r = by[("page-reuse", ALLOC)]
    assert r["delta"]["6.13"] == pytest.approx(0.0131)
    assert r["differs"] is False
    r = by[("page-reuse", "igb rx DMA maps per frame (stock)")]
    assert (r["delta"]["6.13"], r["rel"]["6.13"], r["differs"]) == (0.0, None, False)
    r = by[("xdp", "napi_build_skb per frame under XDP_PASS")]
    assert r["values"]["6.13"] is None
    assert r["delta"]["6.13"] is None
    assert r["differs"] is True and r["one_sided"] is True
    assert not any(r["one_sided"] for k, r in by.items() if k[1] != "napi_build_skb per frame under XDP_PASS")
    json.dumps(rows, allow_nan=False)
    assert [(r["claim"], r["metric"]) for r in rows][:2] == [(c, m) for c, m in list(by)[:2]]


def test_metric_matrix_labels_must_differ(base):
    with pytest.raises(HarnessError, match="distinct labels"):
        metric_matrix([("a", base), ("a", base)])


def test_verdict_matrix(base):
    new = copy.deepcopy(base)
    claim(new, "barriers")["verdict"] = "refuted"
    new["claims"] = [c for c in new["claims"] if c["id"] != "xdp"]
    rows = verdict_matrix([("a", base), ("b", new)])
    assert [r["claim"] for r in rows] == [c["id"] for c in base["claims"]]
    by = {r["claim"]: r for r in rows}
    assert by["barriers"]["verdicts"] == {"a": "confirmed", "b": "refuted"}
    assert by["barriers"]["differs"]
    assert by["xdp"]["verdicts"] == {"a": "confirmed", "b": None}
    assert not by["page-reuse"]["differs"]
    assert by["page-reuse"]["title"] == claim(base, "page-reuse")["title"]


def test_a_check_renamed_since_the_baseline_compares_under_its_new_id():
    # xsk-zero-copy's socket counts became what the kernel delivered (Dec 2026).
    def run(ids: tuple[str, str], zc: float) -> dict:
        return {"claims": [{"id": "xsk-zero-copy", "verdict": "confirmed",
                            "metrics": {ids[0]: zc, ids[1]: 1.0, "copy-copies-per-frame": 1.0}}]}

    old, new = ("zc-frames-received", "copy-frames-received"), ("zc-frames-delivered", "copy-frames-delivered")
    assert compare_results(run(old, 1.0), run(new, 1.0)).ok
    moved = compare_results(run(old, 1.0), run(new, 0.0))
    assert not moved.ok and [(c.kind, c.metric) for c in moved.changes] == [("metric", "zc-frames-delivered")]
