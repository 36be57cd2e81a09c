"""Claims on igb's page-based receive path (slides 6, 7, 10): build_skb on
pages, page reuse, bulk page refcounts, build_skb vs the legacy copy path.
Each explanation says what the code did in this run, whichever way the checks went."""

from __future__ import annotations

from harness.nics import nic

from .base import Check, ClaimResult
from .lab import Lab
from .rules import (
    BUILD_SKB,
    COPY_SKB_ALLOCS,
    detail,
    fmt,
    per_packet,
    per_packet_by_caller,
    per_packet_sum,
    why_unmeasured,
)

GRAPH = "function_graph under igb_poll, calls per received frame"
ALLOC = "calls:__alloc_pages_noprof"  # every page allocation (probes.SUCCESSORS)
REFILL = nic("igb").refill
# igb rx buffers are half pages (PAGE_SIZE 4096 < 8192: igb_rx_frame_truesize() =
# igb_rx_pg_size() / 2): a page whose frames the stack holds serves two frames.
HALVES_PER_PAGE = 2
DMA = "dma:dma_map_page events keyed by device (igb's PCI address), calls per received frame"


def holds(check: Check) -> bool:
    return check.holds() is True


class PageBasedRx:
    id, slide = "page-based-rx", "6"
    title = "igb receives into pages and wraps them with build_skb, without copying the payload"
    experiments = ("rx",)

    def evaluate(self, lab: Lab) -> ClaimResult:
        build = per_packet_sum(lab, "rx", BUILD_SKB, "igb")
        copies = per_packet_sum(lab, "rx", COPY_SKB_ALLOCS, "igb")
        why = why_unmeasured(lab, "rx")
        checks = [
            Check("build-skb-per-frame", "build_skb (napi_build_skb + build_skb) per frame under igb_poll", build,
                  "~", 1.0, rel_tol=0.02, how=GRAPH, unmeasured=why),
            Check("copy-allocs-per-frame", "copying skb allocations (napi_alloc_skb, __netdev_alloc_skb) per frame "
                  "under igb_poll", copies, "<", 0.02, how=GRAPH, unmeasured=why),
        ]
        if all(holds(c) for c in checks):
            text = (f"For each received frame igb called (napi_)build_skb {fmt(build)} times, an skb built around "
                    f"the rx page, and allocated {fmt(copies)} separate skbs to copy into.")
        else:
            text = (f"igb called build_skb {fmt(build)} times and allocated {fmt(copies)} skbs to copy into per "
                    "received frame: it does not (only) wrap its rx pages, it copies frames into new buffers.")
        return ClaimResult(self.id, self.title, self.slide, checks, [text])


