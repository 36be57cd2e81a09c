"""Leaks after an experiment, on the debug flavour (`--debug`), as netdev's CI
checks them after every test: kmemleak's unreferenced slab objects and
page_owner's live pages, each attributed to a driver under test by its
allocation stack.

kmemleak (CONFIG_DEBUG_KMEMLEAK, booted with kmemleak=on) finds slab objects no
pointer refers to any more, but only those older than 5 s at a scan
(mm/kmemleak.c: jiffies_min_age) and never pages. page_owner (page_owner=on,
6.10+'s page_owner_stacks/show_stacks) counts, per allocation stack, the base
pages still allocated from it: the driver's stacks counted before and after an
experiment give the pages it allocated and nobody freed. A driver's rx ring holds
its pages between experiments, so the count is compared, not read alone; and a
ring may hold more pages after an experiment than before without leaking one (a
page-frag driver refilled from order-0 pages while its order-3 allocations failed:
e1000 +77 on 6.12.95), so growth past the floor is read once more after the NICs
under test were set down and up: a ring's pages are freed and refilled by that, a
leaked page is not."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from harness.guest.crash import KernelReport
from harness.guest.vm import Guest

KMEMLEAK = "/sys/kernel/debug/kmemleak"
PAGE_STACKS = "/sys/kernel/debug/page_owner_stacks/show_stacks"
# kmemleak reports no object younger than this at a scan (mm/kmemleak.c, MSECS_MIN_AGE).
KMEMLEAK_MIN_AGE_S = 5
# Pages a driver may hold more after an experiment than before without a leak. Both
# readings come after the traffic settled, when every frame's skb was freed and each
# ring was refilled whole at its poll's end: stock igb and e1000e measured +0 every
# time (6.12.95); the floor leaves room for a ring caught between two refills.
PAGE_LEAK_FLOOR = 8
# A page-frag cache (per CPU: napi_alloc_cache and netdev_alloc_cache) keeps the
# compound page it carves fragments from (PAGE_FRAG_CACHE_MAX_ORDER 3: 8 base pages)
# until it moves on to the next; whose stack that page counts under is whoever
# refilled the cache last. A page-frag driver (e1000, e1000e) may so end an
# experiment holding one such page per cache more than before, none leaked (e1000:
# +16 after its ring was cycled on a 2-vCPU guest, 6.12.95).
FRAG_CACHE_PAGES = 8
FRAG_CACHES_PER_CPU = 2

OBJECT = re.compile(r"^unreferenced object (0x[0-9a-f]+) \(size (\d+)\):")
COMM = re.compile(r'^\s+comm "([^"]*)", pid (\d+)')
FRAME = re.compile(r"^\s+(?:\[<[0-9a-fx]+>\]\s+)?([\w.$]+\+0x[0-9a-f]+/0x[0-9a-f]+(?:\s+\[\w+\])?)\s*$")
MODULE_TAG = re.compile(r"\[(\w+)\]\s*$")
PAGES = re.compile(r"^nr_base_pages:\s*(\d+)")


@dataclass(frozen=True)
class Drivers:
    """How a stack frame is told to be a driver under test's: its module (`[igb]`),
    or, for a driver built into the kernel (virtio-net), the functions its file defines."""

    modules: frozenset[str] = frozenset()
    builtin: dict[str, str] = field(default_factory=dict)  # function -> driver

    def driver_of(self, frame: str) -> str | None:
        if (m := MODULE_TAG.search(frame)) and m.group(1) in self.modules:
            return m.group(1)
        return self.builtin.get(function_of(frame))


# Frames of the page allocator, and of the page providers a driver asks for its rx pages
# (page_pool, the page-frag caches behind napi/netdev_alloc_frag): a stack whose first
# frame past these is a driver's holds that driver's pages. Pages the slab allocator,
# vmalloc, the DMA-API checker or kmemleak took while a driver ran are not (their
# first frame past the allocator is alloc_slab_page, __vmalloc_*, ...).
FRAG_FUNCTIONS = r"__?page_frag_\w+|page_frag_\w+|__?netdev_alloc_frag\w*|__?napi_alloc_frag\w*"
ALLOCATOR_FRAME = re.compile(r"^(post_alloc_hook|get_page_from_freelist|__?alloc_pages\w*|alloc_pages\w*"
                             r"|__?folio_alloc\w*|__get_free_pages\w*|__?page_pool_\w+|page_pool_\w+"
                             rf"|{FRAG_FUNCTIONS}|dev_alloc_pages?\w*)(\.\w+)*$")
FRAG_FRAME = re.compile(rf"^({FRAG_FUNCTIONS})(\.\w+)*$")  # a page-frag cache's pages (FRAG_CACHE_PAGES)


def page_owner_of(stack: Iterable[str], drivers: Drivers) -> tuple[str, str] | None:
    """(driver, function) when the first frame past the page allocator (and page_pool,
    page-frag) is a driver under test's: the pages of that stack are the driver's."""
    for frame in stack:
        if not ALLOCATOR_FRAME.match(function_of(frame)):
            d = drivers.driver_of(frame)
            return (d, function_of(frame)) if d is not None else None
    return None


def function_of(frame: str) -> str:
    """`igb_poll+0x1d/0x1f30 [igb]` or `igb_poll [igb]` -> igb_poll."""
    return re.split(r"[+\s]", frame.strip(), maxsplit=1)[0]


def first_driver_frame(stack: Iterable[str], drivers: Drivers) -> tuple[str, str] | None:
    """(driver, function) of the innermost frame a driver under test owns."""
    for frame in stack:
        if (d := drivers.driver_of(frame)) is not None:
            return d, function_of(frame)
    return None


@dataclass(frozen=True)
class UnreferencedObject:
    address: str
    size: int
    comm: str
    backtrace: tuple[str, ...]


def parse_kmemleak(text: str) -> list[UnreferencedObject]:
    """/sys/kernel/debug/kmemleak's report: one block per unreferenced object."""
    out: list[UnreferencedObject] = []
    block: list[str] = []
    for line in [*text.splitlines(), ""]:
        if OBJECT.match(line) or (not line.strip() and block):
            if block:
                out.append(_object(block))
            block = [line] if OBJECT.match(line) else []
        elif block:
            block.append(line)
    return out


