"""`harness survey`: the talk's techniques measured on every NIC of the catalogue
side by side, on the real driver code of the kernel under test.

Each NIC under test receives from a peer NIC on the same private hub; every
count is attributed to its own driver's rx path (function_graph under its poll
function, DMA events of its device, page_pool tracepoints while only it
receives). Per NIC and technique the survey gives a number (per received frame
unless the technique says otherwise), how it was measured, or why it could not
be: a cell is never silently empty."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from harness.claims.lab import Lab
from harness.claims.rules import (
    BUILD_SKB,
    COPY_SKB_ALLOCS,
    DMA_ATTR_SKIP_CPU_SYNC,
    RX,
    attrs_by_direction,
    detail,
    fraction_with,
    per_packet,
    per_packet_sum,
    value,
    why_unmeasured,
)
from harness.errors import HarnessError, Unmeasurable
from harness.faults.experiment import exp_name as fault_exp_name
from harness.faults.experiment import fault_experiment
from harness.guest.vm import Guest
from harness.measurement import xdp
from harness.measurement.device_trace import DeviceTraceProbe
from harness.measurement.dma_probe import DmaProbe
from harness.measurement.measure import MEASURE_PKTGEN, Measurement, RunContext, measure_rx
from harness.measurement.probes import EventCountProbe, GraphProbe
from harness.measurement.traffic import PktgenConfig
from harness.nics import NicModel, hub_apart, nic

PAGE_POOL_EVENTS = ("page_pool:page_pool_state_hold", "page_pool:page_pool_state_release")
PAGE_REF_EVENTS = ("page_ref:page_ref_mod", "page_ref:page_ref_mod_and_test")
SURVEY_PKTGEN = MEASURE_PKTGEN
XDP_TX_PKTGEN = PktgenConfig(count=MEASURE_PKTGEN.count, rate_pps=2_500)
# Every DMA bounced through swiotlb: e1000 (copybreak: a sync and a copy per frame)
# fell behind at 1,250 frames/s with 2,000 frames; fewer frames, slower, one more retry.
SWIOTLB_PKTGEN = PktgenConfig(count=1_000, rate_pps=2_500)
XDP_PROGRAMS = ("xdp_drop", "xdp_pass", "xdp_tx")


@dataclass(frozen=True)
class Technique:
    id: str
    title: str
    unit: str  # "per frame", "bytes", "ratio", "fraction", "count", "mode"
    group: str  # the talk's technique it belongs to


# The memory a driver spends per received frame (the Mellanox part of the agenda: striding RQ,
# many frames in one large buffer, has no QEMU model; what it is about is measured instead):
# skb->truesize at the hand-off to GRO, the memory the frame is charged for, at both ends of
# the frame sizes; and the descriptors the device consumed per frame, rx and tx (a striding
# RQ takes less than one rx descriptor a frame, a multi-packet tx descriptor less than one
# tx descriptor), counted by QEMU itself where its model has a ring trace (ring_traced).
GRO_HANDOFF = "net:napi_gro_receive_entry"
MEMORY_SIZES = (60, 1514)
# The tx points: the smallest frame as pktgen sends it (no checksum), the largest with its UDP
# checksum left to the NIC (CHECKSUM_PARTIAL: Intel's drivers then write a context descriptor).
TX_POINTS = ((MEMORY_SIZES[0], False), (MEMORY_SIZES[-1], True))
MEMORY_TECHNIQUES = (
    *[Technique(f"rx-truesize-{size}", f"rx memory per {size}-byte frame (skb->truesize at the GRO hand-off)",
                "bytes", "memory per frame") for size in MEMORY_SIZES],
    Technique("rx-truesize-per-byte", f"rx memory per received byte at {MEMORY_SIZES[-1]} bytes", "ratio",
              "memory per frame"),
    *[Technique(f"rx-descriptors-{size}", f"rx descriptors the device consumed per {size}-byte frame (QEMU's trace)",
                "per frame", "memory per frame") for size in MEMORY_SIZES],
    *[Technique(f"tx-descriptors-{size}", f"tx descriptors per {size}-byte frame sent"
                + (", UDP checksum offloaded" if csum else "") + " (QEMU's trace)", "per frame", "memory per frame")
      for size, csum in TX_POINTS],
)
NO_RING_TRACE = "QEMU's {model} model traces neither its descriptor rings nor its register writes"
TECHNIQUES = (
    Technique("rx-maps", "rx DMA maps", "per frame", "page reuse"),
    Technique("rx-unmaps", "rx DMA unmaps", "per frame", "page reuse"),
    Technique("page-allocs", "page allocations under the poll function", "per frame", "page reuse"),
    Technique("skip-cpu-sync", "rx maps with DMA_ATTR_SKIP_CPU_SYNC", "fraction", "DMA attributes"),
    Technique("cpu-syncs", "syncs for the CPU (swiotlb=force)", "per frame", "partial syncs"),
    Technique("device-syncs", "syncs for the device (swiotlb=force)", "per frame", "partial syncs"),
    Technique("cpu-sync-vs-frame", "bytes synced for the CPU / bytes received", "ratio", "partial syncs"),
    Technique("device-sync-bytes", "largest sync for the device (the driver's buffer)", "bytes", "partial syncs"),
    Technique("build-skb", "skbs built around the rx buffer (build_skb)", "per frame", "build_skb"),
    Technique("copy-allocs", "skbs allocated to copy into", "per frame", "build_skb"),
    Technique("page-ref-incs", "page reference increments (page_ref_add/inc)", "per frame", "pagecnt_bias"),
    Technique("dma-barriers", "dma_rmb()/dma_wmb() calls on the rx/refill lines", "count", "barriers"),
    Technique("other-barriers", "other barrier calls (rmb/wmb/mb, smp_*, barrier()) on those lines", "count",
              "barriers"),
    Technique("x86-fences", "lfence/sfence/mfence from those lines (x86)", "count", "barriers"),
    Technique("arm64-not-osh", "arm64 barriers from those lines other than dmb osh*", "count", "barriers"),
    Technique("xdp-mode", "XDP attach mode (native = driver mode)", "mode", "XDP"),
    Technique("xdp-drop-skbs", "skbs built under XDP_DROP", "per frame", "XDP"),
    Technique("xdp-drop-allocs", "page allocations under XDP_DROP", "per frame", "XDP"),
    Technique("xdp-drop-maps", "rx DMA maps under XDP_DROP", "per frame", "XDP"),
    Technique("xdp-pass-skbs", "skbs built under XDP_PASS", "per frame", "XDP"),
    Technique("xdp-tx-back", "frames sent back under XDP_TX", "per frame", "XDP"),
    Technique("xdp-tx-allocs", "page allocations under XDP_TX", "per frame", "XDP"),
    Technique("pp-slow-allocs", "page_pool pages taken from the page allocator (slow path)", "per frame",
              "page_pool"),
    Technique("pp-slow-allocs-xdp", "the same with an XDP program attached (XDP_PASS)", "per frame", "page_pool"),
    Technique("pp-releases-xdp", "page_pool pages given back to the page allocator, XDP_PASS", "per frame",
              "page_pool"),
    *MEMORY_TECHNIQUES,
)
# `survey --debug`: the rx-alloc-failure experiment (harness faults) as one more row.
FAULT_TECHNIQUES = (
    Technique("rx-alloc-failure", "rx allocation failures injected: counted, recovered, nothing leaked", "verdict",
              "debug kernel"),
)
# `survey --cost`: instructions per frame on each driver's rx path (QEMU's TCG plugin, the cost guest).
COST_FAMILIES = ("driver", "page allocator", "slab", "dma api", "skb", "stack", "kernel")
COST_TECHNIQUES = (
    Technique("cost-rx", "rx instructions of a NAPI poll that received one frame and completed", "instructions",
              "cost"),
    Technique("cost-rx-all", "rx instructions per frame over every poll (batched and empty ones too)",
              "instructions", "cost"),
    Technique("cost-empty-polls", "NAPI polls that found nothing", "per frame", "cost"),
    *[Technique(f"cost-{f.replace(' ', '-')}", f"rx instructions per frame in {f} functions", "instructions", "cost")
      for f in COST_FAMILIES],
)


@dataclass
class Cell:
    value: float | str | None
    how: str = ""
    why_not: str = ""  # set when value is None

    def to_json(self) -> dict:
        v = self.value
        if isinstance(v, float) and math.isnan(v):
            v = None
        return {"value": v, "how": self.how, "why_not": self.why_not if v is None else ""}


def peer_of(model: str, models: tuple[str, ...]) -> str:
    """The NIC that sends to `model`: the e1000e (a driver with no XDP and no page
    pool of its own, so it adds nothing to the receiver's counts), or for the e1000e
    itself the first other NIC."""
    if model != "e1000e" and "e1000e" in models:
        return "e1000e"
    others = [m for m in models if m != model]
    if not others:
        raise HarnessError(f"the survey needs a peer NIC to send to {model}: give at least two --nics")
    return others[0]


def guest_hub(model: str, models: tuple[str, ...]) -> tuple[str, ...]:
    """The NICs of the guest that measures `model`: the whole hub, or only the NIC and
    its peer where the management NIC would share its driver (nics.hub_apart): its ssh
    would be counted as the NIC's frames (a five-NIC survey counted 0.35 skbs a frame
    under virtio-net's XDP_DROP, 0 with the management NIC apart)."""
    return hub_apart(models, model, peer_of(model, models))


def apart_last(rows: tuple[str, ...], models: tuple[str, ...]) -> list[str]:
    """`rows` (NICs of the hub `models`) with those that need a guest of their own
    last: the others share one guest, booted once."""
    return sorted(rows, key=lambda m: guest_hub(m, models) != models)


# ---- experiments -------------------------------------------------------------
def exp_name(kind: str, model: str) -> str:
    return f"{kind}:{model}"


def probes_for(models: tuple[str, ...], events: tuple[str, ...] = ()) -> list:
    roots = {p: nic(m).driver for m in models for p in nic(m).polls}
    out: list = [GraphProbe(roots=roots), DmaProbe(drivers=tuple(nic(m).driver for m in models))]
    if events:
        out.append(EventCountProbe(list(events)))
    return out


def ring_setup(model: str) -> Callable[[Guest], None]:
    """The catalogue's rx ring size for the NIC, set once per guest: an experiment's
    `setup` (Lab.measure), so the resized ring's fill happens before the experiment's
    watch (e1000's 4,096 buffers are ~1,900 pages a leak check would count as grown)."""
    def setup(g: Guest) -> None:
        n = nic(model)
        if n.rx_ring and g.facts.get(f"rx ring:{model}") != n.rx_ring:
            g.run(["ethtool", "-G", g.nic(model), "rx", str(n.rx_ring)])
            g.facts[f"rx ring:{model}"] = n.rx_ring
    return setup


def measure_nic(lab: Lab, name: str, model: str, models: tuple[str, ...], dma_mode: str,
                run: Callable[[Guest], Measurement], cost: bool = False) -> None:
    """Lab.measure for an experiment on `model` of the hub `models`: its ring set up
    first (ring_setup), on the guest guest_hub gives it (the experiment's probes take
    that guest's NICs, g.options.nics)."""
    lab.measure(name, "stock", dma_mode, run, cost=cost, setup=ring_setup(model), nics=guest_hub(model, models))


def rx_experiment(lab: Lab, model: str, models: tuple[str, ...]) -> None:
    def run(g: Guest) -> Measurement:
        ctx = RunContext(lab.run_id, g.kernel.key, "stock", "direct", "")
        events = PAGE_POOL_EVENTS + (PAGE_REF_EVENTS if _has_page_ref(g) else ())
        return measure_rx(g, ctx, probes_for(g.options.nics, events), src=peer_of(model, models), dst=model,
                          pktgen=SURVEY_PKTGEN, max_loss=0.01)
    measure_nic(lab, exp_name("rx", model), model, models, "direct", run)


def ring_traced(model: str) -> bool:
    """QEMU reports this model's descriptor consumption (its tail writes, or its virtqueue chains)."""
    return nic(model).device_trace is not None or nic(model).virtqueue_trace


def ring_probes(*models: str) -> list:
    """QEMU's trace of the models that have one (a virtio NIC's only if it is the one asked first)."""
    traced = tuple(m for i, m in enumerate(models) if nic(m).device_trace is not None
                   or (nic(m).virtqueue_trace and i == 0))
    return [DeviceTraceProbe(traced)] if traced else []


def memory_experiment(lab: Lab, model: str, models: tuple[str, ...], size: int) -> None:
    """skb->truesize of the NIC's frames at the GRO hand-off (a hist trigger keyed by device),
    and the rx descriptors its QEMU model consumed."""
    def run(g: Guest) -> Measurement:
        ctx = RunContext(lab.run_id, g.kernel.key, "stock", "direct", "")
        peer = peer_of(model, models)
        m = measure_rx(g, ctx, [EventCountProbe([GRO_HANDOFF], keys="name,truesize"), *ring_probes(model, peer)],
                       src=peer, dst=model, pktgen=replace(SURVEY_PKTGEN, pkt_size=size), max_loss=0.01)
        rows = [r for r in detail_rows(m, f"event:{GRO_HANDOFF}") if r.get("name") == g.nic(model)]
        frames, total = sum(r["count"] for r in rows), sum(int(r["truesize"]) * r["count"] for r in rows)
        how = f"hist trigger on {GRO_HANDOFF} keyed by device and truesize: the sum of skb->truesize"
        m.add("rx_truesize_bytes", total, nic(model).driver, how, {"by_truesize": {r["truesize"]: r["count"]
                                                                                 for r in rows}})
        m.add("rx_truesize_frames", frames, nic(model).driver, how.replace("the sum of skb->truesize", "frames"))
        return m
    measure_nic(lab, exp_name(f"memory-{size}", model), model, models, "direct", run)


def tx_experiment(lab: Lab, model: str, models: tuple[str, ...], size: int, csum: bool) -> None:
    """The NIC sending to its peer: the tx descriptors its QEMU model took per frame."""
    def run(g: Guest) -> Measurement:
        ctx = RunContext(lab.run_id, g.kernel.key, "stock", "direct", "")
        peer = peer_of(model, models)
        return measure_rx(g, ctx, ring_probes(model, peer), src=model, dst=peer,
                          pktgen=replace(SURVEY_PKTGEN, pkt_size=size, udp_csum=csum), max_loss=0.01)
    measure_nic(lab, exp_name(f"tx-{size}", model), model, models, "direct", run)


def detail_rows(m: Measurement, metric: str) -> list[dict]:
    rows = m.rows(metric, "")
    return json.loads(rows.iloc[0].detail).get("by", []) if not rows.empty and rows.iloc[0].detail else []


def swiotlb_experiment(lab: Lab, model: str, models: tuple[str, ...]) -> None:
    def run(g: Guest) -> Measurement:
        ctx = RunContext(lab.run_id, g.kernel.key, "stock", "swiotlb", "swiotlb=force")
        return measure_rx(g, ctx, [DmaProbe(drivers=tuple(nic(m).driver for m in g.options.nics))],
                          src=peer_of(model, models), dst=model, pktgen=SWIOTLB_PKTGEN, max_loss=0.01, retries=3)
    measure_nic(lab, exp_name("swiotlb", model), model, models, "swiotlb", run)


def xdp_experiment(lab: Lab, model: str, models: tuple[str, ...], program: str) -> None:
    def run(g: Guest) -> Measurement:
        ifname = g.nic(model)
        objs = xdp.build_programs(lab.cache)
        mode = "native" if _native_attaches(g, ifname, objs[program]) else "generic"
        att = xdp.attach(g, ifname, objs[program], mode)
        try:
            ctx = RunContext(lab.run_id, g.kernel.key, "stock", "direct", "")
            m = measure_rx(g, ctx, probes_for(g.options.nics, PAGE_POOL_EVENTS), src=peer_of(model, models),
                           dst=model,
                           pktgen=XDP_TX_PKTGEN if program == "xdp_tx" else SURVEY_PKTGEN, max_loss=0.01)
            m.add("xdp_attach_mode", 1.0 if att.mode == "native" else 0.0, nic(model).driver,
                  "ip link set xdpdrv (native) or xdpgeneric; the mode the kernel reports", {"mode": att.mode})
            return m
        finally:
            xdp.detach(g, ifname)
    measure_nic(lab, exp_name(program, model), model, models, "direct", run)


def _native_attaches(g: Guest, ifname: str, obj) -> bool:
    """Probed, not tabled: does the driver take a program in driver mode?"""
    key = f"xdp native:{ifname}"
    if key not in g.facts:
        try:
            xdp.attach(g, ifname, obj, "native")
            xdp.detach(g, ifname)
            g.facts[key] = True
        except HarnessError:
            g.facts[key] = False
    return bool(g.facts[key])


def _has_page_ref(g: Guest) -> bool:
    return g.kernel.config_value("CONFIG_DEBUG_PAGE_REF") == "y"


def cost_experiment(lab: Lab, model: str, models: tuple[str, ...]) -> None:
    """The NIC's rx path in instructions (QEMU's TCG plugin): the cost experiment of the
    claims (claims.experiments.cost: the one regime of every cost figure, its pace, sink
    and interrupts' CPUs) with this NIC receiving from its peer."""
    from harness.claims.experiments import cost

    exp = cost(exp_name("cost", model), sender=peer_of(model, models), receiver=model)

    def run(g: Guest) -> Measurement:
        return exp.run(g, RunContext.for_guest(g, lab.run_id), lab)
    measure_nic(lab, exp.name, model, models, "direct", run, cost=True)


def run_survey(lab: Lab, models: tuple[str, ...], cost: bool = False,
               measured: tuple[str, ...] | None = None) -> None:
    """Every experiment of the `measured` NICs (default: all of `models`, the hub),
    grouped by guest (direct-DMA guest first, then swiotlb, then the cost guest when
    asked for)."""
    rows = apart_last(measured or models, models)
    try:
        for model in rows:
            rx_experiment(lab, model, models)
            for program in XDP_PROGRAMS:
                xdp_experiment(lab, model, models, program)
            for size in MEMORY_SIZES:
                memory_experiment(lab, model, models, size)
            for size, csum in TX_POINTS if ring_traced(model) else ():
                tx_experiment(lab, model, models, size, csum)
        for model in rows:
            swiotlb_experiment(lab, model, models)
        for model in rows if lab.kernel("stock").debug else ():
            fault_experiment(lab, model, peer_of(model, models))
        for model in rows if cost else ():
            cost_experiment(lab, model, models)
    finally:
        lab.close()


def memory_cells(lab: Lab, model: str) -> dict[str, Cell]:
    drv = nic(model).driver
    how = f"skb->truesize at {GRO_HANDOFF} (hist trigger keyed by device), per frame that reached it"
    cells = {}
    for size in MEMORY_SIZES:
        exp = exp_name(f"memory-{size}", model)
        total, frames = value(lab, exp, "rx_truesize_bytes", drv), value(lab, exp, "rx_truesize_frames", drv)
        cells[f"rx-truesize-{size}"] = Cell(total / frames if total is not None and frames else None, how,
                                            why_unmeasured(lab, exp) if not frames else "")
        if not frames and exp in lab.results:
            cells[f"rx-truesize-{size}"].why_not = f"no frame of {model} reached {GRO_HANDOFF}"
    last = exp_name(f"memory-{MEMORY_SIZES[-1]}", model)
    per_frame = cells[f"rx-truesize-{MEMORY_SIZES[-1]}"].value
    received = per_packet(lab, last, "counter:link.rx_bytes", drv)
    cells["rx-truesize-per-byte"] = Cell(_ratio(per_frame if isinstance(per_frame, float) else None, received),
                                         "truesize per frame / bytes received per frame (ip -s link)",
                                         cells[f"rx-truesize-{MEMORY_SIZES[-1]}"].why_not)
    cells.update(descriptor_cells(lab, model))
    return cells


def descriptor_cells(lab: Lab, model: str) -> dict[str, Cell]:
    """Descriptors the NIC's QEMU model consumed per frame: rx per frame received, tx per frame sent."""
    drv, cells = nic(model).driver, {}
    how = ("QEMU trace events around the traffic: "
           + ("the RDT/TDT advances summed (descriptors handed to the device; the window's first write left out)"
              if nic(model).device_trace is not None else
              "descriptors of the virtqueue chains taken, device-writable only (rx) or device-readable only (tx)"))
    for ring, kind, sizes in (("rx", "memory", MEMORY_SIZES), ("tx", "tx", tuple(s for s, _ in TX_POINTS))):
        for size in sizes:
            exp, key = exp_name(f"{kind}-{size}", model), f"{ring}-descriptors-{size}"
            if not ring_traced(model):
                cells[key] = Cell(None, "", NO_RING_TRACE.format(model=model))
                continue
            total, m = value(lab, exp, f"device:{ring}_descriptors", drv), lab.results.get(exp)
            frames = (m.traffic.received if ring == "rx" else m.traffic.result.sent) if m is not None else 0
            cells[key] = Cell(total / frames if total is not None and frames else None,
                              f"{how}, per frame {'received' if ring == 'rx' else 'sent'}",
                              why_unmeasured(lab, exp) if total is None or not frames else "")
    return cells


def cost_cells(lab: Lab, model: str) -> dict[str, Cell]:
    from harness.claims.cost_claims import idle_per_frame, rx_per_frame
    from harness.measurement.cost import METRIC

    drv, exp = nic(model).driver, exp_name("cost", model)
    how = ("QEMU TCG plugin (witness tcg-plugin), the cost guest: guest instructions executed in "
           f"{'/'.join(nic(model).polls)}, entry to the caller's resume, nested tx clean and interrupts apart")
    why = why_unmeasured(lab, exp)
    one = rx_per_frame(lab, exp, drv)
    cells = {
        "cost-rx": Cell(one, how + "; the polls that returned 1 (one frame) without scheduling their NAPI "
                        "again, per such poll",
                        "" if one is not None else (why if exp not in lab.results else
                                                    "too few frames had a completed poll of their own")),
        "cost-rx-all": Cell(per_packet(lab, exp, f"{METRIC}:rx", drv), how + ", per frame received", why),
        "cost-empty-polls": Cell(idle_per_frame(lab, exp, drv)[0], how + "; polls that returned 0, per frame", why),
    }
    for fam in COST_FAMILIES:
        family = f"driver {model}" if fam == "driver" else fam
        v = per_packet(lab, exp, f"{METRIC}:rx:family:{family}", drv)
        # A family that never ran is a measured 0 once the experiment ran.
        cells[f"cost-{fam.replace(' ', '-')}"] = Cell(v if v is not None or exp not in lab.results else 0.0,
                                                      how + f", in functions of the family {family!r} (by name or "
                                                      "module), per frame received", why)
    return cells


# ---- cells -------------------------------------------------------------------
def cells_for(lab: Lab, model: str, barriers: dict[str, Cell]) -> dict[str, Cell]:
    """The survey row of one NIC from what the lab measured."""
    n = nic(model)
    drv = n.driver
    rx, sw = exp_name("rx", model), exp_name("swiotlb", model)
    graph = f"function_graph under {', '.join(n.polls)}"
    dma = f"dma:* events of {n.pci_address} ({drv})"

    def cell(v: float | None, how: str, exp: str, missing: str = "") -> Cell:
        return Cell(v, how, "" if v is not None else (missing or why_unmeasured(lab, exp)))

    maps, map_exps = attrs_by_direction(lab, (rx,), "dma_map_page_attrs", drv, RX)
    out = {
        "rx-maps": cell(_rx_per_frame(lab, rx, "dma_map_page_attrs", drv), dma + ", from_device", rx),
        "rx-unmaps": cell(_rx_per_frame(lab, rx, "dma_unmap_page_attrs", drv), dma + ", from_device", rx),
        "page-allocs": cell(per_packet(lab, rx, "calls:__alloc_pages_noprof", drv), graph, rx),
        "skip-cpu-sync": cell(fraction_with(maps, DMA_ATTR_SKIP_CPU_SYNC) if map_exps else None,
                              dma + ": attrs of the rx maps", rx,
                              "" if not map_exps else "the driver made no rx map while measured (nothing to judge)"),
        "cpu-syncs": cell(per_packet(lab, sw, "__dma_sync_single_for_cpu", drv), dma + ", swiotlb=force guest", sw),
        "device-syncs": cell(per_packet(lab, sw, "__dma_sync_single_for_device", drv), dma + ", swiotlb=force", sw),
        "cpu-sync-vs-frame": cell(_ratio(per_packet(lab, sw, "__dma_sync_single_for_cpu:bytes", drv),
                                         per_packet(lab, sw, "counter:link.rx_bytes", drv)),
                                  "CPU sync bytes per frame / received bytes per frame (ip -s link)", sw),
        "device-sync-bytes": cell(_largest(lab, sw, "__dma_sync_single_for_device", drv), dma + ", swiotlb", sw,
                                  "" if sw not in lab.results else "the driver made no sync for the device"),
        "build-skb": cell(per_packet_sum(lab, rx, BUILD_SKB, drv), graph, rx),
        "copy-allocs": cell(per_packet_sum(lab, rx, COPY_SKB_ALLOCS, drv), graph, rx),
        "page-ref-incs": cell(per_packet(lab, rx, "calls:__page_ref_mod", drv),
                              graph + "; page_ref tracepoints on (CONFIG_DEBUG_PAGE_REF)", rx),
        "xdp-mode": _xdp_mode(lab, model),
        "xdp-drop-skbs": cell(per_packet_sum(lab, exp_name("xdp_drop", model), BUILD_SKB + COPY_SKB_ALLOCS, drv),
                              graph, exp_name("xdp_drop", model)),
        "xdp-drop-allocs": cell(per_packet(lab, exp_name("xdp_drop", model), "calls:__alloc_pages_noprof", drv),
                                graph, exp_name("xdp_drop", model)),
        "xdp-drop-maps": cell(_rx_per_frame(lab, exp_name("xdp_drop", model), "dma_map_page_attrs", drv), dma,
                              exp_name("xdp_drop", model)),
        "xdp-pass-skbs": cell(per_packet_sum(lab, exp_name("xdp_pass", model), BUILD_SKB + COPY_SKB_ALLOCS, drv),
                              graph, exp_name("xdp_pass", model)),
        "xdp-tx-back": cell(per_packet(lab, exp_name("xdp_tx", model), "counter:link.rx_packets",
                                       nic(peer_of(model, lab.nics)).driver),
                            "the peer's rx_packets delta (ip -s link)", exp_name("xdp_tx", model)),
        "xdp-tx-allocs": cell(per_packet(lab, exp_name("xdp_tx", model), "calls:__alloc_pages_noprof", drv),
                              graph, exp_name("xdp_tx", model)),
        "pp-slow-allocs": _events(lab, rx, PAGE_POOL_EVENTS[0]),
        "pp-slow-allocs-xdp": _events(lab, exp_name("xdp_pass", model), PAGE_POOL_EVENTS[0]),
        "pp-releases-xdp": _events(lab, exp_name("xdp_pass", model), PAGE_POOL_EVENTS[1]),
    }
    out.update(barriers)
    out.update(memory_cells(lab, model))
    if exp_name("cost", model) in lab.results or exp_name("cost", model) in lab.failures:
        out.update(cost_cells(lab, model))
    if fault_exp_name(model) in lab.results or fault_exp_name(model) in lab.failures:
        out["rx-alloc-failure"] = fault_cell(lab, model)
    return out


def fault_cell(lab: Lab, model: str) -> Cell:
    from harness.faults.run import rows_of

    (row,) = rows_of(lab, (model,))
    how = "harness faults' experiment on the debug kernel (faults.json has the figures)"
    if row.verdict == "unmeasured":
        return Cell(None, how, "; ".join(row.reasons))
    return Cell(row.verdict + (f": {'; '.join(row.reasons)}" if row.reasons else ""), how)


def _rx_per_frame(lab: Lab, experiment: str, func: str, driver: str) -> float | None:
    """Calls in the rx direction (from_device) per frame: a driver's tx maps are not its rx path."""
    by, seen = attrs_by_direction(lab, (experiment,), func, driver, RX)
    m = lab.results.get(experiment)
    if not seen or m is None or not m.traffic.received:
        return None
    return sum(by.values()) / m.traffic.received


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def _largest(lab: Lab, experiment: str, func: str, driver: str) -> float | None:
    rows = detail(lab, experiment, func, driver).get("by_dir_len", [])
    return float(max(r["len"] for r in rows)) if rows else None


def _events(lab: Lab, experiment: str, event: str) -> Cell:
    v = per_packet(lab, experiment, f"event:{event}", "")
    how = (f"tracepoint {event} (hist trigger; only this NIC receives during the experiment, so its events are "
           "this driver's pool): per frame")
    if v is None:
        return Cell(None, how, why_unmeasured(lab, experiment))
    return Cell(v, how)


def _xdp_mode(lab: Lab, model: str) -> Cell:
    exp = exp_name("xdp_drop", model)
    d = detail(lab, exp, "xdp_attach_mode", nic(model).driver)
    if not d:
        return Cell(None, "", why_unmeasured(lab, exp))
    return Cell(d["mode"], "ip link set xdpdrv obj ...: native accepted, else xdpgeneric (probed, not tabled)")


@dataclass
class SurveyResult:
    kernel: dict
    nics: tuple[str, ...]
    cells: dict[str, dict[str, Cell]] = field(default_factory=dict)  # model -> technique -> cell
    peers: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)  # failed experiments' headlines (their cells say the same)
    timings: dict = field(default_factory=dict)  # {"experiments": {name: seconds}}: what plans balance by

    @property
    def techniques(self) -> tuple[Technique, ...]:
        """The rows: every technique, and the cost rows when the survey measured them."""
        def used(techniques: tuple[Technique, ...]) -> tuple[Technique, ...]:
            return techniques if any(t.id in cells for cells in self.cells.values() for t in techniques) else ()

        return TECHNIQUES + used(COST_TECHNIQUES) + used(FAULT_TECHNIQUES)

    def to_json(self) -> dict:
        return {"kernel": self.kernel, "nics": list(self.nics), "peers": self.peers,
                "techniques": [t.__dict__ for t in self.techniques],
                "drivers": {m: {"driver": nic(m).driver, "qemu_device": nic(m).qemu_device, "title": nic(m).title,
                                "cells": {t: c.to_json() for t, c in cells.items()}}
                            for m, cells in self.cells.items()},
                "errors": self.errors, "timings": self.timings}

    def rows(self) -> list[dict]:
        return [{"nic": m, "driver": nic(m).driver, "technique": t, **c.to_json()}
                for m, cells in self.cells.items() for t, c in cells.items()]

    @classmethod
    def from_json(cls, doc: dict) -> SurveyResult:
        """A survey.json read back (harness merge puts per-NIC shards together)."""
        return cls(doc["kernel"], tuple(doc["nics"]),
                   {m: {t: Cell(c["value"], c["how"], c["why_not"]) for t, c in d["cells"].items()}
                    for m, d in doc["drivers"].items()},
                   dict(doc.get("peers", {})), list(doc.get("errors", [])), dict(doc.get("timings", {})))


def json_text(result: SurveyResult) -> str:
    return json.dumps(result.to_json(), indent=1)


__all__ = [
    "TECHNIQUES",
    "Cell",
    "NicModel",
    "SurveyResult",
    "Unmeasurable",
    "cells_for",
    "peer_of",
    "run_survey",
    "value",
]
