"""Claim on barriers (slide 9): igb's rx and refill paths order descriptor
reads/writes with dma_rmb()/dma_wmb(), which on x86 are compiler barriers, so
the generated code has no fence instruction there.

The rule reads the source and the machine code, both attributed to the lines
of the rx/refill functions (igb_clean_rx_irq, igb_alloc_rx_buffers and the
static helpers the compiler inlines into them):
  - every barrier call on those lines is classified (dma_rmb/dma_wmb, smp_*,
    rmb/wmb/mb, barrier()): only the dma_* kind orders CPU accesses against the
    device, which is what the talk asks for; smp_rmb() also compiles to nothing
    on x86 but orders nothing against a device on arm64 (`dmb ish*`, not `osh*`);
  - every fence instruction of the disassembly (objdump -dl, DWARF line info)
    whose line lies in those functions is counted, once the disassembly is
    checked to contain those functions' lines at all;
  - the same source compiled for arm64 must turn each dma_rmb()/dma_wmb() line
    into `dmb oshld`/`dmb oshst`, and no rx/refill line into another barrier.
igb_xdp_ring_update_tail's plain wmb() (an sfence, inlined into igb_poll) is the
XDP tx tail, outside these functions: it is reported apart."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from harness.artifacts.cross_object import cross_igb_object, disassemble, require_cross
from harness.artifacts.kernel import Kernel
from harness.errors import HarnessError, MissingToolError
from harness.hostcmd import run_checked
from harness.source.objdump import arm64_barrier, covered_functions, in_ranges, parse_fences
from harness.source.rx_source import (
    DMA_BARRIERS,
    StatusOrder,
    barrier_kind,
    barrier_sites,
    rx_functions,
    status_order,
)

from .base import Check, ClaimResult
from .lab import Lab

SOURCE = "drivers/net/ethernet/intel/igb/igb_main.c"
# The rx loop and the refill, which must be found and be in the disassembly; the
# helpers they call are found from them.
CORE_FUNCTIONS = ("igb_clean_rx_irq", "igb_alloc_rx_buffers")
# Symbols disassembled in vmlinux: the poll function (the rx loop is inlined there)
# and the refill; any helper the compiler kept out of line is added by its symbol.
DISASSEMBLED = ("igb_poll", "igb_alloc_rx_buffers")
MODULE = "igb"
# The rx loop and its descriptor pointer: after reading the write-back (length/DD)
# through it, the loop must dma_rmb() before it touches the descriptor again.
RX_LOOP, RX_DESC_VAR = "igb_clean_rx_irq", "rx_desc"

CROSS_ARCH = "arm64"


@dataclass(frozen=True)
class Disassembly:
    text: str
    symbols: tuple[str, ...]


def x86_disassembly(kernel: Kernel, ranges: dict[str, tuple[int, int]]) -> Disassembly:
    """objdump -dl of the whole igb.ko (a self-built kernel's module, with DWARF), or
    in a vmlinux with igb built in, of igb_poll, igb_alloc_rx_buffers and every rx
    helper that has a symbol of its own (one the compiler did not inline)."""
    objects = {**kernel.debug_objects, **kernel.module_files}  # a prebuilt kernel's from its -dbg package
    if MODULE in objects:
        ko = objects[MODULE]
        return Disassembly(run_checked(["objdump", "-dl", "--no-show-raw-insn", str(ko)], what=f"objdump of {ko}"),
                           (f"{MODULE}.ko",))
    symbols = set(DISASSEMBLED)
    if kernel.system_map is not None:
        names = {line.split()[2] for line in kernel.system_map.read_text().splitlines() if len(line.split()) >= 3}
        symbols |= {f for f in ranges if f in names}
    out = []
    for sym in sorted(symbols):
        out.append(run_checked(["objdump", "-dl", "--no-show-raw-insn", f"--disassemble={sym}",
                                str(kernel.vmlinux)], what=f"objdump of {sym}"))
    return Disassembly("\n".join(out), tuple(sorted(symbols)))


class Barriers:
    id, slide = "barriers", "9"
    title = ("the rx/refill hot path uses dma_rmb/dma_wmb: compiler barriers on x86 (no fence instructions), "
             "dmb osh* rather than dsb on arm64")
    region = "the driver's object code (x86-64 and arm64): no traffic"
    experiments: tuple[str, ...] = ()

    def evaluate(self, lab: Lab) -> ClaimResult:
        try:
            kernel = lab.kernel("stock")
            source = kernel.source_file(SOURCE).read_text()
        except HarnessError as e:
            return self._unmeasured(f"needs igb's source: {e}")
        if kernel.vmlinux is None and MODULE not in kernel.module_files and MODULE not in kernel.debug_objects:
            return self._unmeasured("needs igb's object code with DWARF (a self-built kernel's igb.ko or vmlinux)")
        # The loop, the refill and the static helpers they call (gcc inlines them): found in
        # the source by following calls, so a helper added in a later kernel is judged too.
        ranges = rx_functions(source, CORE_FUNCTIONS)
        sites = barrier_sites(source, ranges)
        other = [s for s in sites if s[1] not in DMA_BARRIERS]
        dma_sites = [s for s in sites if s[1] in DMA_BARRIERS]
        dis = x86_disassembly(kernel, ranges)
        if "igb_main.c:" not in dis.text:
            return self._unmeasured(f"no line info for igb in {', '.join(dis.symbols)} (needs CONFIG_DEBUG_INFO)")
        covered = covered_functions(dis.text, SOURCE, ranges)
        if not covered:
            # No rx/refill line at all: the line info was not read (a path form the parser
            # does not know), not a hot path without instructions.
            return self._unmeasured(f"the line info of {', '.join(dis.symbols)} attributes no instruction to "
                                    f"the rx/refill lines of {SOURCE}")
        fences = parse_fences(dis.text)
        in_hot = [f for f in fences if in_ranges(f, SOURCE, ranges)]
        elsewhere = [f for f in fences if f not in in_hot]
        core_found = sum(f in ranges for f in CORE_FUNCTIONS)
        core_covered = sum(f in covered for f in CORE_FUNCTIONS)
        how = (f"objdump -dl of {', '.join(dis.symbols)}; fences attributed by DWARF line to the "
               f"{SOURCE} lines of {len(ranges)} rx/refill functions")
        checks = self._checks(float(core_found), float(core_covered), float(len(dma_sites)), float(len(other)),
                              None if core_covered < len(CORE_FUNCTIONS) else float(len(in_hot)), how)
        order = status_order(source, RX_LOOP, RX_DESC_VAR)
        checks += self._order_checks(order)
        lines = source.splitlines()
        cross_checks, cross_notes = self._cross_arch(lab, kernel, ranges, dma_sites, lines)
        missing = [f for f in CORE_FUNCTIONS if f not in ranges]
        uncovered = sorted(set(ranges) - covered)
        return ClaimResult(self.id, self.title, self.slide, checks + cross_checks, [
            self._order_text(order),
            "Barrier calls on the rx/refill lines: " + (", ".join(
                f"{b}() at line {n} in {fn}() ({barrier_kind(b)})" for n, b, fn in sites) or "none") + ".",
            ("Only dma_rmb()/dma_wmb(): ordering against the device, nothing more." if not other else
             "Barriers other than dma_rmb()/dma_wmb(): " + ", ".join(
                 f"{b}() at line {n} in {fn}() ({barrier_kind(b)}: "
                 + ("orders CPUs, not the device" if barrier_kind(b) == "smp" else
                    "orders nothing but the compiler" if barrier_kind(b) == "compiler" else
                    "a full fence, more than the device needs") + ")" for n, b, fn in other) + "."),
            f"{len(in_hot)} fence instruction{'' if len(in_hot) == 1 else 's'} come{'s' if len(in_hot) == 1 else ''} "
            "from those lines"
            + (": " + ", ".join(f"{f.insn} at line {f.line} in {f.function}() ({lines[f.line - 1].strip()})"
                                for f in in_hot) if in_hot else "") + ".",
            "Fences elsewhere in the same code: " + (", ".join(
                f"{f.insn} at {Path(f.file).name}:{f.line} in {f.function}() ({lines[f.line - 1].strip()})"
                if f.file.endswith(SOURCE) else f"{f.insn} at {Path(f.file).name}:{f.line} in {f.function}()"
                for f in elsewhere) or "none") + ".",
            *cross_notes,
        ], [f"rx/refill functions not in this source: {', '.join(missing)}"] * bool(missing)
           + [f"rx/refill functions with no instruction in the disassembly (never reached, or optimized away): "
              f"{', '.join(uncovered)}"] * bool(uncovered))

    def _cross_arch(self, lab: Lab, kernel: Kernel, ranges: dict[str, tuple[int, int]],
                    dma_sites: list[tuple[int, str, str]], lines: list[str]) -> tuple[list[Check], list[str]]:
        """The rx/refill lines compiled for arm64: which barrier instruction each becomes."""
        try:
            cross = require_cross(CROSS_ARCH)
        except MissingToolError as e:
            return self._cross_checks(None, None, 0, why=str(e)), [f"{CROSS_ARCH} not checked: {e}"]
        try:
            text = disassemble(cross_igb_object(kernel, cross, lab.cache), cross)
        except HarnessError as e:
            why = f"igb_main.c could not be compiled for {CROSS_ARCH}: {e}"
            return self._cross_checks(None, None, 0, why=why), [why]
        if "igb_main.c:" not in text:
            why = f"no line info in the {CROSS_ARCH} igb_main.o"
            return self._cross_checks(None, None, 0, why=why), [why]
        hot = [f for f in parse_fences(text, arm64_barrier) if in_ranges(f, SOURCE, ranges)]
        dma_lines = {n for n, _, _ in dma_sites}
        osh = {f.line for f in hot if f.insn.startswith("dmb osh")}
        covered = dma_lines & osh
        not_osh = [f for f in hot if not f.insn.startswith("dmb osh")]
        how = (f"{cross.gcc} -c of this kernel's igb_main.c (external-module build against an {CROSS_ARCH} config "
               f"of the same fragments), {cross.objdump} -dl, instructions attributed by DWARF line")
        seen = Counter((f.line, f.insn) for f in hot)
        note = (f"On {CROSS_ARCH} the rx/refill lines compile to: " + (", ".join(
            f"{insn} at line {n} ({lines[n - 1].strip()}){f' x{c}' if c > 1 else ''}"
            for (n, insn), c in sorted(seen.items())) or "no barrier instruction") + ".")
        return self._cross_checks(float(len(covered)), float(len(not_osh)), len(dma_lines), how), [note]

    @staticmethod
    def _cross_checks(covered: float | None, not_osh: float | None, dma_lines: int, how: str = "",
                      why: str = "") -> list[Check]:
        return [
            Check("arm64-dma-lines-dmb-osh", f"{CROSS_ARCH}: dma_rmb()/dma_wmb() lines compiled to dmb osh* "
                  "(ordering against the device only)", covered, "==", dma_lines, how=how, unmeasured=why),
            Check("arm64-other-barriers", f"{CROSS_ARCH}: other barrier instructions (dsb, dmb ish*) from the "
                  "rx/refill source lines", not_osh, "==", 0, how=how, unmeasured=why),
        ]

    @staticmethod
    def _checks(core_found: float | None, core_covered: float | None, dma_sites: float | None,
                other: float | None, fences: float | None, how: str = "", why: str = "") -> list[Check]:
        n = len(CORE_FUNCTIONS)
        return [
            Check("core-functions-in-source", f"rx/refill functions found in the source ({', '.join(CORE_FUNCTIONS)})",
                  core_found, "==", n, how=SOURCE, unmeasured=why),
            Check("core-functions-disassembled", "rx/refill functions with instructions in the disassembly",
                  core_covered, "==", n, how=how, unmeasured=why),
            Check("dma-barrier-sites", "dma_rmb()/dma_wmb() call sites on the rx/refill lines", dma_sites, ">=", 1,
                  how=SOURCE, unmeasured=why),
            Check("other-barrier-sites", "barrier calls other than dma_rmb()/dma_wmb() (smp_*, rmb/wmb/mb, "
                  "barrier()) on the rx/refill lines", other, "==", 0, how=SOURCE + ", comments ignored",
                  unmeasured=why),
            Check("x86-fences", "fence instructions attributed to the rx/refill source lines", fences, "==", 0,
                  how=how, unmeasured=why or "the disassembly lacks the rx/refill functions' lines"),
        ]

    @staticmethod
    def _order_checks(order: StatusOrder | None, why: str = "") -> list[Check]:
        how = (f"{SOURCE}, {RX_LOOP}(): the first read through {RX_DESC_VAR} (the write-back check), then source "
               "order up to the first dma_rmb() after it, comments ignored")
        why = why or ("" if order else f"no read through {RX_DESC_VAR} in {RX_LOOP}() (the loop is not as modelled)")
        return [
            Check("rx-dma-rmb-after-status", f"dma_rmb() after the descriptor's write-back check in {RX_LOOP}()",
                  None if order is None else float(order.rmb_line is not None), "==", 1, how=how, unmeasured=why),
            Check("rx-desc-reads-before-dma-rmb", f"lines touching {RX_DESC_VAR} between the write-back check and "
                  "that dma_rmb()", None if order is None else float(len(order.early_reads)), "==", 0, how=how,
                  unmeasured=why),
        ]

    @staticmethod
    def _order_text(order: StatusOrder | None) -> str:
        if order is None:
            return f"The write-back check of {RX_LOOP}() was not found."
        head = f"{RX_LOOP}() checks the descriptor's write-back at line {order.status_line}"
        if order.rmb_line is None:
            return head + ": no dma_rmb() follows it, so the other descriptor fields may be read before the device " \
                "finished writing them."
        early = "; ".join(f"line {n}: {code}" for n, code in order.early_reads)
        return (head + f" and orders the rest with dma_rmb() at line {order.rmb_line}"
                + (f", but touches the descriptor before it ({early})." if early else
                   ", before any other read of the descriptor."))

    def _unmeasured(self, why: str) -> ClaimResult:
        """The same checks, none measured: the claim is inconclusive and says why."""
        return ClaimResult(self.id, self.title, self.slide,
                           self._checks(None, None, None, None, None, why=why) + self._order_checks(None, why)
                           + self._cross_checks(None, None, 0, why=why), notes=[why])
