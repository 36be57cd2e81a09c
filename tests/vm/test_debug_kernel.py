"""The debug flavour on real guests (pytest --debug-kernel): it boots clean with
kmemleak and page_owner on, the rx-alloc-failure experiment passes on stock igb,
and each breaker in tests/debug/ is caught for the reason its header names:
a page or slab leak by the leak checks, a use-after-free by KASAN, a leak on the
allocation-failure path and a ring that stops refilling by `harness faults`."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.guest.vm import Guest, GuestOptions
from harness.measurement import leaks
from tests.breaker_meta import read_breaker

pytestmark = [pytest.mark.vm, pytest.mark.debug_kernel]

DEBUG_BREAKERS = [read_breaker(p) for p in sorted((Path(__file__).parents[1] / "debug").glob("*.patch"))]


def harness_cli(*args: str, cache, kernel_choice, timeout: float = 2400) -> subprocess.CompletedProcess:
    kernel_args = ["--kernel-tree", str(kernel_choice.tree)] if kernel_choice.tree else ["--kernel", kernel_choice.kind]
    return subprocess.run([sys.executable, "-m", "harness.cli", *args, "--cache", str(cache.root), *kernel_args],
                          capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def debug_kernel(kernel_choice, harness_cache):
    if kernel_choice.prebuilt:
        pytest.skip(f"--kernel {kernel_choice.kind} is prebuilt")  # reason: the debug flavour is a build
    from harness.artifacts.kernel import DEBUG_FRAGMENT, DEFAULT_FRAGMENTS
    from harness.artifacts.kernel_choice import KernelChoice

    return KernelChoice(kernel_choice.kind, kernel_choice.tree,
                        (*DEFAULT_FRAGMENTS, DEBUG_FRAGMENT)).get(harness_cache)


def test_debug_guest_boots_clean_with_its_leak_finders(debug_kernel, guest_image, harness_cache):
    assert debug_kernel.debug and "kmemleak=on" in debug_kernel.boot_args
    with Guest(debug_kernel, guest_image, GuestOptions(), harness_cache) as g:
        assert g.console.reports(0) == []
        before = leaks.arm(g)
        assert before, "page_owner_stacks lists the live pages per allocation stack"
        check = leaks.read(g, before, leaks.drivers_of(g))
        assert check.objects == [] and not check.page_leak, check.to_json()
        cmdline = g.run("cat /proc/cmdline").stdout
        assert "kmemleak=on" in cmdline and "page_owner=on" in cmdline


def test_rx_alloc_failure_on_stock_igb_passes(tmp_path, harness_cache, kernel_choice, debug_kernel):
    out = tmp_path / "faults"
    res = harness_cli("faults", "--nics", "igb,e1000e", "--out", str(out), cache=harness_cache,
                      kernel_choice=kernel_choice)
    doc = json.loads((out / "faults.json").read_text())
    igb = next(r for r in doc["nics"] if r["nic"] == "igb")
    assert igb["verdict"] == "pass", json.dumps(igb, indent=1) + res.stderr[-3000:]
    assert sum(igb["injected"].values()) > 0 and igb["faults_counted_by_driver"] > 0
    assert igb["recovery_frames_received"] == igb["recovery_frames_sent"] > 0


@pytest.mark.parametrize("breaker", DEBUG_BREAKERS, ids=[b.name for b in DEBUG_BREAKERS])
def test_debug_breaker_is_caught_for_its_reason(breaker, tmp_path, harness_cache, kernel_choice, debug_kernel):
    out = tmp_path / "out"
    if breaker.claim == "faults":
        res = harness_cli("faults", "--nics", "igb,e1000e", "--patch", str(breaker.path), "--out", str(out),
                          cache=harness_cache, kernel_choice=kernel_choice)
        igb = next(r for r in json.loads((out / "faults.json").read_text())["nics"] if r["nic"] == "igb")
        assert igb["verdict"] == "fail", json.dumps(igb, indent=1)
        assert any(" ".join(breaker.must_fail) in r for r in igb["reasons"]), igb["reasons"]
        assert res.returncode == 1, res.stderr[-2000:]
        return
    res = harness_cli("run", "--debug", "--patch", str(breaker.path), "--claims", "page-based-rx", "--out", str(out),
                      cache=harness_cache, kernel_choice=kernel_choice)
    record = json.loads((out / "results.json").read_text())
    (claim,) = record["claims"]
    assert claim["verdict"] == "error", json.dumps(claim, indent=1)
    headlines = [e["headline"] for e in claim["errors"]]
    assert any(" ".join(breaker.must_fail) in h for h in headlines), headlines
    assert res.returncode == 5, res.stderr[-2000:]
