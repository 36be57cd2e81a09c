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
from dataclasses import dataclass

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


def text_range(kallsyms: str, module: str | None = None, functions: set[str] | None = None) -> TextRange:
    """The text of `module` (kallsyms entries tagged [module]), or of the built-in
    `functions`, from /proc/kallsyms as root reads it (real addresses)."""
    addrs = []
    for line in kallsyms.splitlines():
        if not (m := KALLSYMS_LINE.match(line.strip())):
            continue
        if (module and m.group(3) == module) or (not module and functions and m.group(2) in functions
                                                  and not m.group(3)):
            addrs.append(int(m.group(1), 16))
    what = f"module {module}" if module else f"{len(functions or ())} built-in functions"
    if not addrs or not any(addrs):
        raise ValueError(f"no text of {what} in kallsyms (not loaded, or addresses hidden: kptr_restrict)")
    return TextRange(min(addrs), max(addrs) + LAST_FUNCTION_SLACK, what)


@dataclass(frozen=True)
class Injection:
    kind: str  # page | slab | function
    times: int  # at most this many failures
    probability: int = 100  # percent of the eligible calls that fail
    text: TextRange | None = None  # only calls from this code (the stack filter)
    function: str = ""  # function: what fails
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
