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
    _assert_gone(child, "the cancelled job")


def test_an_interrupted_command_takes_its_children_with_it(tmp_path):
    """Ctrl-C during `make -j`: killing make alone would leave its sub-makes compiling."""
    script = "sleep 300 & echo child $!; wait"
    seen: list[int] = []

    def interrupt_once_started(line: str) -> None:
        if line.startswith("child "):
            seen.append(int(line.split()[1]))
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_logged(["sh", "-c", script], tmp_path / "log", what="make", progress=interrupt_once_started)
    _assert_gone(seen[0], "the interrupted command")


def _assert_gone(pid: int, owner: str) -> None:
    status = Path(f"/proc/{pid}/status")
    for _ in range(50):  # reaped by init shortly after the kill
        try:
            state = status.read_text()
        except FileNotFoundError:
            return
        if "zombie" in state:
            return
        time.sleep(0.05)
    pytest.fail(f"sleep {pid} outlived {owner}")