class PageReuse:
    id, slide = "page-reuse", "7"
    title = "in steady state igb reuses its rx pages: ~0 page allocations and DMA maps per frame"
    experiments = ("rx", "rx-held", "rx-control", "rx-iommu", "rx-no-reuse")

    def evaluate(self, lab: Lab) -> ClaimResult:
        maps = per_packet(lab, "rx", "dma_map_page_attrs", "igb")
        # igb's rx pages come from igb_alloc_mapped_page(), inlined into the refill; other
        # allocations under igb_poll are the stack's (slab refills under napi_build_skb,
        # DMA-API debug entries under dma_map_page_attrs), listed in the text.
        allocs = per_packet_by_caller(lab, "rx", ALLOC, "igb", (REFILL,))
        all_allocs = per_packet(lab, "rx", ALLOC, "igb")
        alloc_callers = detail(lab, "rx", ALLOC, "igb").get("by_caller", {})
        held_maps = per_packet(lab, "rx-held", "dma_map_page_attrs", "igb")
        nr_maps = per_packet(lab, "rx-no-reuse", "dma_map_page_attrs", "igb")
        ctl_maps = per_packet(lab, "rx-control", "dma_map_page_attrs", "e1000e")
        iommu_maps = per_packet(lab, "rx-iommu", "dma_map_page_attrs", "igb")
        checks = [
            Check("igb-rx-maps-per-frame", "igb rx DMA maps per frame (stock)", maps, "<", 0.05, how=DMA,
                  unmeasured=why_unmeasured(lab, "rx")),
            Check("igb-page-allocs-per-frame", f"rx-buffer page allocations per frame by {REFILL}() (stock)", allocs,
                  "<", 0.05, how=GRAPH + f"; calls whose innermost traced caller is {REFILL}",
                  unmeasured=why_unmeasured(lab, "rx")),
            Check("held-skbs-maps-per-frame", "igb rx DMA maps per frame (stock) when the receiver holds every skb",
                  held_maps, "~", 1 / HALVES_PER_PAGE, rel_tol=0.1,
                  how=DMA + "; a UDP socket that is never read holds each frame's page",
                  unmeasured=why_unmeasured(lab, "rx-held")),
            Check("no-reuse-maps-per-frame", "igb rx DMA maps per frame, kernel patched so igb_can_reuse_rx_page() "
                  "is false", nr_maps, ">", 0.9, how=DMA, unmeasured=why_unmeasured(lab, "rx-no-reuse")),
            Check("e1000e-rx-maps-per-frame", "e1000e rx DMA maps per frame (control NIC, receiving)", ctl_maps,
                  ">", 0.9, how="dma:dma_map_page events keyed by device (the e1000e's PCI address)",
                  unmeasured=why_unmeasured(lab, "rx-control")),
            Check("iommu-maps-per-frame", "igb rx DMA maps per frame behind the virtual IOMMU (stock)", iommu_maps,
                  "<", 0.05, how=DMA + "; QEMU intel-iommu, intel_iommu=on iommu=nopt, igb in an iommu_group",
                  unmeasured=why_unmeasured(lab, "rx-iommu")),
        ]
        stock_ok = holds(checks[0]) and holds(checks[1])
        text = [
            (f"Stock igb: {fmt(maps, 4)} DMA maps and {fmt(allocs, 4)} page allocations per frame: its rx pages go "
             "back into the ring instead of being replaced." if stock_ok else
             f"Stock igb: {fmt(maps, 4)} DMA maps and {fmt(allocs, 4)} page allocations per frame: it replaces "
             "its rx pages instead of reusing them."),
            f"All page allocations under igb_poll: {fmt(all_allocs, 4)} per frame, by innermost traced caller: "
            + (", ".join(f"{f} {c}" for f, c in sorted(alloc_callers.items(), key=lambda x: -x[1])) or "none")
            + f" (only {REFILL}'s are igb's rx pages; napi_build_skb's are slab refills for skb heads).",
            f"With a receiver that holds every skb, stock igb maps {fmt(held_maps, 4)} new pages per frame: a page "
            "still serves its second half (one frame held leaves page_count - pagecnt_bias at 1), then, with both "
            "halves held, igb_can_reuse_rx_page() gives it up: reuse happens only once the stack lets go.",
            (f"The same igb with page reuse patched out maps {fmt(nr_maps, 4)} fresh pages per frame: the stock "
             "numbers are reuse, not a blind probe." if nr_maps is not None else
             f"The igb with page reuse patched out was not measured ({why_unmeasured(lab, 'rx-no-reuse')})."),
            f"The e1000e control maps {fmt(ctl_maps, 4)} buffers per received frame: a driver without page "
            "reuse pays one map per frame.",
            f"Behind QEMU's virtual IOMMU, where a map costs an IOVA and an IOTLB entry, stock igb maps "
            f"{fmt(iommu_maps, 4)} pages per frame"
            + (": reuse keeps the IOMMU out of the per-frame path." if holds(checks[5]) else "."),
        ]
        return ClaimResult(self.id, self.title, self.slide, checks, text)


