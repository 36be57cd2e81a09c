"""Claims on Jesper Brouer's part of the agenda (kernel memory optimizations): skb
heads come from a per-CPU NAPI skb cache that the slab fills and empties in bulk.

  - alloc: napi_build_skb() takes a head from the cache; an empty cache is refilled
    with kmem_cache_alloc_bulk() (6.12: NAPI_SKB_CACHE_BULK 16 heads; 7.3: 32);
  - free: napi_consume_skb() on tx completion puts the head back; a full cache is
    flushed with kmem_cache_free_bulk() (6.12: 32 of 64; 7.3: 32 of 128). From 7.x
    __alloc_skb() in process context also takes heads from the cache, so a sender
    reuses the heads its completions put back and the cache may never fill: then no
    head reaches the slab at all, which the claim accepts (never one by one).

Judged by effect on the cost guest (QEMU's TCG plugin counts the calls made inside
the driver's NAPI poll and their count argument `size`; 7.x's kmem_cache_alloc_bulk
returns a bool, 6.12's the count): per frame, the heads that came or went in bulk,
and how many a call. The talk gives no batch size; a bulk of at least 8 a call is the bound here
(both kernels' constants are 16 or more). The free side needs the stack's own skbs:
pktgen keeps a reference on its skbs, so igb transmits from a UDP socket."""

from __future__ import annotations

import math

from harness.measurement.cost import METRIC, WITNESS
from harness.measurement.udp_sink import describe

from .base import Check, ClaimResult
from .cost_claims import COST_REGIME, COST_SINK, RX_COST
from .lab import Lab
from .rules import fmt, per_packet, value, why_unmeasured
from .traffic_space import RX_SIZES, Sample, TrafficPoint, at, check_id, split_name

SOCKET_TX_COST = "socket-tx-cost"
ALLOC, FREE, FREE_ONE = "kmem_cache_alloc_bulk_noprof", "kmem_cache_free_bulk", "kmem_cache_free"
# An object from a kmem_cache one at a time (an skb head outside the NAPI cache, and small heads'
# data); kmalloc's own entry points are not probed.
ALLOC_ONE = ("kmem_cache_alloc_noprof", "kmem_cache_alloc_node_noprof")
MAX_SINGLE_FREES = 0.1  # slab objects freed one at a time per frame under the tx completion
# kmem_cache objects allocated one at a time per frame under the rx poll: with every head from
# the NAPI cache and the frames ending in a full socket, the stack allocates none per frame
# (measured 0.0005 on 6.12.95 and 7.3.4); an skb allocated singly (alloc_skb) is one or two.
MAX_SINGLE_ALLOCS = 0.1
MIN_BULK = 8  # heads a call: more than a few, whatever the kernel's constant
MIN_COVERED = 0.9  # of the frames' heads came (or went) in bulk


def probed(lab: Lab, experiment: str, kind: str, fn: str, role: str, driver: str) -> float | None:
    """A probed function's total (calls, returned, argument or instructions) under `role`:
    0 when the experiment ran and it was never called (a measured nothing); None when it
    did not run, or when the kernel has no such function to probe (its calls are NaN)."""
    metric = {"calls": f"calls/{WITNESS}", "returned": f"returned/{WITNESS}", "argument": f"argument/{WITNESS}",
              "instructions": METRIC}[kind] + f":{fn}:under:{role}"
    calls = value(lab, experiment, f"calls/{WITNESS}:{fn}:under:{role}", driver)
    if experiment not in lab.results or (calls is not None and math.isnan(calls)):
        return None
    return value(lab, experiment, metric, driver) or 0.0


def bulk_checks(lab: Lab, experiment: str, fn: str, kind: str, role: str, driver: str, words: str,
                tag: str) -> tuple[list[Check], str]:
    """Heads per frame that came or went in bulk, and heads per call."""
    why = why_unmeasured(lab, experiment)
    calls = probed(lab, experiment, "calls", fn, role, driver)
    heads = probed(lab, experiment, kind, fn, role, driver)
    insns = probed(lab, experiment, "instructions", fn, role, driver)
    n = lab.results[experiment].traffic.received if experiment in lab.results else 0
    per_frame = None if heads is None or not n else heads / n
    per_call = None if not calls or heads is None else heads / calls
    how = (f"QEMU TCG plugin (witness {WITNESS}): {fn} called inside {driver}'s {role.replace('_', ' ')} "
           f"region, its count argument (`size`); {COST_REGIME}")
    checks = [
        Check(check_id(f"heads-{tag}-in-bulk-per-frame", point_of(experiment)),
              f"skb heads {words} in bulk by {fn} per frame{at(point_of(experiment))}", per_frame, ">=", MIN_COVERED,
              how=how, unmeasured=why),
        Check(check_id(f"heads-per-bulk-{tag}", point_of(experiment)),
              f"skb heads per {fn} call{at(point_of(experiment))}", per_call, ">=", MIN_BULK, how=how,
              unmeasured=why if calls is None else f"{fn} was not called inside the region"),
    ]
    text = (f"{experiment}: {fmt(calls and calls / n if n else None, 4)} {fn} calls per frame, "
            f"{fmt(per_call, 1)} heads a call, {fmt(per_frame, 3)} heads per frame; "
            f"{fmt(insns / n if insns is not None and n else None, 1)} instructions per frame in it.")
    return checks, text


