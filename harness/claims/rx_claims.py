"""Claims on igb's page-based receive path (slides 6, 7, 10): build_skb on
pages, page reuse, bulk page refcounts, build_skb vs the legacy copy path."""

from __future__ import annotations

from .base import Check, ClaimResult
from .lab import Lab
from .rules import BUILD_SKB, COPY_SKB_ALLOCS, fmt, per_packet, per_packet_sum

GRAPH = "function_graph under igb_poll, calls per received frame"
DMA = "kprobe on dma_map_page_attrs keyed by device (igb = 0000:00:04.0), calls per received frame"


class PageBasedRx:
    id, slide = "page-based-rx", "6"
    title = "igb receives into pages and wraps them with build_skb, without copying the payload"
    experiments = ("rx",)

    def evaluate(self, lab: Lab) -> ClaimResult:
        build = per_packet_sum(lab, "rx", BUILD_SKB, "igb")
        copies = per_packet_sum(lab, "rx", COPY_SKB_ALLOCS, "igb")
        return ClaimResult(self.id, self.title, self.slide, [
            Check("build_skb (napi_build_skb + build_skb) per frame under igb_poll", build, "~", 1.0, rel_tol=0.02,
                  how=GRAPH),
            Check("copying skb allocations (napi_alloc_skb, __netdev_alloc_skb) per frame under igb_poll",
                  copies, "<", 0.02, how=GRAPH),
        ], [f"For each received frame igb called (napi_)build_skb {fmt(build)} times (an skb built around the "
            f"rx page) and allocated {fmt(copies)} separate skbs to copy into."])


class PageReuse:
    id, slide = "page-reuse", "7"
    title = "in steady state igb reuses its rx pages: ~0 page allocations and DMA maps per frame"
    experiments = ("rx", "rx-control", "rx-iommu", "rx-no-reuse")

    def evaluate(self, lab: Lab) -> ClaimResult:
        maps = per_packet(lab, "rx", "dma_map_page_attrs", "igb")
        allocs = per_packet(lab, "rx", "calls:__alloc_pages_noprof", "igb")
        nr_maps = per_packet(lab, "rx-no-reuse", "dma_map_page_attrs", "igb")
        nr_allocs = per_packet(lab, "rx-no-reuse", "calls:__alloc_pages_noprof", "igb")
        ctl_maps = per_packet(lab, "rx-control", "dma_map_page_attrs", "e1000e")
        iommu_maps = per_packet(lab, "rx-iommu", "dma_map_page_attrs", "igb")
        return ClaimResult(self.id, self.title, self.slide, [
            Check("igb rx DMA maps per frame (stock)", maps, "<", 0.05, how=DMA),
            Check("page allocations per frame under igb_poll (stock)", allocs, "<", 0.05, how=GRAPH),
            Check("igb rx DMA maps per frame, kernel patched so igb_can_reuse_rx_page() is false",
                  nr_maps, ">", 0.9, how=DMA),
            Check("e1000e rx DMA maps per frame (control NIC, receiving)", ctl_maps, ">", 0.9,
                  how="kprobe on dma_map_page_attrs keyed by device (e1000e = 0000:00:05.0)"),
            Check("igb rx DMA maps per frame behind the virtual IOMMU (stock)", iommu_maps, "<", 0.05,
                  how=DMA + "; QEMU intel-iommu, intel_iommu=on iommu=nopt, igb in an iommu_group"),
        ], [
            f"Stock igb: {fmt(maps, 4)} DMA maps and {fmt(allocs, 4)} page allocations per frame: its rx "
            "pages go back into the ring instead of being replaced.",
            (f"The same igb with page reuse patched out: {fmt(nr_maps, 4)} maps and {fmt(nr_allocs, 4)} page "
             "allocations per frame: every frame costs a fresh page, so the stock numbers are reuse, not a blind "
             "probe." if nr_maps is not None else "The igb with page reuse patched out was not measured (it needs "
             "a kernel build), so the stock numbers are not shown against their A side."),
            f"The e1000e control maps {fmt(ctl_maps, 4)} buffers per received frame: a driver without page "
            "reuse pays one map per frame.",
            f"Behind QEMU's virtual IOMMU, where a map costs an IOVA and an IOTLB entry, stock igb maps "
            f"{fmt(iommu_maps, 4)} pages per frame: reuse keeps the IOMMU out of the per-frame path.",
        ])


class PagecntBias:
    id, slide = "pagecnt-bias", "7"
    title = "igb takes page references in bulk (page_ref_add + pagecnt_bias), not one per frame"
    experiments = ("rx-page-refs",)

    def evaluate(self, lab: Lab) -> ClaimResult:
        gets = per_packet(lab, "rx-page-refs", "calls:__page_ref_mod", "igb")
        puts = per_packet(lab, "rx-page-refs", "calls:__page_ref_mod_and_test", "igb")
        how = ("CONFIG_DEBUG_PAGE_REF kernel, page_ref_mod tracepoints active; function_graph counts "
               "__page_ref_mod (page_ref_add/inc) and __page_ref_mod_and_test (put) under igb_poll")
        return ClaimResult(self.id, self.title, self.slide, [
            Check("page reference increments (__page_ref_mod) per frame under igb_poll", gets, "<", 0.05, how=how),
            Check("page reference drops (__page_ref_mod_and_test) per frame under igb_poll", puts, ">", 0.5, how=how),
        ], [f"Under igb_poll, each frame's page reference is dropped {fmt(puts)} times per frame when the "
            f"stack frees its skb, while igb takes only {fmt(gets, 4)} new references per frame: the "
            "pagecnt_bias covers the rest, refilled in bulk with page_ref_add."])


class BuildSkbVsCopy:
    id, slide = "build-skb-vs-copy", "10"
    title = "build_skb avoids the header copy of the legacy path (igb priv-flag legacy-rx)"
    experiments = ("rx", "legacy-rx")

    def evaluate(self, lab: Lab) -> ClaimResult:
        build = per_packet_sum(lab, "rx", BUILD_SKB, "igb")
        copy_default = per_packet_sum(lab, "rx", COPY_SKB_ALLOCS, "igb")
        legacy_build = per_packet_sum(lab, "legacy-rx", BUILD_SKB, "igb")
        legacy_copy = per_packet_sum(lab, "legacy-rx", COPY_SKB_ALLOCS, "igb")
        return ClaimResult(self.id, self.title, self.slide, [
            Check("build_skb per frame (default)", build, "~", 1.0, rel_tol=0.02, how=GRAPH),
            Check("copying skb allocations per frame (default)", copy_default, "<", 0.02, how=GRAPH),
            Check("build_skb per frame (legacy-rx)", legacy_build, "<", 0.02, how=GRAPH),
            Check("copying skb allocations per frame (legacy-rx)", legacy_copy, "~", 1.0, rel_tol=0.02, how=GRAPH),
        ], [f"Default: {fmt(build)} build_skb and {fmt(copy_default)} copy allocations per frame; with "
            f"legacy-rx: {fmt(legacy_build)} build_skb and {fmt(legacy_copy)} skbs allocated per frame to "
            "copy the headers into (igb_construct_skb)."])