class PagecntBias:
    id, slide = "pagecnt-bias", "7"
    title = "igb takes page references in bulk (page_ref_add + pagecnt_bias), not one per frame"
    experiments = ("rx-page-refs",)

    def evaluate(self, lab: Lab) -> ClaimResult:
        gets = per_packet(lab, "rx-page-refs", "calls:__page_ref_mod", "igb")
        puts = per_packet(lab, "rx-page-refs", "calls:__page_ref_mod_and_test", "igb")
        how = ("CONFIG_DEBUG_PAGE_REF kernel, page_ref_mod tracepoints active; function_graph counts "
               "__page_ref_mod (page_ref_add/inc) and __page_ref_mod_and_test (put) under igb_poll")
        why = why_unmeasured(lab, "rx-page-refs")
        checks = [
            Check("ref-increments-per-frame", "page reference increments (__page_ref_mod) per frame under igb_poll",
                  gets, "<", 0.05, how=how, unmeasured=why),
            Check("ref-drops-per-frame", "page reference drops (__page_ref_mod_and_test) per frame under igb_poll",
                  puts, ">", 0.5, how=how, unmeasured=why),
        ]
        if checks[1].holds() is False:
            text = (f"Under igb_poll page references were dropped only {fmt(puts)} times per frame: the probe does "
                    "not see the per-frame puts, so the count of increments says nothing.")
        elif holds(checks[0]):
            text = (f"Under igb_poll each frame's page reference is dropped {fmt(puts)} times per frame when the "
                    f"stack frees its skb, while igb takes only {fmt(gets, 4)} new references per frame: the "
                    "pagecnt_bias covers the rest, refilled in bulk with page_ref_add.")
        else:
            text = (f"igb takes {fmt(gets, 4)} page references per frame (__page_ref_mod, i.e. page_ref_inc/add "
                    f"per frame) against {fmt(puts)} drops: it pays an atomic refcount operation per frame instead "
                    "of spending its pagecnt_bias.")
        return ClaimResult(self.id, self.title, self.slide, checks, [text])


class BuildSkbVsCopy:
    id, slide = "build-skb-vs-copy", "10"
    title = "build_skb avoids the header copy of the legacy path (igb priv-flag legacy-rx)"
    experiments = ("rx", "legacy-rx")

    def evaluate(self, lab: Lab) -> ClaimResult:
        build = per_packet_sum(lab, "rx", BUILD_SKB, "igb")
        copy_default = per_packet_sum(lab, "rx", COPY_SKB_ALLOCS, "igb")
        legacy_build = per_packet_sum(lab, "legacy-rx", BUILD_SKB, "igb")
        legacy_copy = per_packet_sum(lab, "legacy-rx", COPY_SKB_ALLOCS, "igb")
        why, why_legacy = why_unmeasured(lab, "rx"), why_unmeasured(lab, "legacy-rx")
        checks = [
            Check("default-build-skb", "build_skb per frame (default)", build, "~", 1.0, rel_tol=0.02, how=GRAPH,
                  unmeasured=why),
            Check("default-copy-allocs", "copying skb allocations per frame (default)", copy_default, "<", 0.02,
                  how=GRAPH, unmeasured=why),
            Check("legacy-build-skb", "build_skb per frame (legacy-rx)", legacy_build, "<", 0.02, how=GRAPH,
                  unmeasured=why_legacy),
            Check("legacy-copy-allocs", "copying skb allocations per frame (legacy-rx)", legacy_copy, "~", 1.0,
                  rel_tol=0.02, how=GRAPH, unmeasured=why_legacy),
        ]
        legacy_ok = holds(checks[2]) and holds(checks[3])
        text = [f"Default: {fmt(build)} build_skb and {fmt(copy_default)} copy allocations per frame; with "
                f"legacy-rx: {fmt(legacy_build)} build_skb and {fmt(legacy_copy)} skbs allocated per frame"
                + (" to copy the headers into (igb_construct_skb)." if legacy_ok else
                   ": the legacy-rx flag did not switch igb to its copying path (igb_construct_skb), so the two "
                   "modes cannot be told apart.")]
        return ClaimResult(self.id, self.title, self.slide, checks, text)
