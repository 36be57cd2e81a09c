"""The cost probe end to end: QEMU with the harness_cost plugin counts igb's rx path
in instructions, the talk's savings get verdicts (rx-cost), and work added to the
rx path is caught by a cost baseline, naming the function that grew
(tests/cost/igb-rx-busy-loop.patch: no check of any claim fails for it)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.vm

BUSY_LOOP = Path(__file__).resolve().parents[1] / "cost" / "igb-rx-busy-loop.patch"


def harness_run(cache, choice, out: Path, *extra: str) -> subprocess.CompletedProcess:
    kernel_args = ["--kernel-tree", str(choice.tree)] if choice.tree else ["--kernel", choice.kind]
    return subprocess.run([sys.executable, "-m", "harness.cli", "run", "--cache", str(cache.root), *kernel_args,
                           "--claims", "rx-cost", "--out", str(out), *extra],
                          capture_output=True, text=True, timeout=1800, check=False)


@pytest.fixture(scope="module")
def stock_cost(tmp_path_factory, harness_cache, kernel_choice):
    if kernel_choice.prebuilt:
        pytest.skip("the no-reuse variant of rx-cost needs a kernel the harness builds")  # reason: prebuilt image
    out = tmp_path_factory.mktemp("cost") / "stock"
    res = harness_run(harness_cache, kernel_choice, out)
    record = json.loads((out / "results.json").read_text()) if (out / "results.json").is_file() else {}
    assert record, res.stderr[-3000:]
    return out, record, res


def test_savings_confirmed_and_counted_by_qemu(stock_cost):
    _, record, res = stock_cost
    (claim,) = record["claims"]
    assert claim["verdict"] == "confirmed", json.dumps(claim, indent=1)[:4000]
    assert res.returncode == 0, res.stderr[-2000:]
    rx = claim["metrics"]["rx-cost/instructions/tcg-plugin:rx:one/igb"]
    assert rx > 1000  # instructions of igb's one-frame polls per frame: thousands, never 0
    functions = [k for k in claim["metrics"] if k.startswith("rx-cost/instructions/tcg-plugin:rx:fn:")]
    assert any("igb_poll [igb]" in k for k in functions), functions[:20]
    assert any(b.get("cost") for b in record["boots"])


def test_work_added_to_the_rx_path_is_flagged_with_its_function(stock_cost, tmp_path, harness_cache, kernel_choice):
    stock_out, _, _ = stock_cost
    res = harness_run(harness_cache, kernel_choice, tmp_path / "busy", "--patch", str(BUSY_LOOP),
                      "--baseline", str(stock_out))
    assert res.returncode == 3, res.stdout[-3000:] + res.stderr[-2000:]
    record = json.loads((tmp_path / "busy" / "results.json").read_text())
    grew = [c for c in record["baseline"]["changes"]
            if c["kind"] == "metric" and ":rx:fn:igb_poll [igb]" in c["metric"] and c["delta"] > 0]
    assert grew, json.dumps(record["baseline"]["changes"], indent=1)[:4000]
    assert "igb_poll" in res.stdout
