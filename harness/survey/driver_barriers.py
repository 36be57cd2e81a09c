"""The barriers of any NIC driver's rx path, as the survey's cells: the shared
analysis (source/barrier_analysis.py, which the igb claim judges with named checks)
counted per driver: dma_* barrier calls and other barrier calls on its rx/refill
lines, the x86 fences its build made of them, the arm64 barriers that are not
`dmb osh*`."""

from __future__ import annotations

from harness.artifacts.kernel import Kernel
from harness.cache import Cache
from harness.errors import HarnessError
from harness.nics import NicModel
from harness.source.barrier_analysis import analyse_barriers
from harness.survey.techniques import Cell

CELLS = ("dma-barriers", "other-barriers", "x86-fences", "arm64-not-osh")


def unmeasured(why: str) -> dict[str, Cell]:
    return {c: Cell(None, "", why) for c in CELLS}


def driver_barrier_cells(kernel: Kernel, model: NicModel, cache: Cache) -> dict[str, Cell]:
    try:
        a = analyse_barriers(kernel, model, cache)
    except HarnessError as e:
        return unmeasured(str(e))
    if missing := a.missing_roots(model):
        return unmeasured(f"{', '.join(missing)} not in {a.source} of this kernel (renamed?)")
    where = f"{a.source}: {', '.join(sorted(a.ranges))}"
    out = {
        "dma-barriers": Cell(float(len(a.dma_sites)), f"barrier calls on the lines of {where}"),
        "other-barriers": Cell(float(len(a.other_sites)), "; ".join(
            f"{b}() at line {n} in {fn}()" for n, b, fn in a.other_sites) or f"none on the lines of {where}"),
    }
    if a.x86.error:
        out["x86-fences"] = Cell(None, "", a.x86.error)
    elif not set(model.rx_roots) <= a.x86.covered:
        out["x86-fences"] = Cell(None, "", f"the disassembly of {a.x86.what} has no lines of "
                                           f"{', '.join(model.rx_roots)}")
    else:
        out["x86-fences"] = Cell(float(len(a.x86.fences)), f"objdump -dl of {a.x86.what}, fences attributed by DWARF "
                                 "line" + "".join(f"; {f.insn} at line {f.line}" for f in a.x86.fences))
    if a.arm64.error:
        out["arm64-not-osh"] = Cell(None, "", a.arm64.error)
    else:
        seen = ", ".join(f"{f.insn} at line {f.line}" for f in a.arm64.barriers) or "no barrier instruction"
        out["arm64-not-osh"] = Cell(float(len(a.arm64.not_osh)), f"{a.arm64.what}; {seen}")
    return out