def _object(block: list[str]) -> UnreferencedObject:
    head = OBJECT.match(block[0])
    assert head is not None
    comm = next((m.group(1) for line in block if (m := COMM.match(line))), "?")
    trace = block[next((i for i, line in enumerate(block) if line.strip().startswith("backtrace")), len(block)):]
    frames = tuple(m.group(1) for line in trace if (m := FRAME.match(line)))
    return UnreferencedObject(head.group(1), int(head.group(2)), comm, frames)


def parse_page_stacks(text: str) -> dict[tuple[str, ...], int]:
    """page_owner_stacks/show_stacks: each allocation stack (frames without offsets,
    so a stack reads the same in two readings) -> base pages still allocated from it."""
    out: dict[tuple[str, ...], int] = {}
    frames: list[str] = []
    for line in text.splitlines():
        if m := PAGES.match(line):
            key = tuple(_without_offset(f) for f in frames)
            out[key] = out.get(key, 0) + int(m.group(1))
            frames = []
        elif line.strip():
            frames.append(line.strip())
    return out


def _without_offset(frame: str) -> str:
    module = MODULE_TAG.search(frame)
    return function_of(frame) + (f" [{module.group(1)}]" if module else "")


@dataclass(frozen=True)
class PageGrowth:
    stack: tuple[str, ...]
    pages: int  # base pages live from this stack after the experiment minus before

    @property
    def from_frag_cache(self) -> bool:
        return any(FRAG_FRAME.match(function_of(frame)) for frame in self.stack)


