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
    method,
    per_packet,
    per_packet_by_caller,
    per_packet_sum,
    why_unmeasured,
)
from .traffic_space import MIXED_SIZES, RX_SIZES, Sample, TrafficPoint, at, check_id

GRAPH = "function_graph under igb_poll, calls per received frame"
SKB_HOME_EXPERIMENT = "rx-skb-home"
HOME = "skb->data at the hand-off to GRO (kprobe) in a range igb synced for the CPU (dma tracepoint)"
ETH_HLEN = 14  # skb->len at the hand-off: eth_type_trans() has pulled the Ethernet header
ALLOC = "calls:__alloc_pages_noprof"  # every page allocation (probes.SUCCESSORS)
REFILL = nic("igb").refill
# igb rx buffers are half pages (PAGE_SIZE 4096 < 8192: igb_rx_frame_truesize() =
# igb_rx_pg_size() / 2): a page whose frames the stack holds serves two frames.
HALVES_PER_PAGE = 2
DMA = "dma:dma_map_page events keyed by device (igb's PCI address), calls per received frame"


def holds(check: Check) -> bool:
    return check.holds() is True


def skb_checks(lab: Lab, sample: Sample, prefix: str = "", label: str = "") -> list[Check]:
    """Per point of the sample: build_skb once per frame, no copying allocation."""
    checks = []
    for exp, point in sample.by_point():
        build = per_packet_sum(lab, exp, BUILD_SKB, "igb")
        copies = per_packet_sum(lab, exp, COPY_SKB_ALLOCS, "igb")
        why = why_unmeasured(lab, exp)
        checks += [
            Check(check_id(f"{prefix}build-skb" + ("" if prefix else "-per-frame"), point),
                  f"build_skb (napi_build_skb + build_skb) per frame under igb_poll{label}{at(point)}", build,
                  "~", 1.0, rel_tol=0.02, how=GRAPH + f"; experiment {exp}", unmeasured=why),
            Check(check_id(f"{prefix}copy-allocs" + ("" if prefix else "-per-frame"), point),
                  f"copying skb allocations (napi_alloc_skb, __netdev_alloc_skb) per frame under igb_poll{label}"
                  f"{at(point)}", copies, "<", 0.02, how=GRAPH + f"; experiment {exp}", unmeasured=why),
        ]
    return checks


def per_point_text(lab: Lab, sample: Sample, metrics: tuple[str, ...], digits: int = 2) -> str:
    return "; ".join(f"{point.frame_size} B{' csum' if point.udp_csum else ''}: "
                     f"{fmt(per_packet_sum(lab, exp, metrics, 'igb'), digits)}" for exp, point in sample.by_point())


def home_checks(lab: Lab) -> list[Check]:
    """Per frame size of the mixed run: the frames whose bytes, at the hand-off to GRO,
    lay in a buffer igb took over from the device (no copy by any route)."""
    exp = SKB_HOME_EXPERIMENT
    handoffs = detail(lab, exp, "skb_home:handoffs", "igb").get("by_len", {})
    home = detail(lab, exp, "skb_home:in_rx_buffer", "igb").get("by_len", {})
    how = (method(lab, exp, "skb_home:in_rx_buffer", "igb") or HOME) + f"; experiment {exp}"
    checks = []
    for size in MIXED_SIZES:
        n = handoffs.get(str(size - ETH_HLEN))
        measured = exp in lab.results
        checks.append(Check(
            check_id("payload-in-rx-buffer", TrafficPoint(size)),  # 60 bytes: the default point's id
            f"{size}-byte frames whose bytes igb hands to GRO lie in the buffer the device wrote (fraction)",
            None if not measured or not n else home.get(str(size - ETH_HLEN), 0) / n, "~", 1.0, rel_tol=0.01,
            how=how, unmeasured=why_unmeasured(lab, exp) if not measured else
            f"no {size}-byte frame reached the hand-off in {exp}"))
    return checks


class PageBasedRx:
    id, slide = "page-based-rx", "6"
    title = "igb receives into pages and wraps them with build_skb, without copying the payload"
    region = "every frame igb's default (build_skb) ring receives: 60 bytes up to the largest frame at MTU 1500"
    samples = (Sample("rx", RX_SIZES), Sample(SKB_HOME_EXPERIMENT))
    experiments = tuple(e for s in samples for e in s.experiments())

    def evaluate(self, lab: Lab) -> ClaimResult:
        sample = self.samples[0]
        checks = skb_checks(lab, sample) + home_checks(lab)
        builds = per_point_text(lab, sample, BUILD_SKB)
        copies = per_point_text(lab, sample, COPY_SKB_ALLOCS)
        if all(holds(c) for c in checks):
            text = (f"For each received frame igb called (napi_)build_skb once (by frame size: {builds}), an skb "
                    f"built around the rx page, and allocated no separate skb to copy into ({copies}).")
        else:
            text = (f"igb called build_skb per received frame {builds} and allocated skbs to copy into {copies}: "
                    "at the frame sizes where build_skb is not once per frame it does not (only) wrap its rx pages, "
                    "it copies frames into new buffers.")
        home = [c for c in checks if c.id.startswith("payload-in-rx-buffer")]
        where = ("At the hand-off to GRO, the share of frames whose bytes lay in the buffer the device wrote: "
                 + ", ".join(f"{size} B {fmt(c.value, 4)}" for size, c in zip(MIXED_SIZES, home, strict=True))
                 + (": no copy, by any route." if all(holds(c) for c in home) else
                    ": the rest were copied somewhere else, whatever function did it."))
        return ClaimResult(self.id, self.title, self.slide, checks, [text, where])


