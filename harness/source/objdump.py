"""`objdump -dl` output read as (instruction, source file, line, inlined
function): which barrier instruction came from which source line."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

FENCES = ("lfence", "sfence", "mfence")
INSN = re.compile(r"^\s*[0-9a-f]+:\s+(\w+)")
ARM64_BARRIER = re.compile(r"^\s*[0-9a-f]+:\s+(dmb|dsb)\s+(\w+)")
# An absolute path for a self-built kernel; a relative one (`debian/build/.../igb_main.c:8279`)
# in Debian's -dbg objects, built with -fdebug-prefix-map.
LINE_INFO = re.compile(r"^(\S+?\.[A-Za-z]+):(\d+)(?: \(discriminator \d+\))?$")
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


def any_insn(raw: str) -> str | None:
    m = INSN.match(raw)
    return m.group(1) if m else None


def parse_fences(objdump_text: str, barrier: Callable[[str], str | None] = x86_fence) -> list[Fence]:
    """Instructions `barrier(line)` names (fences by default) of `objdump -dl` output,
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


def in_ranges(f: Fence, source: str, ranges: dict[str, tuple[int, int]]) -> bool:
    """Whether the instruction comes from one of the line ranges of `source` (a tree path)."""
    return f.file.endswith(source) and any(a <= f.line <= b for a, b in ranges.values())


def covered_functions(objdump_text: str, source: str, ranges: dict[str, tuple[int, int]]) -> set[str]:
    """The functions of `ranges` that at least one disassembled instruction is attributed to."""
    lines = {i.line for i in parse_fences(objdump_text, any_insn) if i.file.endswith(source)}
    return {name for name, (a, b) in ranges.items() if any(a <= n <= b for n in lines)}
