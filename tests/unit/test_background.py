"""A background job (the guest image built during the kernel build) returns its
result or its error to the caller, and cancelling it kills its running command."""

import time
from pathlib import Path

import pytest

from harness.background import BackgroundJob
from harness.errors import BuildError
from harness.hostcmd import run_logged


def test_result_and_error_reach_the_caller():
    assert BackgroundJob("sum", lambda: 1 + 1).result() == 2

    def fail():
        raise ValueError("mirror unreachable")

    with pytest.raises(ValueError, match="mirror unreachable"):
        BackgroundJob("fail", fail).result()


def test_cancel_kills_the_running_command_and_its_children(tmp_path):
    pidfile = tmp_path / "child.pid"
    # A shell whose child sleeps: the whole process group must go, not only the shell.
    script = f"sleep 300 & echo $! > {pidfile}; wait"
    job = BackgroundJob("slow", lambda: run_logged(["sh", "-c", script], tmp_path / "log", what="slow"))
    for _ in range(100):
        if pidfile.is_file() and pidfile.read_text().strip():
            break
        time.sleep(0.05)
    child = int(pidfile.read_text())
    started = time.monotonic()
    job.cancel()
    assert time.monotonic() - started < 5
    with pytest.raises(BuildError, match="slow"):
        job.result()
    status = Path(f"/proc/{child}/status")
    for _ in range(50):  # reaped by init shortly after the kill
        try:
            state = status.read_text()
        except FileNotFoundError:
            break
        if "zombie" in state:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"sleep {child} outlived the cancelled job")
