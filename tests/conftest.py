"""Suite-wide checks: no QEMU started by this test process survives the session."""

import os
import subprocess

import pytest


def qemu_children(parent: int) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid=,ppid=,args="], capture_output=True, text=True, check=True).stdout
    left = []
    for line in out.splitlines():
        pid, ppid, args = line.split(None, 2)
        if int(ppid) == parent and "qemu-system" in args:
            left.append(f"pid {pid}: {args[:160]}")
    return left


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    left = qemu_children(os.getpid())
    if left:
        print("\nERROR: qemu-system processes started by this session are still running:\n  " + "\n  ".join(left))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
