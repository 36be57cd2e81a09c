"""Choose KVM or TCG by really booting: a /dev/kvm that exists may still fail
(`KVM internal error ... emulation failure` on these hosts)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from harness.cache import Cache
from harness.errors import HarnessError
from harness.hostcmd import require_tool

PROBE_TIMEOUT = 30.0
KVM_FAILURE_MARKERS = ("KVM internal error", "emulation failure", "failed to initialize kvm",
                       "Could not access KVM kernel module", "kvm run failed")


@dataclass(frozen=True)
class AccelChoice:
    accel: str  # "kvm" or "tcg"
    reason: str


def kvm_probe_verdict(console: str, stderr: str, rc: int | None) -> tuple[bool, str]:
    """Whether a KVM probe boot worked, from what it printed (pure, unit-tested).
    The kernel printing its banner proves guest code ran under KVM."""
    for marker in KVM_FAILURE_MARKERS:
        if marker in stderr or marker in console:
            line = next((x for x in (stderr + "\n" + console).splitlines() if marker in x), marker)
            return False, f"KVM probe boot failed: {line.strip()}"
    if "Linux version" in console:
        return True, "KVM probe boot reached the kernel banner"
    last = " / ".join(line.strip() for line in stderr.strip().splitlines()[-2:])
    return False, f"KVM probe boot printed no kernel banner (exit {rc}): {last[-200:]}"


def probe_kvm(bzimage: Path, qemu: str = "qemu-system-x86_64") -> tuple[bool, str]:
    if not os.path.exists("/dev/kvm"):
        return False, "no /dev/kvm"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "/dev/kvm is not accessible (add the user to group kvm)"
    argv = [qemu, "-machine", "q35", "-accel", "kvm", "-cpu", "host", "-m", "256", "-nodefaults",
            "-no-user-config", "-display", "none", "-no-reboot", "-serial", "stdio",
            "-kernel", str(bzimage), "-append", "console=ttyS0 panic=-1 init=/nonexistent"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=PROBE_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return kvm_probe_verdict(out.decode(errors="replace"), err.decode(errors="replace"), proc.returncode)


def _probe_cache_file(cache: Cache, qemu: str) -> Path:
    boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    qemu_path = os.path.realpath(require_tool(qemu))
    key = hashlib.sha256(f"{boot_id}:{qemu_path}:{os.stat(qemu_path).st_mtime_ns}".encode()).hexdigest()[:16]
    return cache.dir("probe") / f"kvm-{key}.json"


def choose_accel(
    requested: str, bzimage: Path, cache: Cache, qemu: str = "qemu-system-x86_64"
) -> AccelChoice:
    """`requested` is auto, kvm or tcg. The probe result is remembered per host boot."""
    if requested == "tcg":
        return AccelChoice("tcg", "requested")
    if requested not in ("auto", "kvm"):
        raise HarnessError(f"--accel {requested}: expected auto, kvm or tcg")
    cached = _probe_cache_file(cache, qemu)
    try:
        doc = json.loads(cached.read_text())
        ok, why = doc["ok"], doc["why"]
    except (OSError, ValueError, KeyError):
        started = time.monotonic()
        ok, why = probe_kvm(bzimage, qemu)
        why += f" ({time.monotonic() - started:.1f}s)"
        tmp = cached.with_suffix(".tmp")
        tmp.write_text(json.dumps({"ok": ok, "why": why}))
        os.replace(tmp, cached)
    if ok:
        return AccelChoice("kvm", why)
    if requested == "kvm":
        raise HarnessError(f"--accel kvm requested but KVM does not work here: {why}")
    return AccelChoice("tcg", f"KVM unusable, using TCG: {why}")
