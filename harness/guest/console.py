"""The guest's serial console: drained continuously by a thread (a full pty
would stall the guest), written to a log file, kept as a tail, and scanned for
the init's READY line and for kernel crash reports."""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import pexpect

from harness.guest.crash import LOCKDEP, KernelReport, classify

READY_RE = re.compile(r"HARNESS-READY nics=(\S*)")
INIT_FAILED_RE = re.compile(r"HARNESS-INIT-FAILED: (.*)")

# Kernel reports that fail whatever was running, even if its own checks passed.
CRASH_PATTERNS = (
    re.compile(r"Kernel panic - not syncing"),
    re.compile(r"\bBUG: "),
    re.compile(r"\bkernel BUG at "),
    re.compile(r"\bOops(: |\b)"),
    re.compile(r"\bWARNING: .* at "),
    re.compile(r"\bKASAN: "),
    re.compile(r"\bUBSAN: "),
    re.compile(LOCKDEP),
    re.compile(r"\bDMA-API: "),
    re.compile(r"INFO: task .* blocked for more than"),
    re.compile(r"rcu: INFO: rcu_\w+ (self-)?detected stall"),
    re.compile(r"\bgeneral protection fault\b"),
)


# Lines that match a crash pattern but are not reports, each with its reason.
ALLOWED = (
    (re.compile(r"DMA-API: preallocated \d+ debug entries"), "CONFIG_DMA_API_DEBUG start-up banner"),
    (re.compile(r"DMA-API: debugging enabled by kernel config"), "CONFIG_DMA_API_DEBUG start-up banner"),
    (re.compile(r"DMA-API: debugging disabled on kernel command line"),
     "dma_debug=off (the cost guest: the checker's bookkeeping is not the driver's cost)"),
    # dump_entry_trace() after a DMA-API report: where the buffer was mapped, part of that report.
    (re.compile(r"DMA-API: Mapped at:"), "the tail of the DMA-API report before it"),
)
CUT_HERE = "------------[ cut here ]------------"
SANITIZER_END = re.compile(r"^(\[\s*\d+\.\d+\]\s*)?={40,}\s*$")


def is_crash_line(line: str) -> bool:
    return any(p.search(line) for p in CRASH_PATTERNS) and not any(p.search(line) for p, _ in ALLOWED)


@dataclass(frozen=True)
class NicInfo:
    name: str
    driver: str
    mac: str


def parse_ready_line(nics_field: str) -> list[NicInfo]:
    """`eth0:igb:52:54:00:12:34:01,eth1:e1000e:...` -> NicInfo list (MACs contain colons)."""
    out = []
    for item in filter(None, nics_field.split(",")):
        name, driver, mac = item.split(":", 2)
        out.append(NicInfo(name, driver, mac.lower()))
    return out


class ConsoleWatcher:
    def __init__(self, child: pexpect.spawn, log_path: Path, tail_lines: int = 400) -> None:
        self.child = child
        self.log_path = log_path
        self.tail: deque[str] = deque(maxlen=tail_lines)
        self.crash_lines: list[str] = []
        self.nics: list[NicInfo] | None = None
        self.init_failure: str | None = None
        self.ready = threading.Event()
        self.eof = threading.Event()
        self._lock = threading.Lock()
        self._partial = ""
        self._crash_marks: list[int] = []
        self._line_no = 0
        self.started = time.monotonic()
        self.banner_at: float | None = None  # seconds after start: kernel's "Linux version" line
        self.init_at: float | None = None  # seconds after start: "Run ... as init process"
        self._thread = threading.Thread(target=self._drain, name="console-drain", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float = 5.0) -> None:
        self._thread.join(timeout)

    def _drain(self) -> None:
        with self.log_path.open("ab", buffering=0) as log:
            while True:
                try:
                    data = self.child.read_nonblocking(65536, timeout=0.2)
                except pexpect.TIMEOUT:
                    continue
                except (pexpect.EOF, OSError, ValueError):
                    break
                log.write(data)
                self._feed(data.decode("utf-8", errors="replace"))
        if self._partial:
            self._feed("\n")
        self.eof.set()

    def _feed(self, text: str) -> None:
        text = self._partial + text.replace("\r", "")
        *lines, self._partial = text.split("\n")
        with self._lock:
            for line in lines:
                self._line_no += 1
                self.tail.append(line)
                self._scan(line)

    def _scan(self, line: str) -> None:
        if self.banner_at is None and "Linux version" in line:
            self.banner_at = time.monotonic() - self.started
        elif self.init_at is None and " as init process" in line:
            self.init_at = time.monotonic() - self.started
        if m := READY_RE.search(line):
            self.nics = parse_ready_line(m.group(1))
            self.ready.set()
        elif m := INIT_FAILED_RE.search(line):
            self.init_failure = m.group(1)
        if is_crash_line(line):
            self.crash_lines.append(line)
            self._crash_marks.append(self._line_no)

    def reports_since(self, line_no: int, context: int = 24) -> list[str]:
        """The crash lines after console line `line_no`, each with the lines that
        follow it (its call trace) up to `---[ end trace` or `context` lines."""
        with self._lock:
            first = self._line_no - len(self.tail) + 1  # console line number of tail[0]
            tail = list(self.tail)
            out: list[str] = []
            shown = 0  # last line number already in `out`
            for mark in self._crash_marks:
                if mark <= line_no or mark <= shown:
                    continue
                for n in range(max(mark, first), min(mark + context, self._line_no) + 1):
                    out.append(tail[n - first])
                    shown = n
                    if "---[ end trace" in tail[n - first]:
                        break
            return out

    def reports(self, line_no: int = 0, context: int = 80) -> list[KernelReport]:
        """The kernel reports that started after console line `line_no`, one per
        report (a DMA-API message and the WARNING that carries it are one), each with
        its lines up to `---[ end trace` or `context` lines."""
        with self._lock:
            first = self._line_no - len(self.tail) + 1
            tail = list(self.tail)
            marks = [m for m in self._crash_marks if m > line_no]
            last = self._line_no
        out: list[KernelReport] = []
        end = 0
        for mark in marks:
            if mark <= end:
                continue  # inside the report already taken
            lines = []
            n = mark
            for n in range(max(mark, first), min(mark + context, last) + 1):
                if lines and CUT_HERE in tail[n - first]:
                    n -= 1  # the next report starts here
                    break
                lines.append(tail[n - first])
                if len(lines) > 1 and SANITIZER_END.search(tail[n - first]):
                    break  # KASAN, KFENCE, UBSAN close their report with a line of "="
                if "---[ end trace" in tail[n - first]:
                    break
            end = n
            if lines:
                out.append(classify(lines))
        return out

    def last_lines(self, n: int = 30) -> list[str]:
        with self._lock:
            return list(self.tail)[-n:]

    def line_count(self) -> int:
        with self._lock:
            return self._line_no

    def crashes_since(self, line_no: int) -> list[str]:
        with self._lock:
            pairs = zip(self.crash_lines, self._crash_marks, strict=True)
            return [line for line, mark in pairs if mark > line_no]

    def wait_ready(self, timeout: float, alive) -> bool:
        """Wait for the READY line; stop early when the guest died (`alive()` false) or init failed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready.wait(0.1):
                return True
            if self.init_failure or not alive():
                return False
        return False
