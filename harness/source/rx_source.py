"""A driver's rx path read from its C source: the functions the rx clean loop
and the refill run per frame (the loop, the refill, and the static helpers they
call, found by following calls inside the file), and the barrier calls on their
lines. Barrier rules and the survey judge exactly those lines."""

from __future__ import annotations

import re
from dataclasses import dataclass

COMMENT = re.compile(r"/\*.*?\*/|//[^\n]*", re.S)
CALL = re.compile(r"\b([A-Za-z_]\w*)\s*\(")
BARRIER_CALL = re.compile(r"\b(dma_rmb|dma_wmb|dma_mb|rmb|wmb|mb|smp_rmb|smp_wmb|smp_mb|smp_mb__\w+|"
                          r"smp_store_release|smp_load_acquire|virt_[rw]?mb|virt_store_mb|barrier)\s*\(")
DMA_BARRIERS = ("dma_rmb", "dma_wmb")
# Helpers that belong to the transmit side even when the rx loop calls them
# (XDP_TX, tail bumps of the tx ring): judged apart, not as rx lines.
TX_NAMES = re.compile(r"xmit|_tx_|_tx$|tx_ring|clean_tx|xdp_ring_update_tail|flush_tx")


def strip_comments(source: str) -> str:
    """C comments blanked out, line numbers kept (a comment may name a barrier)."""
    return COMMENT.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), source)


def function_ranges(source: str, names: tuple[str, ...] | None = None) -> dict[str, tuple[int, int]]:
    """Line ranges (1-based, inclusive) of top-level C function definitions: a
    definition starts at column 0 with its name and `(` and is not a prototype;
    it ends at the next `}` at column 0. `names` limits the search."""
    lines = source.splitlines()
    out: dict[str, tuple[int, int]] = {}
    head = re.compile(r"^(?:static\s+|inline\s+|__always_inline\s+|noinline\s+)*[\w\s\*]*?\b(\w+)\(")
    for i, line in enumerate(lines):
        if not line or line[0] in " \t#}/{" or line.rstrip().endswith(";"):
            continue
        m = head.match(line)
        if not m or (names is not None and m.group(1) not in names) or m.group(1) in out:
            continue
        # A definition's body starts at the first `{` at column 0 before any `;` line end.
        j = i
        while j < len(lines) and not lines[j].startswith("{") and not lines[j].rstrip().endswith(";"):
            j += 1
        if j >= len(lines) or not lines[j].startswith("{"):
            continue
        end = next((k for k in range(j, len(lines)) if lines[k].startswith("}")), len(lines) - 1)
        out[m.group(1)] = (i + 1, end + 1)
    return out


def rx_functions(source: str, roots: tuple[str, ...], depth: int = 3,
                 leave_out: re.Pattern[str] | None = TX_NAMES) -> dict[str, tuple[int, int]]:
    """The roots and the functions of this file they call, up to `depth` calls deep,
    the helpers `leave_out` names left out (by default the transmit side's: the rx
    path's functions)."""
    defined = function_ranges(source)
    lines = strip_comments(source).splitlines()
    found = {r: defined[r] for r in roots if r in defined}
    frontier = list(found)
    for _ in range(depth):
        nxt = []
        for name in frontier:
            a, b = found[name]
            body = "\n".join(lines[a:b])  # after the head line: the calls made
            for callee in CALL.findall(body):
                if callee in defined and callee not in found and not (leave_out and leave_out.search(callee)):
                    found[callee] = defined[callee]
                    nxt.append(callee)
        frontier = nxt
    return found


def barrier_sites(source: str, ranges: dict[str, tuple[int, int]]) -> list[tuple[int, str, str]]:
    """(line, barrier, function) for every barrier call inside the ranges, comments ignored."""
    lines = strip_comments(source).splitlines()
    sites = []
    for func, (a, b) in ranges.items():
        for n in range(a, b + 1):
            sites += [(n, m.group(1), func) for m in BARRIER_CALL.finditer(lines[n - 1])]
    return sorted(sites)


def barrier_kind(name: str) -> str:
    if name.startswith("dma_"):
        return "dma"
    if name.startswith(("smp_", "virt_")):
        return "smp"
    return "compiler" if name == "barrier" else "full"


@dataclass(frozen=True)
class StatusOrder:
    """The rx loop's order around the descriptor's write-back check: the line that
    first reads the descriptor (its length/status, DD), the first dma_rmb() after it,
    and every line between that touches the descriptor again (reads the device may
    not have finished writing: the talk's dma_rmb() goes right after the check)."""

    status_line: int
    rmb_line: int | None  # None: no dma_rmb() after the status read in the function
    early_reads: tuple[tuple[int, str], ...]  # (line, code) touching the descriptor before the barrier


def status_order(source: str, function: str, desc_var: str) -> StatusOrder | None:
    """The order in `function` around its first read through `desc_var` (None: the
    function or such a read is not there). Comments are ignored; the assignment of
    `desc_var` itself is no read."""
    ranges = function_ranges(source, (function,))
    if function not in ranges:
        return None
    a, b = ranges[function]
    lines = strip_comments(source).splitlines()
    read = re.compile(rf"\b{re.escape(desc_var)}\s*->")
    uses = re.compile(rf"\b{re.escape(desc_var)}\b(?!\s*=[^=])")
    status = next((n for n in range(a, b + 1) if read.search(lines[n - 1])), None)
    if status is None:
        return None
    rmb = next((n for n in range(status + 1, b + 1) if re.search(r"\bdma_rmb\s*\(", lines[n - 1])), None)
    early = tuple((n, lines[n - 1].strip()) for n in range(status + 1, (rmb or b + 1))
                  if uses.search(lines[n - 1]))
    return StatusOrder(status, rmb, early)
