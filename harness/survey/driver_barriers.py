"""The barriers of any NIC driver's rx path, for the survey: the barrier calls
on the lines of its rx clean loop, its refill and the helpers they call (found
in its source), the x86 fence instructions the build made of those lines, and
the arm64 barrier instructions the same source compiles to. The igb claim
(claims/barriers.py) judges the same three things for igb with named checks."""

from __future__ import annotations

from harness.artifacts.cross_object import cross_driver_object, disassemble, require_cross
from harness.artifacts.kernel import Kernel
from harness.cache import Cache
from harness.errors import HarnessError, MissingToolError
from harness.hostcmd import run_checked
from harness.nics import NicModel
from harness.source.objdump import arm64_barrier, covered_functions, in_ranges, parse_fences
from harness.source.rx_source import DMA_BARRIERS, barrier_sites, rx_functions
from harness.survey.techniques import Cell

CELLS = ("dma-barriers", "other-barriers", "x86-fences", "arm64-not-osh")


def unmeasured(why: str) -> dict[str, Cell]:
    return {c: Cell(None, "", why) for c in CELLS}


def x86_text(kernel: Kernel, model: NicModel, ranges: dict[str, tuple[int, int]]) -> tuple[str, str]:
    """objdump -dl of the driver's module, or of its rx functions in vmlinux (built in)."""
    objects = {**kernel.debug_objects, **kernel.module_files}  # a prebuilt kernel's from its -dbg package
    if model.module and model.module in objects:
        ko = objects[model.module]
        return run_checked(["objdump", "-dl", "--no-show-raw-insn", str(ko)], what=f"objdump of {ko.name}"), ko.name
    if kernel.vmlinux is None or kernel.system_map is None:
        raise HarnessError("no object code with DWARF for this driver (a prebuilt kernel)")
    names = {line.split()[2] for line in kernel.system_map.read_text().splitlines() if len(line.split()) >= 3}
    symbols = sorted((set(ranges) | set(model.polls)) & names)
    text = "\n".join(run_checked(["objdump", "-dl", "--no-show-raw-insn", f"--disassemble={s}", str(kernel.vmlinux)],
                                 what=f"objdump of {s}") for s in symbols)
    return text, "vmlinux (" + ", ".join(symbols) + ")"


def driver_barrier_cells(kernel: Kernel, model: NicModel, cache: Cache) -> dict[str, Cell]:
    rel = f"{model.source_dir}/{model.rx_source}"
    try:
        source = kernel.source_file(rel).read_text()
    except HarnessError as e:
        return unmeasured(str(e))
    ranges = rx_functions(source, model.rx_roots)
    missing = [r for r in model.rx_roots if r not in ranges]
    if missing:
        return unmeasured(f"{', '.join(missing)} not in {rel} of this kernel (renamed?)")
    sites = barrier_sites(source, ranges)
    other = [s for s in sites if s[1] not in DMA_BARRIERS]
    where = f"{rel}: {', '.join(sorted(ranges))}"
    out = {
        "dma-barriers": Cell(float(len(sites) - len(other)), f"barrier calls on the lines of {where}"),
        "other-barriers": Cell(float(len(other)), "; ".join(f"{b}() at line {n} in {fn}()" for n, b, fn in other)
                               or f"none on the lines of {where}"),
    }
    try:
        text, what = x86_text(kernel, model, ranges)
        if not set(model.rx_roots) <= covered_functions(text, rel, ranges):
            out["x86-fences"] = Cell(None, "", f"the disassembly of {what} has no lines of {', '.join(model.rx_roots)}")
        else:
            fences = [f for f in parse_fences(text) if in_ranges(f, rel, ranges)]
            out["x86-fences"] = Cell(float(len(fences)), f"objdump -dl of {what}, fences attributed by DWARF line"
                                     + ("".join(f"; {f.insn} at line {f.line}" for f in fences)))
    except HarnessError as e:
        out["x86-fences"] = Cell(None, "", str(e).splitlines()[0])
    try:
        cross = require_cross("arm64")
        arm = disassemble(cross_driver_object(kernel, model, cross, cache), cross)
        hot = [f for f in parse_fences(arm, arm64_barrier) if in_ranges(f, rel, ranges)]
        not_osh = [f for f in hot if not f.insn.startswith("dmb osh")]
        seen = ", ".join(f"{f.insn} at line {f.line}" for f in hot) or "no barrier instruction"
        out["arm64-not-osh"] = Cell(float(len(not_osh)), f"{cross.gcc} -c {model.rx_source}, objdump -dl; {seen}")
    except (MissingToolError, HarnessError) as e:
        out["arm64-not-osh"] = Cell(None, "", str(e).splitlines()[0])
    return out