class PageReuse:
    id, slide = "page-reuse", "7"
    title = "in steady state igb reuses its rx pages: ~0 page allocations and DMA maps per frame"
    region = ("every frame size the default ring receives (a frame of any size takes half a page), and a "
              "receiver that holds its skbs (reuse must wait)")
    samples = (Sample("rx", RX_SIZES), Sample("rx-held"), Sample("rx-control"), Sample("rx-iommu"),
               Sample("rx-no-reuse"))
    experiments = tuple(e for s in samples for e in s.experiments())

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
        for exp, point in self.samples[0].by_point()[1:]:
            why = why_unmeasured(lab, exp)
            checks += [
                Check(check_id("igb-rx-maps-per-frame", point), f"igb rx DMA maps per frame (stock){at(point)}",
                      per_packet(lab, exp, "dma_map_page_attrs", "igb"), "<", 0.05, how=DMA + f"; experiment {exp}",
                      unmeasured=why),
                Check(check_id("igb-page-allocs-per-frame", point), f"rx-buffer page allocations per frame by "
                      f"{REFILL}() (stock){at(point)}", per_packet_by_caller(lab, exp, ALLOC, "igb", (REFILL,)),
                      "<", 0.05, how=GRAPH + f"; calls whose innermost traced caller is {REFILL}; experiment {exp}",
                      unmeasured=why),
            ]
        sizes = [c for c in checks if "@" in c.id]
        stock_ok = holds(checks[0]) and holds(checks[1])
        text = [
            (f"Stock igb: {fmt(maps, 4)} DMA maps and {fmt(allocs, 4)} page allocations per frame: its rx pages go "
             "back into the ring instead of being replaced." if stock_ok else
             f"Stock igb: {fmt(maps, 4)} DMA maps and {fmt(allocs, 4)} page allocations per frame: it replaces "
             "its rx pages instead of reusing them."),
            (f"At the other frame sizes ({', '.join(p.describe() for _, p in self.samples[0].by_point()[1:])}) "
             "every map and allocation check " + ("holds too." if all(holds(c) for c in sizes) else
                                                  "does not hold everywhere: " + "; ".join(
                                                      c.describe() for c in sizes if not holds(c)))),
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
    region = ("the default ring's steady state (60-byte frames; the bias is per page, whatever the frame size: "
              "page-reuse samples the sizes)")
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
    region = ("every frame size, on the default ring and on the legacy-rx ring (which copies up to IGB_RX_HDR_LEN "
              "bytes of headers and attaches the rest as a page fragment: 60 and 1000 bytes mixed in one run)")
    samples = (Sample("rx", RX_SIZES), Sample("legacy-rx"))
    experiments = tuple(e for s in samples for e in s.experiments())

    def evaluate(self, lab: Lab) -> ClaimResult:
        default, legacy = self.samples
        checks = skb_checks(lab, default, "default-", "")
        for exp, point in legacy.by_point():
            why = why_unmeasured(lab, exp)
            checks += [
                Check(check_id("legacy-build-skb", point), f"build_skb per frame (legacy-rx){at(point)}",
                      per_packet_sum(lab, exp, BUILD_SKB, "igb"), "<", 0.02, how=GRAPH + f"; experiment {exp}",
                      unmeasured=why),
                Check(check_id("legacy-copy-allocs", point), f"copying skb allocations per frame (legacy-rx)"
                      f"{at(point)}", per_packet_sum(lab, exp, COPY_SKB_ALLOCS, "igb"), "~", 1.0, rel_tol=0.02,
                      how=GRAPH + f"; experiment {exp}", unmeasured=why),
            ]
        legacy_ok = all(holds(c) for c in checks if c.id.startswith("legacy-"))
        text = [f"Default ring, build_skb per frame by size: {per_point_text(lab, default, BUILD_SKB)}; copy "
                f"allocations: {per_point_text(lab, default, COPY_SKB_ALLOCS)}. With legacy-rx, build_skb: "
                f"{per_point_text(lab, legacy, BUILD_SKB)}; skbs allocated to copy into: "
                f"{per_point_text(lab, legacy, COPY_SKB_ALLOCS)}"
                + (" (igb_construct_skb copies the headers)." if legacy_ok else
                   ": the legacy-rx flag did not switch igb to its copying path (igb_construct_skb) at every size, "
                   "so the two modes cannot be told apart there.")]
        return ClaimResult(self.id, self.title, self.slide, checks, text)
