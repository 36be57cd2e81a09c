"""User errors through the real CLI: one clear line, non-zero exit, no traceback."""

import subprocess
import sys

import pytest

HARNESS = [sys.executable, "-m", "harness.cli"]


def harness(*args: str, cache=None, timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [*HARNESS, *args] + (["--cache", str(cache)] if cache else [])
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def assert_user_error(res: subprocess.CompletedProcess, *needles: str) -> None:
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    for n in needles:
        assert n in res.stderr, res.stderr


@pytest.mark.slow
def test_fragment_with_nonexistent_option_fails_before_compiling(tmp_path, harness_cache):
    """Runs the real tinyconfig + merge_config + olddefconfig of linux-source-6.12."""
    bad = tmp_path / "bad.config"
    bad.write_text("CONFIG_IGB=y\nCONFIG_HARNESS_NO_SUCH_OPTION=y\n# CONFIG_PCI is not set\n")
    res = harness("kernel", "--fragment", "base", "--fragment", "nics", "--fragment", str(bad),
                  cache=harness_cache.root)
    assert_user_error(res, "CONFIG_HARNESS_NO_SUCH_OPTION=y (fragment bad.config line 2) ended up not set: "
                           "no such option in this kernel's Kconfig")
    # CONFIG_IGB depends on PCI, which the same fragment turned off: unsatisfiable.
    assert "CONFIG_IGB=y (fragment bad.config line 1) ended up not set: its dependencies are unmet" in res.stderr
    assert "kernel build:" not in res.stderr  # stopped before compiling anything


def test_bad_fragment_line(tmp_path):
    bad = tmp_path / "typo.config"
    bad.write_text("CONFIG_IGB=y\nCONFIG_E1000E y\n")
    assert_user_error(harness("kernel", "--fragment", str(bad), cache=tmp_path / "c"),
                      "typo.config:2: not a config line: 'CONFIG_E1000E y'")


def test_unknown_fragment_name(tmp_path):
    assert_user_error(harness("kernel", "--fragment", "nosuch", cache=tmp_path / "c"),
                      "unknown config fragment 'nosuch'", "known: base, coverage, debug, debug-checks, nics, observe")


def test_kernel_tree_that_is_not_a_tree(tmp_path):
    assert_user_error(harness("kernel", "--kernel-tree", str(tmp_path), cache=tmp_path / "c"),
                      "not a Linux source tree")


def test_boot_without_command(tmp_path):
    assert_user_error(harness("boot", cache=tmp_path / "c"), "give the command to run after --")


def test_unknown_claim_id(tmp_path):
    assert_user_error(harness("run", "--claims", "page-reuse,nope", cache=tmp_path / "c"),
                      "unknown claim id nope; known: page-based-rx, page-reuse")


def test_cache_prune_with_a_bad_size(tmp_path):
    assert_user_error(harness("cache", "prune", "--max-size", "lots", cache=tmp_path / "c"),
                      "cache size 'lots': expected a number with K, M, G or T (e.g. 20G)")


def test_cache_listing_of_an_empty_cache(tmp_path):
    res = harness("cache", cache=tmp_path / "c")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[-1].startswith(f"0 entries, 0 B in {tmp_path / 'c'} (limit ")


def test_cache_prune_with_the_automatic_limit_off_asks_for_a_limit(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_MAX", "0")
    assert_user_error(harness("cache", "prune", cache=tmp_path / "c"),
                      "the automatic cache limit is off (HARNESS_CACHE_MAX=0): give --max-size SIZE or --older-than")
