from pathlib import Path

import pytest

from harness.artifacts.kconfig import (
    check_fragments,
    dropped_options,
    load_fragment,
    parse_config_text,
    resolve_fragments,
)
from harness.errors import ConfigFragmentError


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_parse_values_and_not_set():
    opts = parse_config_text('CONFIG_A=y\n# CONFIG_B is not set\n# comment\n\nCONFIG_C="x y"\nCONFIG_D=16\n', "f")
    assert [(o.name, o.value, o.line) for o in opts] == [
        ("CONFIG_A", "y", 1), ("CONFIG_B", "n", 2), ("CONFIG_C", '"x y"', 5), ("CONFIG_D", "16", 6)]


def test_bad_fragment_line_names_file_and_line():
    with pytest.raises(ConfigFragmentError, match=r"bad.config:2: not a config line: 'IGB=y'"):
        load_fragment(write(Path(__import__("tempfile").mkdtemp()), "bad.config", "CONFIG_A=y\nIGB=y\n"))


def test_dropped_option_is_reported_with_fragment_and_line(tmp_path):
    frag = load_fragment(write(tmp_path, "nics.config", "CONFIG_IGB=y\nCONFIG_E1000E=y\n"))
    final = "CONFIG_IGB=y\n# CONFIG_E1000E is not set\n"
    assert [(o.name, got) for o, got in dropped_options(final, [frag])] == [("CONFIG_E1000E", "n")]
    with pytest.raises(ConfigFragmentError, match=r"CONFIG_E1000E=y \(fragment nics.config line 2\) ended up not set"):
        check_fragments(final, [frag], None)


def test_nonexistent_symbol_is_called_so(tmp_path):
    src = tmp_path / "src"
    (src / "drivers").mkdir(parents=True)
    (src / "drivers/Kconfig").write_text("config IGB\n\ttristate \"igb\"\n")
    frag = load_fragment(write(tmp_path, "x.config", "CONFIG_IGB=y\nCONFIG_NO_SUCH_THING=y\n"))
    with pytest.raises(ConfigFragmentError) as e:
        check_fragments("CONFIG_IGB=y\n", [frag], src)
    assert "CONFIG_NO_SUCH_THING=y (fragment x.config line 2) ended up not set: no such option" in str(e.value)
    assert "CONFIG_IGB" not in str(e.value)


def test_later_fragment_overrides_earlier(tmp_path):
    a = load_fragment(write(tmp_path, "a.config", "CONFIG_X=y\n"))
    b = load_fragment(write(tmp_path, "b.config", "# CONFIG_X is not set\n"))
    assert dropped_options("# CONFIG_X is not set\n", [a, b]) == []


def test_unknown_fragment_name_lists_known(tmp_path):
    write(tmp_path, "base.config", "CONFIG_A=y\n")
    with pytest.raises(ConfigFragmentError, match=r"unknown config fragment 'nope'.*known: base"):
        resolve_fragments(["nope"], tmp_path)


def test_project_fragments_parse():
    configs = Path(__file__).resolve().parents[2] / "kernel-configs"
    frags = resolve_fragments(["base", "nics", "observe"], configs)
    names = {o.name for f in frags for o in f.options}
    assert {"CONFIG_IGB", "CONFIG_E1000E", "CONFIG_NET_PKTGEN", "CONFIG_FUNCTION_PROFILER"} <= names


def test_a_renamed_option_is_written_under_its_new_name(tmp_path):
    from harness.artifacts.kconfig import adapt_fragments, load_fragment

    src = tmp_path / "src"
    (src / "fs/proc").mkdir(parents=True)
    (src / "fs/proc/Kconfig").write_text("config SYSCTL\n\tbool \"Sysctl support (/proc/sys)\"\n")
    frag = write(tmp_path, "base.config", "CONFIG_PROC_FS=y\nCONFIG_PROC_SYSCTL=y\n")
    (adapted,), notes = adapt_fragments([load_fragment(frag)], src, tmp_path / "adapted")
    assert [o.name for o in adapted.options] == ["CONFIG_PROC_FS", "CONFIG_SYSCTL"]
    assert adapted.name == "base"
    assert notes == ["CONFIG_PROC_SYSCTL (base.config line 2) is CONFIG_SYSCTL in this kernel: using that"]
    # A kernel that still has the old name keeps the fragment as it is.
    (src / "fs/proc/Kconfig").write_text("config PROC_SYSCTL\n\tbool\nconfig SYSCTL\n\tbool\n")
    (same,), notes = adapt_fragments([load_fragment(frag)], src, tmp_path / "adapted2")
    assert same.path == frag and notes == []


def test_kbuild_progress_totals_come_from_the_last_build(tmp_path, monkeypatch):
    from harness.artifacts.kbuild import KbuildProgress
    from harness.cache import Cache

    cache = Cache(tmp_path)
    first = KbuildProgress(cache, "k")
    assert "no total yet" in first.update("  CC      init/main.o")
    first.update("  CC      mm/slub.o")
    first.finished()
    again = KbuildProgress(cache, "k")
    assert again.update("  CC      init/main.o").startswith("1/2 objects (50%")
    incremental = KbuildProgress(cache, "k")
    incremental.update("  CC      init/main.o")
    incremental.finished()  # fewer objects than a full build: the full count stays
    assert KbuildProgress(cache, "k").expected == 2


def test_a_first_build_estimates_its_total_from_the_same_series_and_fragments(tmp_path):
    from harness.artifacts.kbuild import KbuildProgress, build_family
    from harness.cache import Cache

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "Makefile").write_text("# SPDX\nVERSION = 6\nPATCHLEVEL = 12\nSUBLEVEL = 95\n")
    family = build_family(tmp_path / "src", ["nics", "base"])
    assert family == "6.12|base,nics"
    cache = Cache(tmp_path / "cache")
    first = KbuildProgress(cache, "k1", family)
    first.update("  CC      init/main.o")
    first.update("  CC      mm/slub.o")
    first.finished()
    other_config = KbuildProgress(cache, "k2", family)  # another config of the same series and fragments
    assert other_config.update("  CC      init/main.o").startswith("1/≈2 objects (50%")


def test_recorded_totals_cover_the_default_and_debug_builds():
    import json

    from harness.artifacts.kbuild import KbuildProgress

    known = json.loads(KbuildProgress.KNOWN_TOTALS.read_text())
    assert {"6.12|base,debug-checks,nics,observe,selftests",
            "6.12|base,debug,debug-checks,nics,observe,selftests"} <= set(known)
    assert all(isinstance(n, int) and n > 500 for n in known.values())
