"""Faults on real guests: each must end in a clear error that carries its
evidence, and leave no QEMU behind."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.errors import GuestError, GuestTimeout
from harness.vm import Guest, GuestOptions

pytestmark = pytest.mark.vm


def gone_within(g: Guest, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while g.alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    return not g.alive()


def test_kernel_panic_is_reported_with_its_console_lines(fresh_guest):
    g = fresh_guest()
    g.crash_expected = True
    with pytest.raises(GuestError) as e:
        g.run("echo 1 > /proc/sys/kernel/sysrq; echo c > /proc/sysrq-trigger", timeout=60)
    assert "Kernel panic - not syncing: sysrq triggered crash" in str(e.value)
    assert gone_within(g, 10), "panic=-1 with -no-reboot must end QEMU"
    assert any("sysrq triggered crash" in line for line in g.console.crash_lines)


def test_command_that_never_returns_times_out(guest):
    started = time.monotonic()
    with pytest.raises(GuestTimeout, match=r"did not finish within 3s: sleep 600"):
        guest.run(["sleep", "600"], timeout=3)
    assert time.monotonic() - started < 10
    assert guest.run(["true"]).rc == 0  # the shared guest is still usable
    guest.run("pkill -f '^sleep 600$'; true")


def test_qemu_killed_mid_test(fresh_guest):
    g = fresh_guest()
    os.kill(g.child.pid, signal.SIGKILL)
    with pytest.raises(GuestError, match="killed by signal 9"):
        g.run(["true"], timeout=20)


def test_stopped_vcpus_make_commands_time_out(fresh_guest):
    g = fresh_guest()
    g.qmp.command("stop")
    with pytest.raises(GuestTimeout, match="did not finish within 5s") as e:
        g.run(["true"], timeout=5)
    assert "last console lines" in str(e.value)


def test_boot_timeout_kills_the_guest(kernel, guest_image, harness_cache):
    g = Guest(kernel, guest_image, GuestOptions(accel="tcg", boot_timeout=1.0), harness_cache)
    with pytest.raises(GuestTimeout) as e:
        g.__enter__()
    assert "guest not ready after 1s (boot timeout" in str(e.value)
    assert "qemu-system-x86_64 -name harness-guest" in str(e.value)  # the command line to reproduce
    assert not g.alive()


def test_sigint_during_boot_stops_the_guest(kernel, guest_image, harness_cache):
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "boot", "--cache", str(harness_cache.root),
                             "--", "true"], stderr=subprocess.PIPE, text=True)
    qemu_pids: list[int] = []
    deadline = time.monotonic() + 60
    while not qemu_pids and time.monotonic() < deadline:
        out = subprocess.run(["pgrep", "-P", str(proc.pid), "qemu-system"], capture_output=True, text=True)
        qemu_pids = [int(p) for p in out.stdout.split()]
        time.sleep(0.1)
    assert qemu_pids, "QEMU never started"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    time.sleep(0.5)
    for pid in qemu_pids:
        status = Path(f"/proc/{pid}/status")
        assert not status.exists() or "zombie" in status.read_text().lower(), f"QEMU {pid} still running"


def test_killing_every_sleep_does_not_kill_init(guest):
    """PID 1 (tini) keeps a child that must never end: a test's pkill is not a panic."""
    guest.run("pkill -x sleep; true")
    time.sleep(1)
    assert guest.run(["true"]).rc == 0
    assert guest.run(["cat", "/proc/1/comm"]).stdout.strip() == "tini"