def page_growth(before: dict[tuple[str, ...], int], after: dict[tuple[str, ...], int],
                drivers: Drivers) -> list[PageGrowth]:
    """Every stack of a driver's own pages whose live count changed, largest growth first
    (page_owner_of: not the slab pages or vmalloc areas allocated under it). Only their sum
    says something: a ring's pages move from one stack to another as the driver
    replaces them (filled at open by igb_configure, later by igb_poll's refill)."""
    changed = [PageGrowth(stack, after.get(stack, 0) - before.get(stack, 0)) for stack in {*before, *after}
               if after.get(stack, 0) != before.get(stack, 0) and page_owner_of(stack, drivers)]
    return sorted(changed, key=lambda g: -g.pages)


@dataclass
class LeakCheck:
    """What one experiment leaked, from a driver under test (the finding) and from
    elsewhere (kept, not held against the drivers: the experiment's own tools and
    the kernel's long-lived caches)."""

    objects: list[UnreferencedObject] = field(default_factory=list)  # from a driver under test
    other_objects: list[UnreferencedObject] = field(default_factory=list)
    page_growth: list[PageGrowth] = field(default_factory=list)  # every driver stack that changed
    scans_s: float = 0.0
    # Growth seen right after the experiment when it was read again after a ring cycle
    # (page_growth is then the second reading's); None: no second reading was needed.
    grown_before_cycle: int | None = None
    frag_allowance: int = 0  # pages the guest's page-frag caches may hold (FRAG_CACHE_PAGES each)

    @property
    def leaked_pages(self) -> int:
        """Driver pages grown, less what the page-frag caches may hold of them."""
        frag = sum(g.pages for g in self.page_growth if g.from_frag_cache)
        return max(0, frag - self.frag_allowance) + sum(g.pages for g in self.page_growth if not g.from_frag_cache)

    @property
    def page_leak(self) -> bool:
        return self.leaked_pages >= PAGE_LEAK_FLOOR

    def reports(self, drivers: Drivers) -> tuple[KernelReport, ...]:
        """The leaks that fail the experiment, as kernel reports (fingerprinted by the
        driver function that allocated)."""
        out = []
        for o in self.objects:
            where = first_driver_frame(o.backtrace, drivers)
            out.append(KernelReport("kmemleak", f"unreferenced object (size {o.size}) allocated in "
                                    f"{where[1] if where else '?'}", where[1] if where else "?",
                                    (f"unreferenced object {o.address} (size {o.size}), comm {o.comm}",
                                     *o.backtrace)))
        if self.page_leak:
            top = self.page_growth[0]
            where = page_owner_of(top.stack, drivers)
            out.append(KernelReport(
                "page leak", f"pages allocated in {where[1] if where else '?'} not freed",
                where[1] if where else "?",
                (f"{self.leaked_pages} more base pages live from the drivers' allocation stacks after the "
                 f"experiment than before (page_owner; floor {PAGE_LEAK_FLOOR}, beyond the "
                 f"{self.frag_allowance} the page-frag caches may hold"
                 + (f"; {self.grown_before_cycle:+d} before the rings were cycled, so not what a ring holds"
                    if self.grown_before_cycle is not None else "")
                 + f"); the stack that grew most, {top.pages:+d}:",
                 *top.stack)))
        return tuple(out)

    def to_json(self) -> dict:
        return {"kmemleak_driver_objects": len(self.objects), "kmemleak_other_objects": len(self.other_objects),
                "other_objects": [{"size": o.size, "comm": o.comm, "backtrace": list(o.backtrace[:8])}
                                  for o in self.other_objects[:10]],
                "driver_pages_grown": self.leaked_pages, "page_floor": PAGE_LEAK_FLOOR,
                "frag_cache_allowance": self.frag_allowance,
                "driver_pages_grown_before_ring_cycle": self.grown_before_cycle,
                "grown_stacks": [{"pages": g.pages, "stack": list(g.stack)} for g in self.page_growth[:5]],
                "scans_s": round(self.scans_s, 1)}


