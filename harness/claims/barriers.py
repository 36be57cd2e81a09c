"""Claim on barriers (slide 9): igb's rx and refill paths order descriptor
reads/writes with dma_rmb()/dma_wmb(), which on x86 are compiler barriers, so
the generated code has no fence instruction there.

The rx helpers are inlined into igb_poll, so a fence count over the whole of
igb_poll would mix in other code (igb_xdp_ring_update_tail's plain wmb() is an
sfence). The rule attributes every fence in the disassembly (objdump -dl, DWARF
line info) to its source line, and judges only fences whose line lies inside
igb_clean_rx_irq() or igb_alloc_rx_buffers() in igb_main.c.

The same source compiled for arm64 shows what the barriers are where they cost
an instruction: dma_rmb()/dma_wmb() become `dmb oshld`/`dmb oshst` (ordering
against the device only), where rmb()/wmb() would be a `dsb` (a full wait)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..cross_object import cross_igb_object, disassemble, require_cross
from ..errors import HarnessError, MissingToolError
from ..hostcmd import run_checked
from ..kernel import Kernel
from .base import Check, ClaimResult
from .lab import Lab

FENCES = ("lfence", "sfence", "mfence")
SOURCE = "drivers/net/ethernet/intel/igb/igb_main.c"
HOT_FUNCTIONS = ("igb_clean_rx_irq", "igb_alloc_rx_buffers")
DISASSEMBLED = ("igb_poll", "igb_alloc_rx_buffers")
BARRIER_CALL = re.compile(r"\b(dma_rmb|dma_wmb|rmb|wmb|mb|smp_rmb|smp_wmb|smp_mb)\(\)")

INSN = re.compile(r"^\s*[0-9a-f]+:\s+(\w+)")
ARM64_BARRIER = re.compile(r"^\s*[0-9a-f]+:\s+(dmb|dsb)\s+(\w+)")
CROSS_ARCH = "arm64"
LINE_INFO = re.compile(r"^(/\S+):(\d+)(?: \(discriminator \d+\))?$")
FUNC_INFO = re.compile(r"^([\w.]+)\(\):$")


@dataclass(frozen=True)
class Fence:
    insn: str
    file: str
    line: int
    function: str  # innermost (inlined) function objdump names


def x86_fence(raw: str) -> str | None:
    m = INSN.match(raw)
    return m.group(1) if m and m.group(1) in FENCES else None


def arm64_barrier(raw: str) -> str | None:
    m = ARM64_BARRIER.match(raw)
    return f"{m.group(1)} {m.group(2)}" if m else None


def parse_fences(objdump_text: str, barrier: Callable[[str], str | None] = x86_fence) -> list[Fence]:
    """Barrier instructions (`barrier(line)` names them) of `objdump -dl` output,
    each with the source line and (inlined) function that the line info in front
    of it names."""
    fences, file, line, func = [], "?", 0, "?"
    for raw in objdump_text.splitlines():
        text = raw.strip()
        if m := FUNC_INFO.match(text):
            func = m.group(1)
        elif m := LINE_INFO.match(text):
            file, line = m.group(1), int(m.group(2))
        elif insn := barrier(raw):
            fences.append(Fence(insn, file, line, func))
    return fences


def in_ranges(f: Fence, ranges: dict[str, tuple[int, int]]) -> bool:
    return f.file.endswith(SOURCE) and any(a <= f.line <= b for a, b in ranges.values())


def function_ranges(source: str, names: tuple[str, ...]) -> dict[str, tuple[int, int]]:
    """Line ranges (1-based, inclusive) of top-level C function definitions."""
    lines = source.splitlines()
    out = {}
    for name in names:
        start = next((i for i, line in enumerate(lines)
                      if re.match(rf"^(static\s+)?[\w\s\*]*\b{name}\(", line) and not line.rstrip().endswith(";")),
                     None)
        if start is None:
            continue
        end = next((j for j in range(start, len(lines)) if lines[j].startswith("}")), len(lines) - 1)
        out[name] = (start + 1, end + 1)
    return out


def barrier_sites(source: str, ranges: dict[str, tuple[int, int]]) -> list[tuple[int, str, str]]:
    """(line, barrier, function) for every barrier call inside the ranges."""
    lines = source.splitlines()
    sites = []
    for func, (a, b) in ranges.items():
        for n in range(a, b + 1):
            sites += [(n, m.group(1), func) for m in BARRIER_CALL.finditer(lines[n - 1])]
    return sites


class Barriers:
    id, slide = "barriers", "9"
    title = ("the rx/refill hot path uses dma_rmb/dma_wmb: compiler barriers on x86 (no fence instructions), "
             "dmb osh* rather than dsb on arm64")
    experiments: tuple[str, ...] = ()

    def evaluate(self, lab: Lab) -> ClaimResult:
        try:
            kernel = lab.kernel("stock")
            source = kernel.source_file(SOURCE).read_text()
        except HarnessError as e:
            return self._unmeasured(f"needs igb's source: {e}")
        if kernel.vmlinux is None:
            return self._unmeasured("needs the kernel's vmlinux (a self-built kernel)")
        ranges = function_ranges(source, HOT_FUNCTIONS)
        sites = barrier_sites(source, ranges)
        fences: list[Fence] = []
        for sym in DISASSEMBLED:
            out = run_checked(["objdump", "-dl", "--no-show-raw-insn", f"--disassemble={sym}", str(kernel.vmlinux)],
                              what=f"objdump of {sym}")
            if "igb_main.c:" not in out:
                return self._unmeasured(f"no line info for {sym} in vmlinux (needs CONFIG_DEBUG_INFO)")
            fences += parse_fences(out)
        in_hot = [f for f in fences if in_ranges(f, ranges)]
        elsewhere = [f for f in fences if f not in in_hot]
        dma_sites = [s for s in sites if s[1] in ("dma_rmb", "dma_wmb")]
        how = (f"objdump -dl of {', '.join(DISASSEMBLED)} in vmlinux; fences attributed by DWARF line to "
               f"{SOURCE} lines of {', '.join(f'{k}() {a}-{b}' for k, (a, b) in ranges.items())}")
        checks = self._checks(float(len(ranges)), float(len(dma_sites)), float(len(in_hot)), how)
        lines = source.splitlines()
        cross_checks, cross_notes = self._cross_arch(lab, kernel, ranges, dma_sites, lines)
        return ClaimResult(self.id, self.title, self.slide, checks + cross_checks, [
            "Barrier calls in the rx/refill path: " + ", ".join(f"{b}() at line {n} in {fn}()"
                                                                  for n, b, fn in sites) + ".",
            f"{len(in_hot)} fence instruction{'' if len(in_hot) == 1 else 's'} come{'s' if len(in_hot) == 1 else ''} "
            "from those lines"
            + (": " + ", ".join(f"{f.insn} at line {f.line} ({lines[f.line - 1].strip()})" for f in in_hot)
               if in_hot else "") + ".",
            "Fences elsewhere in the same code: " + (", ".join(
                f"{f.insn} at {Path(f.file).name}:{f.line} in {f.function}() ({lines[f.line - 1].strip()})"
                if f.file.endswith(SOURCE) else f"{f.insn} at {Path(f.file).name}:{f.line} in {f.function}()"
                for f in elsewhere) or "none") + ".",
            *cross_notes,
        ])

    def _cross_arch(self, lab: Lab, kernel: Kernel, ranges: dict[str, tuple[int, int]],
                    dma_sites: list[tuple[int, str, str]], lines: list[str]) -> tuple[list[Check], list[str]]:
        """The rx/refill lines compiled for arm64: which barrier instruction each becomes."""
        try:
            cross = require_cross(CROSS_ARCH)
        except MissingToolError as e:
            return [], [f"{CROSS_ARCH} not checked: {e}"]
        try:
            text = disassemble(cross_igb_object(kernel, cross, lab.cache), cross)
        except HarnessError as e:
            return self._cross_checks(None, None, 0), [f"igb_main.c could not be compiled for {CROSS_ARCH}: {e}"]
        if "igb_main.c:" not in text:
            return self._cross_checks(None, None, 0), [f"no line info in the {CROSS_ARCH} igb_main.o"]
        hot = [f for f in parse_fences(text, arm64_barrier) if in_ranges(f, ranges)]
        dma_lines = {n for n, _, _ in dma_sites}
        covered = dma_lines & {f.line for f in hot if f.insn.startswith("dmb osh")}
        dsb = [f for f in hot if f.insn.startswith("dsb")]
        how = (f"{cross.gcc} -c of this kernel's igb_main.c (external-module build against an {CROSS_ARCH} config "
               f"of the same fragments), {cross.objdump} -dl, instructions attributed by DWARF line")
        seen = Counter((f.line, f.insn) for f in hot)
        note = (f"On {CROSS_ARCH} the rx/refill lines compile to: " + (", ".join(
            f"{insn} at line {n} ({lines[n - 1].strip()}){f' x{c}' if c > 1 else ''}"
            for (n, insn), c in sorted(seen.items())) or "no barrier instruction") + ".")
        return self._cross_checks(float(len(covered)), float(len(dsb)), len(dma_lines), how), [note]

    @staticmethod
    def _cross_checks(covered: float | None, dsb: float | None, dma_lines: int, how: str = "") -> list[Check]:
        return [
            Check(f"{CROSS_ARCH}: dma_rmb()/dma_wmb() lines compiled to dmb osh* (ordering against the device only)",
                  covered, "==", dma_lines, how=how),
            Check(f"{CROSS_ARCH}: dsb (wait-for-completion barrier) instructions from the rx/refill source lines",
                  dsb, "==", 0, how=how),
        ]

    @staticmethod
    def _checks(functions: float | None, dma_sites: float | None, fences: float | None,
                how: str = "") -> list[Check]:
        return [
            Check("rx/refill functions found in the source", functions, "==", len(HOT_FUNCTIONS), how=SOURCE),
            Check("dma_rmb()/dma_wmb() call sites in igb_clean_rx_irq() and igb_alloc_rx_buffers()",
                  dma_sites, ">=", 1, how=SOURCE),
            Check("fence instructions attributed to the rx/refill source lines", fences, "==", 0, how=how),
        ]

    def _unmeasured(self, why: str) -> ClaimResult:
        """The same checks, none measured: the claim is inconclusive and says why."""
        return ClaimResult(self.id, self.title, self.slide, self._checks(None, None, None), notes=[why])
