"""The kernel's fault injection (Documentation/fault-injection), aimed at one
driver: `fail_page_alloc` and `failslab` fail only allocations whose call stack
passes through the driver's text (CONFIG_FAULT_INJECTION_STACKTRACE_FILTER:
`require-start`/`require-end`), and `fail_function` makes an
ALLOW_ERROR_INJECTION function (page_pool's allocation) return an error.

Each attribute is armed with a `probability` (percent of the eligible calls that
fail) and `interval` 1 (lib/fault-inject.c counts the interval before the stack
filter, so a larger one would count every allocation in the system), bounded by `times`: the
kernel decrements `times` on every failure it injects, so `times` before minus
after is the count injected."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import KW_ONLY, dataclass

DEBUGFS = "/sys/kernel/debug"
KINDS = {  # kind -> (debugfs directory, its Kconfig option, what it fails)
    "page": ("fail_page_alloc", "FAIL_PAGE_ALLOC", "page allocations (alloc_pages and friends)"),
    "slab": ("failslab", "FAILSLAB", "slab allocations (kmalloc, kmem_cache_alloc, skb heads)"),
    "function": ("fail_function", "FAIL_FUNCTION", "calls of an ALLOW_ERROR_INJECTION function"),
}


@dataclass(frozen=True)
class TextRange:
    """A driver's code: [start, end) of its functions' addresses (a module's text is one
    region; a built-in driver's file is contiguous in vmlinux's .text)."""

    start: int
    end: int
    what: str  # "module igb", "virtio_net.c's functions"


KALLSYMS_LINE = re.compile(r"^([0-9a-f]+) [tT] (\S+)(?:\s+\[(\w+)\])?$")
# The last function's size is not in kallsyms: the range runs this far past its start.
LAST_FUNCTION_SLACK = 0x1000
# Two functions of one built-in object are never further apart than this in .text
# (KASAN makes a large function 20-30 KiB); a larger gap is another section
# (.init.text, .exit.text: the driver's module_init and module_exit, megabytes away).
OBJECT_GAP = 0x20000
# The DMA-API checker's entry points (kernel/dma/debug.c, built in: every map and
# sync passes through one). Its own allocations (the active-cacheline radix tree,
# GFP_ATOMIC) sit under the driver's map call: failing one switches the checker off
# for the rest of the boot ("DMA-API: cacheline tracking ENOMEM, dma-debug disabled").
DMA_DEBUG_PREFIX = "debug_dma_"


Symbols = list[tuple[int, str, str | None]]


def text_symbols(kallsyms: str) -> Symbols:
    """(address, name, module) of every text symbol of /proc/kallsyms, by address: read
    once, for the driver's range and the DMA-API checker's."""
    out = []
    for line in kallsyms.splitlines():
        if m := KALLSYMS_LINE.match(line.strip()):
            out.append((int(m.group(1), 16), m.group(2), m.group(3)))
    return sorted(out)


def text_range(symbols: Symbols, module: str | None = None, functions: set[str] | None = None) -> TextRange:
    """The text of `module` (kallsyms entries tagged [module]), or of the built-in
    `functions`, from /proc/kallsyms as root reads it (real addresses; text_symbols).

    A built-in object's .text is contiguous, but not all of its functions are there:
    its module_init/exit sit in .init.text/.exit.text, and a static function may share
    its name with one in another file. Either stretches [min, max] over most of the
    kernel, and the stack filter then passes the page-fault path's allocations too
    (measured on 6.12.95, virtio_net's init/exit: "VM_FAULT_OOM leaked out to the #PF
    handler", ssh died). So only names unique in kallsyms count, only their largest
    cluster (no gap over OBJECT_GAP), and the range ends at the next symbol."""
    if module:
        addrs = [a for a, _, mod in symbols if mod == module]
        what = f"module {module}"
        if not addrs or not any(addrs):
            raise ValueError(f"no text of {what} in kallsyms (not loaded, or addresses hidden: kptr_restrict)")
        return TextRange(min(addrs), max(addrs) + LAST_FUNCTION_SLACK, what)
    builtin = [(a, name) for a, name, mod in symbols if not mod]
    what = f"{len(functions or ())} built-in functions"
    seen = Counter(name for _, name in builtin)  # foo and foo.part.0 are one function's parts
    own = [(a, name) for a, name in builtin if _base(name) in (functions or ()) and seen[name] == 1]
    if not own or not any(a for a, _ in own):
        raise ValueError(f"no text of {what} in kallsyms (not built in, or addresses hidden: kptr_restrict)")
    clusters = [[own[0]]]
    for sym in own[1:]:
        if sym[0] - clusters[-1][-1][0] > OBJECT_GAP:
            clusters.append([])
        clusters[-1].append(sym)
    best = max(clusters, key=len)
    last = best[-1][0]
    end = next((a for a, _ in builtin if a > last), last + LAST_FUNCTION_SLACK)
    return TextRange(best[0][0], end, f"{len(best)} of {what} ({best[0][1]} .. {best[-1][1]})")


def _base(name: str) -> str:
    """A compiler clone's function: foo.isra.0, foo.constprop.0, foo.cold -> foo."""
    return name.partition(".")[0]


def dma_debug_text(symbols: Symbols) -> TextRange | None:
    """The DMA-API checker's text (its debug_dma_* functions and what lies between),
    or None in a kernel without it."""
    names = {n for _, n, mod in symbols if not mod and n.startswith(DMA_DEBUG_PREFIX)}
    return text_range(symbols, functions=names) if names else None


@dataclass(frozen=True)
class Injection:
    kind: str  # page | slab | function
    times: int  # at most this many failures
    probability: int = 100  # percent of the eligible calls that fail
    text: TextRange | None = None  # only calls from this code (the stack filter)
    _: KW_ONLY
    function: str = ""  # function: what fails
    reject: TextRange | None = None  # never calls through this code (the DMA-API checker's)
    # Frames the filter looks through. Everything the stack does with a frame runs under
    # the driver's NAPI poll, so a deep filter would fail the IP stack's allocations too;
    # the driver's own allocations are within about 7 frames of the injection point
    # (should_fail_ex, should_failslab or __alloc_pages, kmem_cache_alloc_bulk,
    # napi_build_skb, the poll: the rest is inlined), the stack's are 10 and more.
    stack_depth: int = 8

    @property
    def dir(self) -> str:
        return f"{DEBUGFS}/{KINDS[self.kind][0]}"

    def arm_script(self) -> str:
        """Shell that arms the attribute. verbose 0: a stack dump per failure would flood a
        TCG serial console; the count comes from `times`."""
        d = self.dir
        lines = [f"[ -d {d} ] || {{ echo 'no {d}: the kernel lacks CONFIG_{KINDS[self.kind][1]}' >&2; exit 3; }}",
                 f"echo 0 > {d}/probability", f"echo 0 > {d}/verbose", f"echo 0 > {d}/space",
                 f"echo N > {d}/task-filter", f"echo 1 > {d}/interval", f"echo {self.times} > {d}/times"]
        if self.kind in ("page", "slab"):
            assert self.text is not None, "page and slab faults are aimed at a driver's text"
            lines.append(f"echo N > {d}/ignore-gfp-wait")
        if self.text is not None:
            lines += [f"echo {self.stack_depth} > {d}/stacktrace-depth",
                      f"echo {self.text.start:#x} > {d}/require-start", f"echo {self.text.end:#x} > {d}/require-end"]
            # Written every time (0, 0: nothing rejected): debugfs keeps the last values.
            reject = self.reject or TextRange(0, 0, "nothing")
            lines += [f"echo {reject.start:#x} > {d}/reject-start", f"echo {reject.end:#x} > {d}/reject-end"]
        if self.kind == "page":
            lines += [f"echo N > {d}/ignore-gfp-highmem", f"echo 0 > {d}/min-order"]
        if self.kind == "function":
            lines += [f"echo > {d}/inject", f"echo {self.function} > {d}/inject"]
        lines.append(f"echo {self.probability} > {d}/probability")
        return "set -e\n" + "\n".join(lines)

    def disarm_script(self) -> str:
        """Shell that stops injecting and prints the `times` left."""
        d = self.dir
        tail = [f"echo > {d}/inject"] if self.kind == "function" else []
        return "\n".join([f"echo 0 > {d}/probability", *tail, f"cat {d}/times"])

    def injected(self, times_left: str) -> int:
        """Failures injected, from `times` as the disarm script printed it."""
        return self.times - int(times_left.strip().splitlines()[-1])
