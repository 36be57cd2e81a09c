"""Claim on XDP on igb's page-based path (slides 10+)."""

from __future__ import annotations

from harness.errors import HarnessError
from harness.source.igb_source import IGB_H, igb_rx_layout

from .base import Check, ClaimResult
from .lab import Lab
from .rules import BUILD_SKB, fmt, per_packet, per_packet_sum, value, why_unmeasured
from .traffic_space import Sample, at, check_id

GRAPH = "function_graph under igb_poll, calls per received frame"
DMA = "dma:dma_map_page events keyed by device"


class XdpOnPages:
    id, slide = "xdp", "10+"
    title = ("XDP runs on the page-based path: XDP_DROP recycles the page with no skb and no allocation, "
             "XDP_TX sends from the same page, the program sees the headroom igb reserves")
    region = ("XDP_DROP, XDP_PASS and XDP_TX on igb's page-based ring; XDP_DROP with 60 and 1514 bytes mixed in "
              "one run (XDP runs on the buffer before any skb, whatever its size)")
    samples = (Sample("xdp-drop"), Sample("xdp-pass"), Sample("xdp-tx"), Sample("xdp-headroom"))
    experiments = tuple(e for s in samples for e in s.experiments())

    def evaluate(self, lab: Lab) -> ClaimResult:
        runs = per_packet(lab, "xdp-drop", "xdp_run_cnt:xdp_drop", "igb")
        drop_skb = per_packet_sum(lab, "xdp-drop", BUILD_SKB, "igb")
        drop_alloc = per_packet(lab, "xdp-drop", "calls:__alloc_pages_noprof", "igb")
        drop_maps = per_packet(lab, "xdp-drop", "dma_map_page_attrs", "igb")
        pass_skb = per_packet_sum(lab, "xdp-pass", BUILD_SKB, "igb")
        tx_back = per_packet(lab, "xdp-tx", "counter:link.rx_packets", "e1000e")
        tx_alloc = per_packet(lab, "xdp-tx", "calls:__alloc_pages_noprof", "igb")
        headroom = value(lab, "xdp-headroom", "xdp_buff_headroom", "igb")
        grow = value(lab, "xdp-headroom", "xdp_prog_max_grow", "igb")
        expected, frame_size, notes = self._expected_headroom(lab)
        w = {e: why_unmeasured(lab, e) for e in self.experiments}
        headroom_why = w["xdp-headroom"] if headroom is None else "; ".join(notes)
        checks = [
            Check("drop-runs-per-frame", "XDP_DROP program runs per frame (bpftool run_cnt)", runs, "~", 1.0,
                  rel_tol=0.001, how="bpftool prog show run_cnt delta / frames received", unmeasured=w["xdp-drop"]),
            Check("drop-build-skb", "build_skb per frame under XDP_DROP", drop_skb, "<", 0.01, how=GRAPH,
                  unmeasured=w["xdp-drop"]),
            Check("drop-page-allocs", "page allocations per frame under XDP_DROP", drop_alloc, "<", 0.05, how=GRAPH,
                  unmeasured=w["xdp-drop"]),
            Check("drop-maps", "igb DMA maps per frame under XDP_DROP", drop_maps, "<", 0.05, how=DMA,
                  unmeasured=w["xdp-drop"]),
            Check("pass-build-skb", "build_skb per frame under XDP_PASS", pass_skb, "~", 1.0, rel_tol=0.02, how=GRAPH,
                  unmeasured=w["xdp-pass"]),
            Check("tx-bounced-per-frame", "frames bounced back to the e1000e per frame under XDP_TX", tx_back, "~",
                  1.0, rel_tol=0.01, how="ip -j -s link rx_packets delta on the e1000e (0 when it did not move)",
                  unmeasured=w["xdp-tx"]),
            Check("tx-page-allocs", "page allocations per frame under XDP_TX", tx_alloc, "<", 0.05, how=GRAPH,
                  unmeasured=w["xdp-tx"]),
            Check("headroom-vs-source", "xdp_buff headroom (data - data_hard_start) minus igb_rx_offset() from the "
                  "source", None if headroom is None or expected is None else headroom - expected, "==", 0,
                  how="kprobe on bpf_xdp_adjust_head(xdp, 0) vs igb.h igb_skb_pad()", unmeasured=headroom_why),
            Check("program-headroom", "headroom the program can claim minus (igb_rx_offset() - "
                  "sizeof(struct xdp_frame))", None if grow is None or expected is None or frame_size is None
                  else grow - (expected - frame_size), "==", 0,
                  how="xdp_headroom.o binary search with bpf_xdp_adjust_head; sizes from BTF",
                  unmeasured=headroom_why),
        ]
        checks += self._other_points(lab)
        drop_ok = all(c.holds() for c in checks[:4])
        tx_ok = all(c.holds() for c in checks[5:7])
        return ClaimResult(self.id, self.title, self.slide, checks, [
            f"XDP_DROP: the program ran {fmt(runs)} times per frame, igb built {fmt(drop_skb, 4)} skbs, "
            f"allocated {fmt(drop_alloc, 4)} pages and mapped {fmt(drop_maps, 4)} per frame"
            + (": dropped pages go straight back to the ring." if drop_ok else
               ": a dropped frame still costs an skb, a page or a map (or the program did not run per frame)."),
            f"XDP_PASS builds {fmt(pass_skb)} skbs per frame; XDP_TX returned {fmt(tx_back)} frames per frame "
            f"to the sender with {fmt(tx_alloc, 4)} page allocations"
            + (" (transmitted from the rx page)." if tx_ok else
               ": XDP_TX did not send every frame back from its rx page."),
            f"Headroom: igb's xdp_buff has {headroom} bytes before the frame (source says {expected}); the "
            f"program can grow the frame by {grow} bytes = headroom - sizeof(struct xdp_frame) ({frame_size}).",
        ], notes)

    def _other_points(self, lab: Lab) -> list[Check]:
        """The drop and pass checks at the samples' other points (none sampled today: XDP_DROP mixes its sizes
        in one run; a point added to the sample gets its checks here)."""
        drop, passed = self.samples[0], self.samples[1]
        checks = []
        for exp, point in drop.by_point()[1:]:
            why = why_unmeasured(lab, exp)
            checks += [
                Check(check_id("drop-runs-per-frame", point), f"XDP_DROP program runs per frame{at(point)}",
                      per_packet(lab, exp, "xdp_run_cnt:xdp_drop", "igb"), "~", 1.0, rel_tol=0.001,
                      how=f"bpftool prog show run_cnt delta / frames received; experiment {exp}", unmeasured=why),
                Check(check_id("drop-build-skb", point), f"build_skb per frame under XDP_DROP{at(point)}",
                      per_packet_sum(lab, exp, BUILD_SKB, "igb"), "<", 0.01, how=f"{GRAPH}; experiment {exp}",
                      unmeasured=why),
                Check(check_id("drop-page-allocs", point), f"page allocations per frame under XDP_DROP{at(point)}",
                      per_packet(lab, exp, "calls:__alloc_pages_noprof", "igb"), "<", 0.05,
                      how=f"{GRAPH}; experiment {exp}", unmeasured=why),
                Check(check_id("drop-maps", point), f"igb DMA maps per frame under XDP_DROP{at(point)}",
                      per_packet(lab, exp, "dma_map_page_attrs", "igb"), "<", 0.05, how=f"{DMA}; experiment {exp}",
                      unmeasured=why),
            ]
        for exp, point in passed.by_point()[1:]:
            checks.append(Check(check_id("pass-build-skb", point), f"build_skb per frame under XDP_PASS{at(point)}",
                                per_packet_sum(lab, exp, BUILD_SKB, "igb"), "~", 1.0, rel_tol=0.02,
                                how=f"{GRAPH}; experiment {exp}", unmeasured=why_unmeasured(lab, exp)))
        return checks

    @staticmethod
    def _expected_headroom(lab: Lab) -> tuple[int | None, int | None, list[str]]:
        sizes = {n: value(lab, "xdp-headroom", f"sizeof:{n}", "") for n in ("skb_shared_info", "xdp_frame")}
        if None in sizes.values():
            return None, None, ["struct sizes unavailable (kernel without BTF, or xdp-headroom not measured)"]
        sizes = {k: int(v) for k, v in sizes.items()}
        try:
            kernel = lab.kernel("stock")
        except HarnessError as e:
            return None, sizes["xdp_frame"], [str(e)]
        try:
            igb_h = kernel.source_file(IGB_H).read_text()
            layout = igb_rx_layout(igb_h, kernel.config.read_text(), sizes["skb_shared_info"])
        except HarnessError as e:  # no source kept (prebuilt kernel), or igb.h no longer as modelled
            return None, sizes["xdp_frame"], [str(e)]
        return layout.headroom, sizes["xdp_frame"], [f"igb source: {layout.reasoning}"]
