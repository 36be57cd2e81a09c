"""Faults on real guests: each must end in a clear error that carries its
evidence, and leave no QEMU behind."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.errors import GuestError, GuestTimeout
from harness.guest.vm import Guest, GuestOptions

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


# ---- through the CLI, as a user meets them ----------------------------------
LKDTM = "/sys/kernel/debug/provoke-crash/DIRECT"


def qemu_pids() -> set[int]:
    out = subprocess.run(["pgrep", "-f", "qemu-system-x86_64 -name harness-guest"], capture_output=True, text=True)
    return {int(p) for p in out.stdout.split()}


def harness_cli(*args: str, cache: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args[:1], "--cache", str(cache), *args[1:]],
                          capture_output=True, text=True, timeout=timeout, check=False)


def assert_no_new_qemu(before: set[int]) -> None:
    time.sleep(0.5)
    left = qemu_pids() - before
    assert not left, f"QEMU processes left behind: {left}"


def test_warn_during_a_command_fails_it_with_the_report(harness_cache):
    """LKDTM's WARNING: the command itself succeeds, the kernel's report fails it."""
    before = qemu_pids()
    res = harness_cli("boot", "--", f"echo WARNING > {LKDTM}", cache=harness_cache.root)
    assert res.returncode == 1, res.stderr
    assert "the kernel reported on the guest console during the command" in res.stderr
    assert "WARNING: CPU:" in res.stderr and "lkdtm_WARNING" in res.stderr
    assert "Call Trace:" in res.stderr  # the report's lines, not just its first
    assert_no_new_qemu(before)


def test_bug_during_a_command_is_reported(harness_cache):
    before = qemu_pids()
    res = harness_cli("boot", "--", f"echo BUG > {LKDTM}", cache=harness_cache.root)
    assert res.returncode != 0, res.stderr
    # oops=panic: the guest dies; the error leads with the report, not only the panic at its end.
    assert "kernel BUG at" in res.stderr and "lkdtm/bugs.c" in res.stderr, res.stderr
    assert "Call Trace:" in res.stderr and "Kernel panic - not syncing" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    assert_no_new_qemu(before)


def test_sigterm_during_a_command_stops_the_guest(harness_cache):
    before = qemu_pids()
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "boot", "--cache", str(harness_cache.root),
                             "--", "sleep", "600"], stderr=subprocess.PIPE, text=True)
    seen = ""
    while "guest ready" not in seen:
        line = proc.stderr.readline()
        assert line, f"harness ended before the guest was ready: {seen}"
        seen += line
    time.sleep(1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert_no_new_qemu(before)


def test_ssh_connection_dropped(fresh_guest):
    """sshd killed under a running command: the error says the connection was lost, with the console."""
    g = fresh_guest()
    with pytest.raises(GuestError) as e:
        g.run("pkill -KILL -x sshd; sleep 30", timeout=20)
    text = str(e.value)
    assert "ssh" in text.lower() and "last console lines" in text, text


def test_disk_full_cache_is_a_clear_error(tmp_path):
    """A cache on a full file system: one line naming the cause, no half-written artifact."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")  # reason: tmpfs mount needs CAP_SYS_ADMIN
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(small)], check=True)
    try:
        res = harness_cli("kernel", cache=small, timeout=120)
        assert res.returncode == 2, res.stderr
        assert "Traceback" not in res.stderr
        assert "no space left" in res.stderr.lower() and "MiB free of 8 MiB" in res.stderr, res.stderr
        leftovers = [p for p in small.rglob("*.tmp-*")]
        assert not leftovers, f"partial artifacts left: {leftovers}"
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_corrupt_cached_kernel_is_never_booted(kernel, tmp_path):
    """A kernel artifact whose vmlinux changed after publishing is detected on the
    next use and rebuilt, never booted. The rebuild is interrupted once make runs:
    exit 130, and no compiler of it is left running."""
    cache = tmp_path / "cache"
    art = kernel.vmlinux.parent
    copy = cache / "kernels" / art.name
    shutil.copytree(art, copy)
    with (copy / "vmlinux").open("r+b") as f:
        f.seek(4096)
        f.write(b"\xcc" * 64)  # int3 over a page of the kernel's text
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "boot", "--cache", str(cache), "--", "true"],
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    seen = ""
    try:
        while "kernel build:" not in seen:  # make's first progress line: compilers are running
            line = proc.stderr.readline()
            if not line:
                break
            seen += line
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        seen += err
    finally:
        if proc.poll() is None:  # never leave a kernel build running behind the suite
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, seen
    assert "vmlinux does not match its recorded sha256; rebuilding" in seen, seen
    assert "booting" not in seen
    assert not (copy / "vmlinux").exists()  # the corrupt artifact is gone, not kept for the next run
    time.sleep(0.5)
    assert not processes_using(tmp_path), f"the interrupted build left {processes_using(tmp_path)}"


