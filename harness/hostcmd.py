"""Host-side commands: a tool check that names the Debian package, and a runner
that streams a long command's output to a log file while showing progress."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from harness.build_errors import log_error_lines
from harness.errors import BuildError, MissingToolError

# The Debian package that provides each host tool the harness calls.
TOOL_PACKAGES = {
    "qemu-system-x86_64": "qemu-system-x86 (from bookworm-backports)",
    "mmdebstrap": "mmdebstrap",
    "mkfs.ext4": "e2fsprogs",
    "make": "make",
    "gcc": "gcc",
    "ccache": "ccache",
    "flex": "flex",
    "bison": "bison",
    "bc": "bc",
    "pahole": "dwarves",
    "cpio": "cpio",
    "depmod": "kmod",
    "xz": "xz-utils",
    "dpkg-deb": "dpkg",
    "apt-get": "apt",
    "clang": "clang",
    "llc": "llvm",
    "objdump": "binutils",
    "ssh-keygen": "openssh-client",
    "pkg-config": "pkg-config",
}


def require_tool(tool: str, why: str = "") -> str:
    path = shutil.which(tool)
    if not path:
        raise MissingToolError(tool, TOOL_PACKAGES.get(tool, tool), why)
    return path


def run_checked(cmd: Sequence[str], *, cwd: Path | None = None, what: str = "", timeout: float = 600) -> str:
    """Run a short host command; on failure raise with the command and its stderr."""
    require_tool(cmd[0])
    try:
        proc = subprocess.run(
            list(cmd), cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as e:
        raise BuildError(what or cmd[0], "-", [f"timed out after {timeout:.0f}s: {' '.join(cmd)}"]) from e
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
        raise BuildError(what or " ".join(cmd), "-", [f"$ {' '.join(cmd)}  (exit {proc.returncode})", *lines])
    return proc.stdout


def run_logged(
    cmd: Sequence[str],
    log_path: Path,
    *,
    what: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 3600,
    progress: Callable[[str], str | None] | None = None,
    progress_every: float = 5.0,
) -> None:
    """Run a long command, all output to `log_path`. `progress(line)` sees every
    output line and returns a status summary (or None); every `progress_every` s the
    latest summary (default: the last line) goes to stderr. On failure raise
    BuildError with the first error lines of the log."""
    require_tool(cmd[0])
    start = time.monotonic()
    last_report = start
    status = ""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a") as log:
        log.write(f"$ {' '.join(cmd)}\n")
        log.flush()
        proc = subprocess.Popen(
            list(cmd), cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, errors="replace", start_new_session=True,
        )
        assert proc.stdout is not None
        _track(proc, True)
        try:
            for line in proc.stdout:
                log.write(line)
                status = (progress(line) if progress else None) or line.strip()[:100] or status
                now = time.monotonic()
                if now - start > timeout:  # the group is killed below, as on any exception
                    raise BuildError(what, str(log_path), [f"timed out after {timeout:.0f}s"])
                if now - last_report >= progress_every:
                    last_report = now
                    print(f"  {what}: {status} [{now - start:.0f}s]",
                          file=sys.stderr, flush=True)
            rc = proc.wait()
        except BaseException:
            # The whole group: killing make alone leaves its sub-makes compiling.
            _kill_group(proc)
            proc.wait()
            raise
        finally:
            _track(proc, False)
    if rc != 0:
        lines = log_error_lines(log_path)
        if any("No space left on device" in line for line in lines):
            st = os.statvfs(log_path.parent)
            lines.append(f"(no space left: {st.f_bavail * st.f_frsize >> 20} MiB free of "
                         f"{st.f_blocks * st.f_frsize >> 20} MiB on the file system of {log_path.parent}: "
                         "harness cache prune --max-size SIZE, or --cache elsewhere)")
        raise BuildError(f"{what} (exit {rc})", str(log_path), lines)
    print(f"  {what}: done in {time.monotonic() - start:.0f}s", file=sys.stderr, flush=True)


# Long commands still running, by the thread that runs them: a background job
# (the guest image built while the kernel compiles) is cancelled by killing its
# command's process group, and nothing outlives the harness.
_running: dict[int, set[subprocess.Popen]] = {}
_running_lock = threading.Lock()


def _track(proc: subprocess.Popen, running: bool) -> None:
    with _running_lock:
        procs = _running.setdefault(threading.get_ident(), set())
        procs.add(proc) if running else procs.discard(proc)


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):  # start_new_session: the group is the command's
        os.killpg(proc.pid, signal.SIGKILL)


def kill_running_commands(thread_id: int | None = None) -> None:
    """Kill the process groups of the long commands of `thread_id` (all threads if None)."""
    with _running_lock:
        procs = [p for tid, ps in _running.items() if thread_id in (None, tid) for p in ps]
    for proc in procs:
        _kill_group(proc)


atexit.register(kill_running_commands)
