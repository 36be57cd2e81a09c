"""The barriers of a NIC driver's rx path, read once for whoever judges them (the
igb claim, claims/barriers.py; the survey's cells for every driver): the barrier
calls on the lines of its rx clean loop, its refill and the static helpers they
call (found in its source, comments ignored), the x86 fence instructions its build
made of those lines (objdump -dl, attributed by DWARF line), and the barrier
instructions the same source compiles to for arm64."""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.artifacts.cross_object import CrossArch, cross_driver_object, disassemble, require_cross
from harness.artifacts.kernel import Kernel
from harness.cache import Cache
from harness.errors import HarnessError, MissingToolError
from harness.hostcmd import run_checked
from harness.nics import NicModel
from harness.source.objdump import Fence, arm64_barrier, covered_functions, in_ranges, parse_fences
from harness.source.rx_source import DMA_BARRIERS, barrier_sites, rx_functions

CROSS_ARCH = "arm64"


@dataclass(frozen=True)
class X86View:
    """The x86-64 build of the rx/refill lines, or why it could not be read (`error`)."""

    what: str = ""  # what was disassembled
    covered: frozenset[str] = frozenset()  # rx/refill functions with instructions attributed to them
    fences: tuple[Fence, ...] = ()  # fences attributed to the rx/refill lines
    elsewhere: tuple[Fence, ...] = ()  # fences in the same code, outside those lines
    error: str = ""


@dataclass(frozen=True)
class Arm64View:
    """The rx/refill lines compiled for arm64: every barrier instruction on them."""

    what: str = ""
    barriers: tuple[Fence, ...] = ()
    has_lines: bool = False  # the object carries line info for the rx source
    error: str = ""

    @property
    def not_osh(self) -> list[Fence]:
        """Barriers that order more than the device needs (dsb, dmb ish*)."""
        return [f for f in self.barriers if not f.insn.startswith("dmb osh")]


@dataclass(frozen=True)
class BarrierAnalysis:
    source: str  # the rx file, as a tree path
    lines: tuple[str, ...]  # its text, by line (1-based: lines[n - 1])
    ranges: dict[str, tuple[int, int]]  # the rx/refill functions and their helpers, by line
    sites: tuple[tuple[int, str, str], ...]  # (line, barrier call, function)
    x86: X86View = field(default_factory=X86View)
    arm64: Arm64View = field(default_factory=Arm64View)

    def missing_roots(self, model: NicModel) -> list[str]:
        return [r for r in model.rx_roots if r not in self.ranges]

    @property
    def dma_sites(self) -> list[tuple[int, str, str]]:
        return [s for s in self.sites if s[1] in DMA_BARRIERS]

    @property
    def other_sites(self) -> list[tuple[int, str, str]]:
        return [s for s in self.sites if s[1] not in DMA_BARRIERS]


def x86_disassembly(kernel: Kernel, model: NicModel, ranges: dict[str, tuple[int, int]]) -> tuple[str, str]:
    """objdump -dl of the driver's module (a self-built kernel's, with DWARF, or a
    prebuilt kernel's from its -dbg package), or, built in, of its poll functions and
    every rx helper with a symbol of its own in vmlinux. Returns (text, what)."""
    objects = {**kernel.debug_objects, **kernel.module_files}
    if model.module and model.module in objects:
        ko = objects[model.module]
        return run_checked(["objdump", "-dl", "--no-show-raw-insn", str(ko)], what=f"objdump of {ko}"), ko.name
    if kernel.vmlinux is None or kernel.system_map is None:
        raise HarnessError("no object code with DWARF for this driver (a prebuilt kernel)")
    names = {line.split()[2] for line in kernel.system_map.read_text().splitlines() if len(line.split()) >= 3}
    symbols = sorted((set(ranges) | set(model.polls) | {model.refill}) & names)
    text = "\n".join(run_checked(["objdump", "-dl", "--no-show-raw-insn", f"--disassemble={s}",
                                  str(kernel.vmlinux)], what=f"objdump of {s}") for s in symbols)
    return text, "vmlinux (" + ", ".join(symbols) + ")"


def _x86(kernel: Kernel, model: NicModel, source: str, ranges: dict[str, tuple[int, int]]) -> X86View:
    try:
        text, what = x86_disassembly(kernel, model, ranges)
    except HarnessError as e:
        return X86View(error=str(e).splitlines()[0])
    if f"{model.rx_source}:" not in text:
        return X86View(what, error=f"no line info for {model.rx_source} in {what} (needs CONFIG_DEBUG_INFO)")
    fences = parse_fences(text)
    hot = tuple(f for f in fences if in_ranges(f, source, ranges))
    return X86View(what, frozenset(covered_functions(text, source, ranges)), hot,
                   tuple(f for f in fences if f not in hot))


def _arm64(kernel: Kernel, model: NicModel, source: str, ranges: dict[str, tuple[int, int]],
           cache: Cache) -> Arm64View:
    try:
        cross: CrossArch = require_cross(CROSS_ARCH)
    except MissingToolError as e:
        return Arm64View(error=str(e))
    try:
        text = disassemble(cross_driver_object(kernel, model, cross, cache), cross)
    except HarnessError as e:
        return Arm64View(error=f"{model.rx_source} could not be compiled for {CROSS_ARCH}: "
                               f"{str(e).splitlines()[0]}")
    what = (f"{cross.gcc} -c of this kernel's {model.rx_source} (external-module build against an {CROSS_ARCH} "
            f"config of the same fragments), {cross.objdump} -dl, instructions attributed by DWARF line")
    return Arm64View(what, tuple(f for f in parse_fences(text, arm64_barrier) if in_ranges(f, source, ranges)),
                     f"{model.rx_source}:" in text)


def analyse_barriers(kernel: Kernel, model: NicModel, cache: Cache | None) -> BarrierAnalysis:
    """Raises HarnessError when the driver's source is not there (a prebuilt kernel
    without it); rx roots the source lacks are missing from `ranges` (`missing_roots`)."""
    source = f"{model.source_dir}/{model.rx_source}"
    text = kernel.source_file(source).read_text()
    ranges = rx_functions(text, model.rx_roots)
    return BarrierAnalysis(source, tuple(text.splitlines()), ranges, tuple(barrier_sites(text, ranges)),
                           _x86(kernel, model, source, ranges),
                           _arm64(kernel, model, source, ranges, cache) if cache is not None else
                           Arm64View(error="no cache for the cross build"))
