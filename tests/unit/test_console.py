import pexpect
import pytest

from harness.console import ConsoleWatcher, parse_ready_line


def test_ready_line_parsing_keeps_mac_colons():
    nics = parse_ready_line("eth0:virtio_net:52:54:00:00:00:0a,eth1:igb:52:54:00:12:34:01")
    assert [(n.name, n.driver, n.mac) for n in nics] == [
        ("eth0", "virtio_net", "52:54:00:00:00:0a"), ("eth1", "igb", "52:54:00:12:34:01")]


SAMPLE = """\
[    0.000000] Linux version 6.12.95 (harness@harness)
[    1.234567] igb 0000:00:04.0: Intel(R) Gigabit Ethernet Network Connection
HARNESS-READY nics=eth1:igb:52:54:00:12:34:01,eth2:e1000e:52:54:00:12:34:02
[    5.000000] ------------[ cut here ]------------
[    5.000001] WARNING: CPU: 1 PID: 0 at drivers/net/ethernet/intel/igb/igb_main.c:123 igb_poll+0x12/0x300
[    6.000000] sysrq: Trigger a crash
[    6.000001] Kernel panic - not syncing: sysrq triggered crash
"""


@pytest.fixture
def watched(tmp_path):
    (tmp_path / "in.txt").write_text(SAMPLE)
    child = pexpect.spawn("cat", [str(tmp_path / "in.txt")])
    w = ConsoleWatcher(child, tmp_path / "console.log")
    w.start()
    assert w.eof.wait(10)
    return w


def test_watcher_sees_ready_and_crashes(watched, tmp_path):
    assert watched.ready.is_set()
    assert [n.driver for n in watched.nics] == ["igb", "e1000e"]
    assert len(watched.crash_lines) == 2
    assert "WARNING: CPU: 1" in watched.crash_lines[0] and "Kernel panic" in watched.crash_lines[1]
    assert "Linux version" in (tmp_path / "console.log").read_text()


def test_crashes_since_counts_only_later_lines(watched):
    assert len(watched.crashes_since(0)) == 2
    assert watched.crashes_since(6) == ["[    6.000001] Kernel panic - not syncing: sysrq triggered crash"]
    assert watched.crashes_since(watched.line_count()) == []


def test_benign_lines_are_not_crashes(tmp_path):
    child = pexpect.spawn("printf", ["'bugs in the BUGGY driver: none\\nWARNING nothing at all\\n'"])
    w = ConsoleWatcher(child, tmp_path / "c.log")
    w.start()
    assert w.eof.wait(10)
    assert w.crash_lines == []


def test_dma_api_debug_banner_is_allowed_but_reports_are_not():
    from harness.console import is_crash_line

    assert not is_crash_line("[    0.425713] DMA-API: preallocated 65536 debug entries")
    assert not is_crash_line("[    0.426096] DMA-API: debugging enabled by kernel config")
    assert is_crash_line("[   12.1] igb 0000:00:04.0: DMA-API: device driver frees DMA memory with wrong function")


def test_reports_since_carries_the_call_trace(tmp_path):
    from harness.console import ConsoleWatcher

    w = ConsoleWatcher(child=None, log_path=tmp_path / "log")  # type: ignore[arg-type]
    w._feed("[    1.0] boot line\n")
    mark = w.line_count()
    w._feed("[    5.1] lkdtm: Performing direct entry WARNING\n"
            "[    5.2] WARNING: CPU: 1 PID: 123 at drivers/misc/lkdtm/bugs.c:111 lkdtm_WARNING+0x9/0x10\n"
            "[    5.3] Call Trace:\n[    5.4]  <TASK>\n[    5.5]  lkdtm_do_action+0x16/0x30\n"
            "[    5.6] ---[ end trace 0000000000000000 ]---\n[    5.7] unrelated\n")
    got = w.reports_since(mark)
    assert got[0].endswith("lkdtm_WARNING+0x9/0x10") and got[-1].endswith("---[ end trace 0000000000000000 ]---")
    assert len(got) == 5
    assert w.reports_since(w.line_count()) == []
