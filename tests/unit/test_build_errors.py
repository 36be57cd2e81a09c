"""The error lines a failed build shows, on recorded logs of real failures (7.2.13
tree): a syntax error in igb_main.c built as a module alone, a link error in vmlinux,
a Kconfig syntax error, a host without bc, and a first build's log (its real first
400 lines, where object files named *error* are compiled, then the same compiler
error as a whole-tree build prints it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.build_errors import error_lines, in_directory, log_error_lines

LOGS = Path(__file__).resolve().parents[1] / "fixtures" / "build_logs"
IGB = "/root/.cache/harness/work/linux/drivers/net/ethernet/intel/igb/igb_main.c"


def lines(name: str) -> list[str]:
    """The error lines of a recorded log, gcc's typographic quotes (a UTF-8 locale) as '."""
    return [line.replace("\u2018", "'").replace("\u2019", "'") for line in log_error_lines(LOGS / name)]


def test_a_compile_error_comes_first_with_its_function_and_caret():
    got = lines("module_syntax_error.log")
    assert got[:4] == ["igb_main.c: In function 'igb_can_reuse_rx_page':",
                       "igb_main.c:8552:9: error: expected ',' or ';' before 'struct'",
                       " 8552 |         struct page *page = rx_buffer->page;",
                       "      |         ^~~~~~"]
    assert "igb_main.c:8555:35: error: 'page' undeclared (first use in this function)" in got
    assert got[-1] == "make[3]: *** [/tmp/linux-7.2/scripts/Makefile.build:294: igb_main.o] Error 1"
    assert not any("note:" in line or "Waiting for unfinished jobs" in line for line in got)


def test_file_names_that_contain_error_are_not_errors():
    got = lines("full_build_compile_error.log")
    assert got[1] == f"{IGB}:8552:9: error: expected ',' or ';' before 'struct'"
    assert not any("str_error" in line for line in got)


def test_a_link_error_names_the_caller_and_the_missing_symbol():
    got = lines("kernel_link_error.log")
    assert got[0] == "ld: vmlinux.o: in function `netif_rx':"
    assert got[1] == ("/root/.cache/harness/work/linux/net/core/dev.c:5859: undefined reference to "
                      "`harness_no_such_function'")
    assert got[-1].startswith("make[3]: *** ") and got[-1].endswith("vmlinux.unstripped] Error 1")


def test_a_kconfig_error_names_the_file_and_line():
    got = lines("kconfig_syntax_error.log")
    assert got[0] == "drivers/net/Kconfig:22: syntax error"
    assert got[-1].endswith("allnoconfig] Error 1")


def test_a_missing_tool_is_named():
    got = lines("missing_tool_bc.log")
    assert got[0] == "/bin/sh: 1: bc: not found"
    assert got[-1] == "make[3]: *** [/tmp/linux-7.2/./Kbuild:24: include/generated/timeconst.h] Error 127"


def test_progress_lines_and_warnings_are_not_errors():
    text = "\n".join([
        "  CC      tools/objtool/str_error_r.o",
        "  CC      kernel/trace/error_report-traces.o",
        "drivers/net/Kconfig:12: warning: something unusual",
        "ld: warning: arch/x86/boot/compressed/head_64.o: missing .note.GNU-stack section",
        "the last line",
    ])
    assert error_lines(text, limit=2) == ["ld: warning: arch/x86/boot/compressed/head_64.o: missing .note.GNU-stack "
                                          "section", "the last line"]


@pytest.mark.parametrize("line, expect", [
    ("igb_main.c:8552:9: error: x", "{d}/igb_main.c:8552:9: error: x"),
    ("igb_main.c: In function 'f':", "{d}/igb_main.c: In function 'f':"),
    ("other.c:1:1: error: x", "other.c:1:1: error: x"),  # not the driver's: left as it is
    ("make[3]: *** [igb_main.o] Error 1", "make[3]: *** [igb_main.o] Error 1"),
])
def test_bare_file_names_become_the_users_files(tmp_path, line, expect):
    (tmp_path / "igb_main.c").write_text("")
    assert in_directory([line], tmp_path) == [expect.format(d=tmp_path)]
