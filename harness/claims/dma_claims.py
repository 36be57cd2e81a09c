"""Claims on igb's use of the DMA API (slides 7, 8): syncs of half pages and of
the received bytes only, and DMA_ATTR_SKIP_CPU_SYNC on map and unmap."""

from __future__ import annotations

from .base import Check, ClaimResult
from .lab import Lab
from .rules import DMA_ATTR_SKIP_CPU_SYNC, attr_fraction, detail, fmt, per_packet, value

PAGE_SIZE = 4096
SYNC = "kprobe on __dma_sync_single_for_{} keyed by device, dir and length, swiotlb=force guest"


class HalfPageSync:
    id, slide = "half-page-sync", "7"
    title = "one sync for the CPU and one for the device per frame, covering only the received bytes / half page"
    experiments = ("rx-swiotlb",)

    def evaluate(self, lab: Lab) -> ClaimResult:
        exp = "rx-swiotlb"
        cpu = per_packet(lab, exp, "__dma_sync_single_for_cpu", "igb")
        dev = per_packet(lab, exp, "__dma_sync_single_for_device", "igb")
        cpu_bytes = per_packet(lab, exp, "__dma_sync_single_for_cpu:bytes", "igb")
        # The interface total (igb spreads flows over its RSS queues; FCS not counted).
        frame_bytes = per_packet(lab, exp, "counter:link.rx_bytes", "igb")
        dev_lens = [b["len"] for b in detail(lab, exp, "__dma_sync_single_for_device", "igb").get("by_dir_len", [])]
        largest_dev = float(max(dev_lens)) if dev_lens else None
        return ClaimResult(self.id, self.title, self.slide, [
            Check("igb syncs for the CPU per frame", cpu, "~", 1.0, rel_tol=0.02, how=SYNC.format("cpu")),
            Check("igb syncs for the device per frame", dev, "~", 1.0, rel_tol=0.02, how=SYNC.format("device")),
            Check("bytes synced for the CPU per frame / bytes received per frame",
                  None if cpu_bytes is None or not frame_bytes else cpu_bytes / frame_bytes, "~", 1.0, rel_tol=0.01,
                  how=SYNC.format("cpu") + "; received bytes from ip -s link rx_bytes"),
            Check("largest sync for the device (bytes)", largest_dev, "<=", PAGE_SIZE / 2, how=SYNC.format("device")),
        ], [f"With every DMA bounced through swiotlb, igb synced {fmt(cpu)} times per frame for the CPU, "
            f"{fmt(cpu_bytes, 1)} bytes (the frame is {fmt(frame_bytes, 1)} bytes), and {fmt(dev)} times for the "
            f"device, {largest_dev and int(largest_dev)} bytes: never more than the half page it gives back."])


class SkipCpuSync:
    id, slide = "skip-cpu-sync", "8"
    title = "igb maps and unmaps rx pages with DMA_ATTR_SKIP_CPU_SYNC (syncs are explicit and partial)"
    experiments = ("ring-fill", "rx-page-refs")

    def evaluate(self, lab: Lab) -> ClaimResult:
        # igb's rx pages are mapped DMA_FROM_DEVICE; its tx maps (a kernel with IPv6
        # sends router solicitations at link up) are another path, not this claim's.
        rx = "from_device"
        maps_frac, maps = attr_fraction(lab, "ring-fill", "dma_map_page_attrs", "igb", DMA_ATTR_SKIP_CPU_SYNC, rx)
        unmaps_frac, unmaps = attr_fraction(lab, "ring-fill", "dma_unmap_page_attrs", "igb",
                                            DMA_ATTR_SKIP_CPU_SYNC, rx)
        ctl_frac, ctl = attr_fraction(lab, "ring-fill", "dma_map_page_attrs", "e1000e", DMA_ATTR_SKIP_CPU_SYNC)
        reports = value(lab, "rx-page-refs", "console_dma_api_reports", "")
        how = ("kprobe on dma_(un)map_page_attrs, attrs argument, hist by device, direction and attrs; "
               "igb down/up + traffic; DMA_FROM_DEVICE calls")
        attrs = detail(lab, "ring-fill", "dma_map_page_attrs:attrs", "igb").get("by_dir_attrs", {})
        return ClaimResult(self.id, self.title, self.slide, [
            Check("igb rx pages mapped while probed (ring fill)", float(maps), ">", 0, how=how),
            Check("fraction of igb rx (from_device) maps with DMA_ATTR_SKIP_CPU_SYNC", maps_frac, "==", 1.0, how=how),
            Check("fraction of igb rx (from_device) unmaps with DMA_ATTR_SKIP_CPU_SYNC", unmaps_frac, "==", 1.0,
                  how=how),
            Check("DMA-API debug reports during igb rx (CONFIG_DMA_API_DEBUG)", reports, "==", 0,
                  how="guest console, CONFIG_DMA_API_DEBUG kernel"),
        ], [f"igb mapped {maps} and unmapped {unmaps} rx pages during a ring fill; attrs by direction {attrs} "
            f"(DMA_ATTR_SKIP_CPU_SYNC = {DMA_ATTR_SKIP_CPU_SYNC:#x}): {fmt(maps_frac)} of maps and "
            f"{fmt(unmaps_frac)} of unmaps skip the implicit CPU sync. The e1000e's {ctl} maps in the same run: "
            f"{fmt(ctl_frac)} carry it. The DMA API checker reported {fmt(reports, 0)} problems."])
