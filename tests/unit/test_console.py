import pexpect
import pytest

from harness.guest.console import ConsoleWatcher, parse_ready_line


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
    from harness.guest.console import is_crash_line

    assert not is_crash_line("[    0.425713] DMA-API: preallocated 65536 debug entries")
    assert not is_crash_line("[    0.426096] DMA-API: debugging enabled by kernel config")
    assert is_crash_line("[   12.1] igb 0000:00:04.0: DMA-API: device driver frees DMA memory with wrong function")


def test_reports_since_carries_the_call_trace(tmp_path):
    from harness.guest.console import ConsoleWatcher

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


def _watch(tmp_path, text: str) -> ConsoleWatcher:
    (tmp_path / "in.txt").write_text(text)
    w = ConsoleWatcher(pexpect.spawn("cat", [str(tmp_path / "in.txt")]), tmp_path / "console.log")
    w.start()
    assert w.eof.wait(10)
    return w


FIX = __import__("pathlib").Path(__file__).resolve().parents[1] / "fixtures"


def test_three_dma_api_reports_are_three_reports_with_one_fingerprint(tmp_path):
    # Console of a 6.12.95 guest whose igb_clean_rx_ring() unmaps as DMA_TO_DEVICE (num_errors=3).
    w = _watch(tmp_path, (FIX / "console_dma_api_direction.txt").read_text())
    reports = w.reports(0)
    assert [r.kind for r in reports] == ["DMA-API"] * 3
    assert {r.driver for r in reports} == {"igb"}
    assert len({r.fingerprint for r in reports}) == 1
    r = reports[0]
    assert r.function == "igb_clean_rx_ring"  # the caller, not the checker (check_unmap)
    assert r.fingerprint.startswith("DMA-API@igb_clean_rx_ring: DMA-API: igb N:N:N.N: device driver frees DMA "
                                    "memory with different direction")
    assert "end trace" in r.lines[-1]


def test_a_warning_names_its_function_and_reports_count_once(tmp_path):
    # A WARN_ON_ONCE() in igb's rx loop (6.12.95, igb built in).
    w = _watch(tmp_path, (FIX / "console_warning_igb_poll.txt").read_text())
    (r,) = w.reports(0)
    assert (r.kind, r.function) == ("WARNING", "igb_poll")
    assert "igb_main.c:N igb_poll" in r.fingerprint
    assert w.reports(w.line_count()) == []


def test_an_oops_fingerprint_ignores_addresses_and_times():
    from harness.guest.crash import classify

    a = classify(["[   12.1] BUG: unable to handle page fault for address: ffffffff810c0125",
                  "[   12.2] RIP: 0010:ftrace_kill+0x25/0x40"])
    b = classify(["[  99.9] BUG: unable to handle page fault for address: ffffffff81ab0000",
                  "[ 100.0] RIP: 0010:ftrace_kill+0x27/0x40"])
    assert a.fingerprint == b.fingerprint and a.function == "ftrace_kill" and a.kind == "BUG"
