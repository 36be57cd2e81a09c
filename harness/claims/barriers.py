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
from pathlib import Path

from harness.errors import HarnessError
from harness.nics import nic
from harness.source.barrier_analysis import CROSS_ARCH, BarrierAnalysis, analyse_barriers
from harness.source.rx_source import StatusOrder, barrier_kind, status_order

from .base import Check, ClaimResult
from .lab import Lab

IGB = nic("igb")
SOURCE = f"{IGB.source_dir}/{IGB.rx_source}"
# The rx loop and the refill (the catalogue's rx roots), which must be found and be in
# the disassembly; the helpers they call are found from them.
CORE_FUNCTIONS = IGB.rx_roots
# The rx loop and its descriptor pointer: after reading the write-back (length/DD)
# through it, the loop must dma_rmb() before it touches the descriptor again.
RX_LOOP, RX_DESC_VAR = IGB.rx_roots[0], "rx_desc"


class Barriers:
    id, slide = "barriers", "9"
    title = ("the rx/refill hot path uses dma_rmb/dma_wmb: compiler barriers on x86 (no fence instructions), "
             "dmb osh* rather than dsb on arm64")
    region = "the driver's object code (x86-64 and arm64): no traffic"
    experiments: tuple[str, ...] = ()
    covers: tuple = ()  # object code, no traffic

    def evaluate(self, lab: Lab) -> ClaimResult:
        try:
            a = analyse_barriers(lab.kernel("stock"), IGB, lab.cache)
        except HarnessError as e:
            return self._unmeasured(f"needs igb's source: {e}")
        if a.x86.error:
            return self._unmeasured(f"needs igb's object code with DWARF (a self-built kernel's igb.ko or vmlinux): "
                                    f"{a.x86.error}")
        if not a.x86.covered:
            # No rx/refill line at all: the line info was not read (a path form the parser
            # does not know), not a hot path without instructions.
            return self._unmeasured(f"the line info of {a.x86.what} attributes no instruction to "
                                    f"the rx/refill lines of {SOURCE}")
        core_found = sum(f in a.ranges for f in CORE_FUNCTIONS)
        core_covered = sum(f in a.x86.covered for f in CORE_FUNCTIONS)
        how = (f"objdump -dl of {a.x86.what}; fences attributed by DWARF line to the "
               f"{SOURCE} lines of {len(a.ranges)} rx/refill functions")
        checks = self._checks(float(core_found), float(core_covered), float(len(a.dma_sites)),
                              float(len(a.other_sites)),
                              None if core_covered < len(CORE_FUNCTIONS) else float(len(a.x86.fences)), how)
        order = status_order("\n".join(a.lines), RX_LOOP, RX_DESC_VAR)
        checks += self._order_checks(order)
        cross_checks, cross_notes = self._cross_arch(a)
        missing = a.missing_roots(IGB)
        uncovered = sorted(set(a.ranges) - a.x86.covered)
        in_hot, lines = a.x86.fences, a.lines
        return ClaimResult(self.id, self.title, self.slide, checks + cross_checks, [
            self._order_text(order),
            "Barrier calls on the rx/refill lines: " + (", ".join(
                f"{b}() at line {n} in {fn}() ({barrier_kind(b)})" for n, b, fn in a.sites) or "none") + ".",
            ("Only dma_rmb()/dma_wmb(): ordering against the device, nothing more." if not a.other_sites else
             "Barriers other than dma_rmb()/dma_wmb(): " + ", ".join(
                 f"{b}() at line {n} in {fn}() ({barrier_kind(b)}: "
                 + ("orders CPUs, not the device" if barrier_kind(b) == "smp" else
                    "orders nothing but the compiler" if barrier_kind(b) == "compiler" else
                    "a full fence, more than the device needs") + ")" for n, b, fn in a.other_sites) + "."),
            f"{len(in_hot)} fence instruction{'' if len(in_hot) == 1 else 's'} come{'s' if len(in_hot) == 1 else ''} "
            "from those lines"
            + (": " + ", ".join(f"{f.insn} at line {f.line} in {f.function}() ({lines[f.line - 1].strip()})"
                                for f in in_hot) if in_hot else "") + ".",
            "Fences elsewhere in the same code: " + (", ".join(
                f"{f.insn} at {Path(f.file).name}:{f.line} in {f.function}() ({lines[f.line - 1].strip()})"
                if f.file.endswith(SOURCE) else f"{f.insn} at {Path(f.file).name}:{f.line} in {f.function}()"
                for f in a.x86.elsewhere) or "none") + ".",
            *cross_notes,
        ], [f"rx/refill functions not in this source: {', '.join(missing)}"] * bool(missing)
           + [f"rx/refill functions with no instruction in the disassembly (never reached, or optimized away): "
              f"{', '.join(uncovered)}"] * bool(uncovered))

    def _cross_arch(self, a: BarrierAnalysis) -> tuple[list[Check], list[str]]:
        """The rx/refill lines compiled for arm64: which barrier instruction each becomes."""
        arm = a.arm64
        if arm.error:
            return self._cross_checks(None, None, 0, why=arm.error), [f"{CROSS_ARCH} not checked: {arm.error}"]
        if not arm.has_lines:
            why = f"no line info in the {CROSS_ARCH} {IGB.rx_source} object"
            return self._cross_checks(None, None, 0, why=why), [why]
        dma_lines = {n for n, _, _ in a.dma_sites}
        covered = dma_lines & {f.line for f in arm.barriers if f.insn.startswith("dmb osh")}
        seen = Counter((f.line, f.insn) for f in arm.barriers)
        note = (f"On {CROSS_ARCH} the rx/refill lines compile to: " + (", ".join(
            f"{insn} at line {n} ({a.lines[n - 1].strip()}){f' x{c}' if c > 1 else ''}"
            for (n, insn), c in sorted(seen.items())) or "no barrier instruction") + ".")
        return self._cross_checks(float(len(covered)), float(len(arm.not_osh)), len(dma_lines), arm.what), [note]

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