def processes_using(path: Path) -> list[str]:
    """Command lines of the processes that run in `path` or name it."""
    found = []
    for proc_dir in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(proc_dir / "cwd")
            state = (proc_dir / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and (str(path) in cmdline or cwd.startswith(str(path))):
            found.append(f"{proc_dir.name}: {cmdline.strip()[:120]}")
    return found


# ---- harness run: a dead guest or a bad output path is an error, never a green run ----
def run_until(args: list[str], marker: str, cache: Path) -> tuple[subprocess.Popen, str]:
    """Start `harness run ...` and read its stderr until `marker` shows up."""
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", "--cache", str(cache), *args],
                            stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    seen = ""
    while marker not in seen:
        line = proc.stderr.readline()
        if not line:
            break
        seen += line
    return proc, seen


def signal_qemu_during_rx(sig: signal.Signals, out: Path, cache: Path) -> tuple[int, str, dict]:
    """`harness run --claims page-based-rx`, its QEMU sent `sig` while the rx experiment
    runs: the run's exit status, what it printed and its results.json."""
    before = qemu_pids()
    proc, seen = run_until(["--claims", "page-based-rx", "--out", str(out)], "measuring rx ...", cache)
    assert "measuring rx ..." in seen, seen
    (pid,) = qemu_pids() - before
    os.kill(pid, sig)
    _, err = proc.communicate(timeout=300)
    assert "Traceback" not in err
    assert_no_new_qemu(before)
    return proc.returncode, seen + err, json.loads((out / "results.json").read_text())


def test_qemu_killed_during_an_experiment_is_an_error(tmp_path, harness_cache):
    out = tmp_path / "out"
    rc, err, record = signal_qemu_during_rx(signal.SIGKILL, out, harness_cache.root)
    assert rc == 5, err
    (claim,) = record["claims"]
    assert claim["verdict"] == "error", claim
    assert "killed by signal 9 (SIGKILL)" in claim["errors"][0]["headline"], claim["errors"]
    assert (out / "report.md").read_text().splitlines()[2] == "## Failures and kernel reports"


def test_qemu_aborting_during_an_experiment_is_measured_again_on_a_fresh_guest(tmp_path, harness_cache):
    """QEMU's own abort (SIGABRT, as its assertions end) is the test bed's failure: the
    experiment runs again on a freshly booted guest, the claim is judged on that, and
    the abort stays in the record and the report."""
    out = tmp_path / "out"
    rc, err, record = signal_qemu_during_rx(signal.SIGABRT, out, harness_cache.root)
    assert rc == 0, err
    assert "QEMU aborted during rx:" in err and "measuring it once more" in err, err
    assert record["claims"][0]["verdict"] == "confirmed"
    (abort,) = record["qemu_aborts"]
    assert (abort["during"], abort["exit_status"]) == ("rx", "killed by signal 6")
    (rx,) = [e for e in record["experiments"] if e["name"] == "rx"]
    assert rx["retried"][0].startswith("QEMU aborted (QEMU abort@?")
    assert len(record["boots"]) == 2
    assert "QEMU itself aborted during rx" in (out / "report.md").read_text()


def test_interrupted_run_keeps_what_it_measured(tmp_path, harness_cache):
    before = qemu_pids()
    out = tmp_path / "out"
    # build-skb-vs-copy's experiments (rx, rx@1514B+csum, legacy-rx) run first; page-based-rx's last
    # (rx-skb-home) is where the run is stopped.
    proc, seen = run_until(["--claims", "page-based-rx,build-skb-vs-copy", "--out", str(out)],
                           "measuring rx-skb-home ...", harness_cache.root)
    assert "measured legacy-rx:" in seen, seen
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    record = json.loads((out / "results.json").read_text())
    assert record["partial"] is True and "KeyboardInterrupt" in record["stopped_by"], record.get("stopped_by")
    verdicts = {c["id"]: c["verdict"] for c in record["claims"]}
    assert verdicts["build-skb-vs-copy"] == "confirmed"  # measured before the interrupt
    assert verdicts["page-based-rx"] != "confirmed"
    assert "partial results" in (out / "report.md").read_text()
    assert_no_new_qemu(before)


@pytest.mark.parametrize("bad", ["/proc/version/out", "file-not-dir"])
def test_bad_out_fails_before_any_work(tmp_path, bad, harness_cache):
    if bad == "file-not-dir":
        (tmp_path / bad).write_text("a file")
        bad = str(tmp_path / bad)
    started = time.monotonic()
    res = harness_cli("run", "--out", bad, cache=harness_cache.root, timeout=60)
    elapsed = time.monotonic() - started
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("harness: error: --out ") and "Traceback" not in res.stderr, res.stderr
    assert elapsed < 2.5, f"took {elapsed:.1f}s: the output path must be checked before any work"
