"""Does the host's QEMU have what the harness needs? (Debian 12's own QEMU 7.2
has no igb device; bookworm-backports has QEMU 10 with igb and e1000e.)"""

from __future__ import annotations

import functools
import re
import subprocess

from harness.errors import MissingToolError
from harness.hostcmd import require_tool

PACKAGE = "qemu-system-x86 (apt-get install -t bookworm-backports qemu-system-x86)"
REQUIRED_DEVICES = ("igb", "e1000e", "virtio-net-pci", "virtio-blk-pci")


def missing_devices(device_help: str, wanted: tuple[str, ...] = REQUIRED_DEVICES) -> list[str]:
    """Devices of `wanted` that `qemu -device help` does not list."""
    listed = set(re.findall(r'^name "([^"]+)"', device_help, re.M))
    return [d for d in wanted if d not in listed]


@functools.cache
def check_qemu(qemu: str = "qemu-system-x86_64") -> str:
    """The QEMU version line; raises naming the package when QEMU or a device is missing."""
    path = require_tool(qemu, "the guests run in QEMU")
    version = subprocess.run([path, "--version"], capture_output=True, text=True, check=False).stdout
    first = version.splitlines()[0] if version else "unknown version"
    helptext = subprocess.run([path, "-device", "help"], capture_output=True, text=True, check=False).stdout
    missing = missing_devices(helptext)
    if missing:
        raise MissingToolError(qemu, PACKAGE, f"{first} has no {', '.join(missing)} device")
    return first
