"""QEMU's own failures, told apart from the guest kernel's: an assertion or abort of
the emulator (its stderr shares the console's pty) or its death by SIGABRT. They are
the test bed's, not the kernel under test's: the lab boots a fresh guest and measures
once more, and a second one is an error that names QEMU.

Seen once in about a hundred TCG boots here: `qemu-system-x86_64:
system/physmem.c:2678: iotlb_to_section: Assertion 'section_index <
d->map.sections_nb' failed.` (QEMU 10.0.2, Debian's bookworm-backports build)."""

from __future__ import annotations

import re
import signal
from dataclasses import dataclass

from harness.guest.crash import fingerprint, strip_timestamp

QEMU_LINE = re.compile(r"^qemu-system-[\w-]+: (?P<message>.+)$")
# glibc's assert(): "file.c:2678: function: Assertion `cond' failed."
ASSERTION = re.compile(r"^(?P<file>[\w./-]+):\d+: (?P<function>\w+): Assertion .* failed\.?$")
ABORT_WORDS = re.compile(r"Assertion .* failed|\babort(ed)?\b|core dumped", re.IGNORECASE)
SIGABRT_EXIT = f"killed by signal {int(signal.SIGABRT)}"


@dataclass(frozen=True)
class QemuAbort:
    message: str  # QEMU's own words, or how it died
    function: str  # the function its assertion names, "?" if none
    lines: tuple[str, ...]  # QEMU's lines from the console
    exit_status: str

    @property
    def fingerprint(self) -> str:
        return fingerprint("QEMU abort", self.function, self.message)

    def to_json(self) -> dict:
        return {"kind": "QEMU abort", "message": self.message, "function": self.function,
                "fingerprint": self.fingerprint, "exit_status": self.exit_status, "lines": list(self.lines)}


def qemu_abort(console_lines: list[str], exit_status: str) -> QemuAbort | None:
    """QEMU's abort from its last console lines and how it ended, or None: a QEMU still
    running, killed by the harness, or ended by the guest (a panic with -no-reboot)."""
    own = [m.group("message") for line in console_lines if (m := QEMU_LINE.match(strip_timestamp(line)))]
    failing = [msg for msg in own if ABORT_WORDS.search(msg)]
    if exit_status != SIGABRT_EXIT and not failing:
        return None
    message = (failing or own or [f"QEMU {exit_status} (SIGABRT)"])[0]
    m = ASSERTION.match(message)
    return QemuAbort(message, m.group("function") if m else "?", tuple(own), exit_status)