def point_of(experiment: str) -> TrafficPoint:
    return split_name(experiment)[1]


class SkbBulkAlloc:
    id, slide = "skb-bulk-alloc", "agenda"
    title = "skb heads on igb's rx path come from the NAPI skb cache, refilled with kmem_cache_alloc_bulk"
    region = (f"igb receiving from the e1000e at 60 and 1514 bytes (build_skb ring) {describe(COST_SINK)}; "
              f"{COST_REGIME}. Not sampled: "
              "legacy-rx (napi_alloc_skb) and XDP_PASS")
    samples = (Sample(RX_COST, RX_SIZES),)
    experiments = tuple(e for s in samples for e in s.experiments())

    def evaluate(self, lab: Lab) -> ClaimResult:
        checks, text = [], []
        for e in self.experiments:
            c, t = bulk_checks(lab, e, ALLOC, "argument", "rx", "igb", "allocated", "alloc")
            checks += [*c, single_allocs_check(lab, e)]
            text.append(t)
        return ClaimResult(self.id, self.title, self.slide, checks, text)


def single_allocs_check(lab: Lab, experiment: str) -> Check:
    """Heads in bulk per frame could still come with a second, single allocation per frame
    (an skb allocated and freed beside the one built): nothing on the rx path takes
    kmem_cache objects one at a time. A poll region never entered measured nothing."""
    calls = [probed(lab, experiment, "calls", fn, "rx", "igb") for fn in ALLOC_ONE]
    n = lab.results[experiment].traffic.received if experiment in lab.results else 0
    missing = [fn for fn, c in zip(ALLOC_ONE, calls, strict=True) if c is None]
    entered = value(lab, experiment, "entries:rx", "igb")
    per_frame = None if missing or not n or not entered else sum(c for c in calls if c is not None) / n
    return Check(check_id("objects-alloc-singly-per-frame", point_of(experiment)),
                 f"kmem_cache objects allocated one at a time ({' + '.join(ALLOC_ONE)}) per frame under igb's poll"
                 f"{at(point_of(experiment))}", per_frame, "<", MAX_SINGLE_ALLOCS,
                 how=f"QEMU TCG plugin (witness {WITNESS}): those functions called inside igb's NAPI poll region; "
                 f"{COST_REGIME}",
                 unmeasured=why_unmeasured(lab, experiment) if experiment not in lab.results
                 else f"{', '.join(missing)} not in this kernel's kallsyms: not counted" if missing
                 else "igb's poll region was never entered (its entry function not found or inlined)")


class SkbBulkFree:
    id, slide = "skb-bulk-free", "agenda"
    title = ("skbs igb has transmitted go back to the NAPI skb cache on tx completion, never one by one to the "
             "slab: it gets them back only in bulk (kmem_cache_free_bulk)")
    region = (f"igb transmitting 60-byte UDP datagrams from a socket to the e1000e; {COST_REGIME}. Not sampled: "
              "other sizes, TCP (fclones never enter the cache)")
    samples = (Sample(SOCKET_TX_COST),)
    experiments = tuple(e for s in samples for e in s.experiments())

    def evaluate(self, lab: Lab) -> ClaimResult:
        e, role = SOCKET_TX_COST, "tx_completion"
        bulk, text = bulk_checks(lab, e, FREE, "argument", role, "igb", "freed", "free")
        singly = probed(lab, e, "calls", FREE_ONE, role, "igb")
        n = lab.results[e].traffic.received if e in lab.results else 0
        checks = [Check("heads-freed-singly-per-frame", f"objects freed one at a time ({FREE_ONE}) per frame under "
                        "igb's tx completion", None if singly is None or not n else singly / n, "<", MAX_SINGLE_FREES,
                        how=f"QEMU TCG plugin (witness {WITNESS}): {FREE_ONE} called inside igb's NAPI poll (its tx "
                        f"completion); {COST_REGIME}", unmeasured=why_unmeasured(lab, e))]
        calls = probed(lab, e, "calls", FREE, role, "igb")
        if calls == 0 and checks[0].holds():
            # 7.x: the heads went back to the cache and were taken again by the sender's __alloc_skb.
            text += " No head reached the slab: the cache never filled (the sender's allocations reuse its heads)."
        else:
            checks += [c for c in bulk if c.id == "heads-per-bulk-free"]
        checks += [c for c in bulk if c.id == "heads-free-in-bulk-per-frame" and calls]
        sent = per_packet(lab, e, "counter:link.tx_packets", "igb")
        return ClaimResult(self.id, self.title, self.slide, checks,
                           [text, f"igb's tx packets per frame the e1000e received: {fmt(sent, 3)}."])

