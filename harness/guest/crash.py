"""Kernel reports found on a guest console, each with a fingerprint that stays
the same when the same bug fires again (as the netdev CI's NIPA does): the kind
of report, the function it names (the RIP of an Oops, the location of a
WARNING) and its message with addresses, numbers and timestamps taken out."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

TIMESTAMP = re.compile(r"^\[\s*\d+\.\d+\]\s?")
# "RIP: 0010:ftrace_kill+0x25/0x40" (x86), "pc : check_unmap+0x6ee/0x8b0" (arm64)
RIP = re.compile(r"\b(?:RIP: [0-9a-f]{4}:|pc : )([\w.]+)\+0x[0-9a-f]+/0x[0-9a-f]+")
# "WARNING: CPU: 0 PID: 0 at kernel/dma/debug.c:1036 check_unmap+0x6ee/0x8b0"
WARNING_AT = re.compile(r"WARNING: .* at (\S+):\d+ ([\w.]+)\+0x")
KERNEL_BUG_AT = re.compile(r"kernel BUG at (\S+):\d+")
# KASAN's and KFENCE's first line: `BUG: KASAN: slab-use-after-free in igb_poll+0x../0x.. [igb]`.
SANITIZER_IN = re.compile(r"\bBUG: (?:KASAN|KFENCE): [\w -]+? in ([\w.]+)\+0x")
TRACE_FRAME = re.compile(r"^\s*(\? )?([\w.]+)\+0x[0-9a-f]+/0x[0-9a-f]+")
# A DMA-API report fires in the checker (check_unmap, check_sync): the
# fingerprint names the first caller outside the DMA API instead, the driver.
DMA_API_INTERNALS = ("check_", "debug_dma_", "dma_", "__dma_", "iommu_dma_", "swiotlb_", "err_printk")
# A lockdep report names no location (RCU's names a file:line): its fingerprint names
# the first frame of its backtrace past lockdep and the locking primitives.
LOCKDEP_INTERNALS = re.compile(r"^(dump_stack\w*|show_stack|lockdep_\w+|__?lock_\w+|lock_\w+|print_\w+|check_\w+"
                               r"|validate_chain|mark_\w+|debug_check_\w+|_raw_\w+|__?mutex_\w+|mutex_\w+"
                               r"|down_\w+|up_\w+|rcu_read_lock\w*|rcu_dereference\w*)$")
NOISE = (
    (re.compile(r"\b(?:0x)?[0-9a-f]{8,16}\b"), "ADDR"),
    (re.compile(r"\b(?:CPU|PID|pid|cpu): ?\d+"), lambda m: m.group(0).split(":")[0] + ": N"),
    (re.compile(r"\b\d+\b"), "N"),
)

# lockdep's and RCU-lockdep's reports: "WARNING: <what>" with no "at file:line".
LOCKDEP = (r"\bWARNING: (possible (circular|recursive|irq lock inversion)|inconsistent lock state|suspicious RCU"
           r"|bad unlock balance|lock held|held lock freed|Nested lock)")

KINDS = (  # (kind, pattern on the report's lines), the first that matches names it
    ("DMA-API", re.compile(r"\bDMA-API: ")),
    ("KASAN", re.compile(r"\bKASAN: ")),
    ("KFENCE", re.compile(r"\bKFENCE: ")),
    ("UBSAN", re.compile(r"\bUBSAN: ")),
    ("lockdep", re.compile(LOCKDEP)),
    ("BUG", re.compile(r"\bBUG: |\bkernel BUG at ")),
    ("general protection fault", re.compile(r"\bgeneral protection fault\b")),
    ("Oops", re.compile(r"\bOops(: |\b)")),
    ("WARNING", re.compile(r"\bWARNING: ")),
    ("hung task", re.compile(r"INFO: task .* blocked for more than")),
    ("RCU stall", re.compile(r"rcu: INFO: rcu_\w+ (self-)?detected stall")),
    ("panic", re.compile(r"Kernel panic - not syncing")),
)


def strip_timestamp(line: str) -> str:
    return TIMESTAMP.sub("", line).rstrip()


def normalize(message: str) -> str:
    text = strip_timestamp(message)
    for pattern, repl in NOISE:
        text = pattern.sub(repl, text)
    return text.strip()


def fingerprint(kind: str, function: str, message: str) -> str:
    """`kind@function: normalized message #hash`: equal for the same bug on another run."""
    norm = normalize(message)
    digest = hashlib.sha1(f"{kind}|{function}|{norm}".encode()).hexdigest()[:10]
    return f"{kind}@{function}: {norm} #{digest}"


@dataclass(frozen=True)
class KernelReport:
    kind: str  # DMA-API, BUG, Oops, WARNING, KASAN, panic, ...
    message: str  # the report's own first line, timestamp removed
    function: str  # where it fired (RIP / WARNING location), "?" if the report names none
    lines: tuple[str, ...]  # the whole report as printed (call trace included)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.kind, self.function, self.message)

    @property
    def driver(self) -> str:
        """For a DMA-API report, the driver it names (`DMA-API: igb 0000:00:04.0: ...`)."""
        for line in self.lines:
            if m := re.search(r"DMA-API: (\S+) ([0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.\d|\S+): ", line):
                return m.group(1)
        return ""

    @property
    def is_dma_api(self) -> bool:
        return self.kind == "DMA-API"

    def to_json(self) -> dict:
        return {"kind": self.kind, "message": self.message, "function": self.function,
                "fingerprint": self.fingerprint, "driver": self.driver, "lines": list(self.lines)}


def classify(lines: list[str]) -> KernelReport:
    """One report (its first line is the one that matched a crash pattern)."""
    stripped = [strip_timestamp(line) for line in lines]
    kind = next((k for k, pattern in KINDS for line in stripped[:3] if pattern.search(line)), None)
    if kind is None:
        kind = next((k for k, pattern in KINDS if any(pattern.search(line) for line in stripped)), "report")
    message = stripped[0] if stripped else ""
    if kind == "DMA-API":
        message = next((line for line in stripped if "DMA-API: " in line), message)
    function = "?"
    if kind == "DMA-API":
        frames = [(bool(m.group(1)), m.group(2)) for line in stripped if (m := TRACE_FRAME.match(line))]
        callers = [f for unsure, f in frames if not f.startswith(DMA_API_INTERNALS) for _ in [unsure]]
        reliable = [f for unsure, f in frames if not unsure and not f.startswith(DMA_API_INTERNALS)]
        # Without frame pointers every frame is `? f+0x..` (unreliable): take the first of those then.
        function = (reliable or callers or ["?"])[0]
    elif kind == "lockdep":
        function = next((m.group(2) for line in stripped if (m := TRACE_FRAME.match(line)) and not m.group(1)
                         and not LOCKDEP_INTERNALS.match(m.group(2))), "?")
    for line in ([] if function != "?" else stripped):
        if (m := SANITIZER_IN.search(line)) or (m := WARNING_AT.search(line)) or (m := RIP.search(line)):
            function = m.group(m.lastindex or 1)
            break
        if m := KERNEL_BUG_AT.search(line):
            function = m.group(1)
            break
    return KernelReport(kind, message, function, tuple(stripped))
