"""Parsers for tracefs output: function_graph traces and hist-trigger tables.
Pure functions over text, unit-tested with captured samples."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

# " 1)               |  igb_poll() {"   " 0)   0.950 us    |    napi_build_skb();"   " 0) + 10.1 us |  }"
GRAPH_LINE = re.compile(r"^\s*(\d+)\)\s*(?:[^|]*)\|(\s*)(.*?)\s*$")
# Module functions carry their module on older kernels: `igb_poll [igb]() {` (6.1).
GRAPH_CALL = re.compile(r"^([A-Za-z_][\w.]*)(?: \[\w+\])?\(\)\s*(\{|;)")
GRAPH_CLOSE = re.compile(r"^\}")


@dataclass(frozen=True)
class GraphCounts:
    """Calls counted inside each root (e.g. igb_poll): counts[root][function]."""

    counts: dict[str, Counter]
    roots_entered: Counter
    unattributed: Counter  # calls seen outside any root (should stay empty)
    # callers[root][function][caller]: the innermost traced function open around each
    # call (the root itself when no other traced function is): which part of the rx
    # path made it, e.g. a page allocation by the refill or by slab under napi_build_skb.
    callers: dict[str, dict[str, Counter]] = field(default_factory=dict)


def count_graph(text: str, roots: set[str]) -> GraphCounts:
    """Attribute every call in a function_graph trace to the outermost root
    function open on the same CPU (depth tracked per CPU from `{` and `}`)."""
    stacks: dict[str, list[str]] = {}
    counts: dict[str, Counter] = {r: Counter() for r in roots}
    entered: Counter = Counter()
    unattributed: Counter = Counter()
    callers: dict[str, dict[str, Counter]] = {r: {} for r in roots}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = GRAPH_LINE.match(line)
        if not m:
            continue
        cpu, body = m.group(1), m.group(3)
        stack = stacks.setdefault(cpu, [])
        if GRAPH_CLOSE.match(body):
            if stack:
                stack.pop()
            continue
        call = GRAPH_CALL.match(body)
        if not call:
            continue
        func, opener = call.group(1), call.group(2)
        root = next((f for f in stack if f in roots), None)
        if root is None and func in roots:
            entered[func] += 1
        elif root is not None:
            counts[root][func] += 1
            callers[root].setdefault(func, Counter())[stack[-1]] += 1
        else:
            unattributed[func] += 1
        if opener == "{":
            stack.append(func)
    return GraphCounts(counts, entered, unattributed, callers)


HIST_ENTRY = re.compile(r"^\{\s*(?P<keys>.*?)\s*\}\s*(?P<vals>hitcount:.*)$")
HIST_TOTAL = re.compile(r"^\s*(Hits|Entries|Dropped):\s*(\d+)")


# `# trigger info: hist:keys=dir,attrs:vals=hitcount:sort=hitcount:size=2048 if device == "x" [active]`
TRIGGER_INFO = re.compile(r"^# trigger info: hist:keys=([^:\s]+)\S*(?: if (.*?))?(?: \[\w+\])?\s*$")


@dataclass(frozen=True)
class HistTable:
    keys: str  # the trigger's key list, e.g. "devname,dir,len"
    rows: list[tuple[dict[str, str], dict[str, int]]]  # (keys, values incl. hitcount)
    hits: int
    entries: int
    dropped: int


def parse_hist_file(text: str) -> dict[str, HistTable]:
    """An event's `hist` file, one table per hist trigger, by the trigger's key list
    (and ` if <filter>` for a trigger with a filter)."""
    sections: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if m := TRIGGER_INFO.match(line):
            keys = ",".join(STACK_KEY if k == LEGACY_STACK_KEY else k for k in m.group(1).split(","))
            sections.append((keys + (f" if {m.group(2)}" if m.group(2) else ""), []))
        elif sections:
            sections[-1][1].append(line)
    return {keys: parse_hist("\n".join(lines), keys) for keys, lines in sections}


STACK_KEY = "common_stacktrace"
# Its name before 6.5 (6.1 knows only this one); kept under STACK_KEY once parsed.
LEGACY_STACK_KEY = "stacktrace"
STACK_FRAME = re.compile(r"^\s*([\w.]+)\+0x[0-9a-f]+/0x[0-9a-f]+(?: \[(\w+)\])?\s*$")


def parse_hist(text: str, keys: str = "") -> HistTable:
    """One hist table: `{ k1: v1, k2: v2 } hitcount: N  val: M` rows and totals.
    Values in keys are kept as strings (trimmed); a `.hex`/`.sym` suffix is not interpreted.
    A `common_stacktrace` key spans lines (one frame a line, up to the closing `}`):
    its value is the frames' function names joined by ` < ` (innermost first)."""
    rows = []
    totals = {"Hits": 0, "Entries": 0, "Dropped": 0}
    pending: list[str] | None = None  # lines of an entry whose stack trace is still open
    for line in text.splitlines():
        stripped = line.strip()
        if pending is not None:
            if stripped.startswith("}"):
                rows.append(_stack_entry(pending, stripped))
                pending = None
            else:
                pending.append(stripped)
            continue
        if m := HIST_ENTRY.match(stripped):
            rows.append((_keys(m.group("keys")), _vals(m.group("vals"))))
        elif stripped.startswith("{") and stripped.endswith(f"{LEGACY_STACK_KEY}:"):  # either name
            pending = [stripped]
        elif m := HIST_TOTAL.match(line):
            totals[m.group(1)] = int(m.group(2))
    return HistTable(keys, rows, totals["Hits"], totals["Entries"], totals["Dropped"])


def _keys(text: str) -> dict[str, str]:
    keys = {}
    for part in _split_keys(text):
        name, _, value = part.partition(":")
        keys[name.strip()] = value.strip()
    return keys


def _vals(text: str) -> dict[str, int]:
    return {k: int(v) for k, v in re.findall(r"(\w+):\s*(-?\d+)", text)}


def _stack_entry(lines: list[str], closing: str) -> tuple[dict[str, str], dict[str, int]]:
    """`{ dir: 2, attrs: 34, common_stacktrace:` + frame lines + `} hitcount: N`."""
    head = lines[0].removeprefix("{").removesuffix(f"{LEGACY_STACK_KEY}:").strip()
    head = head.removesuffix("common_").strip().rstrip(",")
    keys = _keys(head) if head else {}
    frames = [m.group(1) for f in lines[1:] if (m := STACK_FRAME.match(f))]
    keys[STACK_KEY] = " < ".join(frames)
    return keys, _vals(closing.removeprefix("}"))


def _split_keys(text: str) -> list[str]:
    """`devname: 0000:00:04.0 , dir: 2` -> ['devname: 0000:00:04.0', 'dir: 2'].
    Split on commas that are followed by `name:` (values may contain colons)."""
    return [p for p in re.split(r"\s*,\s*(?=\w+:)", text) if p]


def subtract(now: HistTable, before: HistTable | None) -> HistTable:
    """The rows of a hist table counted since `before` was read (the same trigger, read
    earlier): hitcounts and values subtracted per key, rows that did not move dropped."""
    if before is None:
        return now
    base = {tuple(sorted(k.items())): v for k, v in before.rows}
    rows = []
    for keys, vals in now.rows:
        old = base.get(tuple(sorted(keys.items())), {})
        diff = {name: v - old.get(name, 0) for name, v in vals.items()}
        if diff.get("hitcount", 0) > 0:
            rows.append((keys, diff))
    return HistTable(now.keys, rows, now.hits - before.hits, len(rows), now.dropped - before.dropped)