CLEARED = "kmemleak cleared"  # guest.facts: the last read cleared the suspects (no scan needed before the next)


def set_aside(guest: Guest) -> None:
    """kmemleak's current suspects set aside (a scan, then clear: they are not reported
    again). A scan of the guest's memory takes 10-25 s under TCG with KASAN: skipped when
    the previous experiment's read has just cleared them."""
    if not guest.facts.pop(CLEARED, False):
        guest.run(f"echo scan > {KMEMLEAK} && echo clear > {KMEMLEAK}", timeout=300)


def unreferenced(guest: Guest) -> list[UnreferencedObject]:
    """Two kmemleak scans once the last objects are old enough to be reported (NIPA scans
    twice: an object seen once may be a pointer in flight), the unreferenced objects,
    then the suspects cleared for what comes next."""
    text = guest.run(f"sleep {KMEMLEAK_MIN_AGE_S}; echo scan > {KMEMLEAK}; echo scan > {KMEMLEAK}; "
                     f"cat {KMEMLEAK}; echo clear > {KMEMLEAK}", timeout=600).stdout
    guest.facts[CLEARED] = True
    return parse_kmemleak(text)


def arm(guest: Guest) -> dict[tuple[str, ...], int] | None:
    """Before an experiment: kmemleak's suspects set aside, and the live pages per
    allocation stack; None on a kernel that is not the debug flavour."""
    if not guest.kernel.debug:
        return None
    set_aside(guest)
    return parse_page_stacks(guest.run(f"cat {PAGE_STACKS}", timeout=300).stdout)


def read(guest: Guest, before: dict[tuple[str, ...], int], drivers: Drivers) -> LeakCheck:
    """After an experiment: kmemleak's unreferenced objects, and the live pages per stack
    against `before`."""
    started = time.monotonic()
    objects = unreferenced(guest)
    growth = page_growth(before, live_pages(guest), drivers)
    ours, others = split_objects(objects, drivers)
    check = LeakCheck(ours, others, growth,
                      frag_allowance=FRAG_CACHE_PAGES * FRAG_CACHES_PER_CPU * guest.options.cpus)
    if check.page_leak:
        cycle_rings(guest)
        check.grown_before_cycle = check.leaked_pages
        check.page_growth = page_growth(before, live_pages(guest), drivers)
    check.scans_s = time.monotonic() - started
    return check


def live_pages(guest: Guest) -> dict[tuple[str, ...], int]:
    return parse_page_stacks(guest.run(f"cat {PAGE_STACKS}", timeout=300).stdout)


def cycle_rings(guest: Guest) -> None:
    """The NICs under test set down (every rx buffer freed) and up (the rings filled
    afresh), as a ring-size change does; never the management NIC."""
    guest.run(" && ".join(f"ip link set dev {n.name} down && ip link set dev {n.name} up"
                          for n in guest.nics_under_test()))


def split_objects(objects: list[UnreferencedObject], drivers: Drivers
                  ) -> tuple[list[UnreferencedObject], list[UnreferencedObject]]:
    """(allocated under a driver under test, elsewhere)."""
    ours = [o for o in objects if first_driver_frame(o.backtrace, drivers)]
    return ours, [o for o in objects if o not in ours]


def drivers_of(guest: Guest) -> Drivers:
    """The guest's NICs under test: their modules, and a built-in driver's functions."""
    from harness.measurement.cost import driver_functions
    from harness.nics import nic

    models = [nic(model) for model in guest.options.nics]
    builtin = {fn: m.driver for m in models if not m.module for fn in driver_functions(guest.kernel, m)}
    return Drivers(frozenset(m.module for m in models if m.module), builtin)
