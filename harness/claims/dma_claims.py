"""Claims on igb's use of the DMA API (slides 7, 8): syncs of the received bytes
and of the driver's own buffer size only, and DMA_ATTR_SKIP_CPU_SYNC on every map
and unmap of an rx page, on every path that makes one. CONFIG_DMA_API_DEBUG's
error count is part of the evidence: an error during the experiments refutes."""

from __future__ import annotations

from harness.errors import HarnessError
from harness.source.igb_source import IGB_H, igb_rx_bufsz

from .base import Check, ClaimResult
from .lab import Lab
from .rules import (
    DMA_ATTR_SKIP_CPU_SYNC,
    RX,
    attrs_by_direction,
    callers,
    detail,
    dma_api_errors,
    fmt,
    fraction_with,
    frames,
    method,
    per_packet,
    why_unmeasured,
)
from .traffic_space import Sample, at, check_id

PAGE_SIZE = 4096
# Pages per rx page by ring mode: igb_rx_pg_order() is 1 for the 3K-buffer ring on 4K pages.
PAGE_ORDER_PAGES = {"build_skb": 1, "legacy": 1, "large": 2}
SYNC = "dma:dma_sync_single_for_{} events keyed by device, dir and size"
DMA_API = "debugfs dma-api/error_count delta per experiment; reports naming igb, plus any not printed"
# Where igb unmaps an rx page (igb_main.c): ring teardown at link down, and the
# hot path when a page cannot be reused (igb_put_rx_buffer, inlined into the
# rx loop igb_clean_rx_irq, itself inlined into igb_poll).
UNMAP_PATHS = {
    "ring teardown": ("igb_clean_rx_ring", "igb_clean_all_rx_rings", "igb_down"),
    "hot path (page given up)": ("igb_put_rx_buffer", "igb_clean_rx_irq", "igb_poll"),
}
SYNC_EXPERIMENTS = {  # ring mode (igb_source.RING_MODES) -> the swiotlb experiment that provokes it
    "build_skb": "rx-swiotlb", "legacy": "rx-swiotlb-legacy", "large": "rx-swiotlb-large"}


def device_syncs(lab: Lab, experiment: str) -> dict[int, int]:
    """length -> igb's syncs for the device in the experiment."""
    out: dict[int, int] = {}
    for row in detail(lab, experiment, "__dma_sync_single_for_device", "igb").get("by_dir_len", []):
        out[row["len"]] = out.get(row["len"], 0) + row["count"]
    return out


class HalfPageSync:
    id, slide = "half-page-sync", "7"
    title = ("one sync for the CPU and one for the device per frame, covering only the received bytes and the "
             "driver's buffer (never more than half a page)")
    region = ("every frame size up to the buffer (60 and 1514 bytes mixed in one run, the largest at MTU 1500) on "
              "the build_skb ring, and each ring mode igb_rx_bufsz() chooses between (build_skb, legacy-rx, 3K "
              "buffers)")
    samples = (Sample("rx-swiotlb"), Sample(SYNC_EXPERIMENTS["legacy"]), Sample(SYNC_EXPERIMENTS["large"]))
    experiments = tuple(e for s in samples for e in s.experiments())

    def evaluate(self, lab: Lab) -> ClaimResult:
        sizes, notes = self._bufsz(lab)
        errors, reports = dma_api_errors(lab, self.experiments, "igb")

        def how(direction: str, experiment: str) -> str:
            # The probe that ran: the dma tracepoints, or kprobes where a kernel has none (6.1).
            probe = method(lab, experiment, f"__dma_sync_single_for_{direction}", "igb") or SYNC.format(direction)
            return f"{probe}, swiotlb=force guest, experiment {experiment}"

        checks: list[Check] = []
        explanation = []
        for exp, point in self.samples[0].by_point():
            why = why_unmeasured(lab, exp)
            cpu = per_packet(lab, exp, "__dma_sync_single_for_cpu", "igb")
            dev = per_packet(lab, exp, "__dma_sync_single_for_device", "igb")
            cpu_bytes = per_packet(lab, exp, "__dma_sync_single_for_cpu:bytes", "igb")
            # The interface total (igb spreads flows over its RSS queues; FCS not counted).
            frame_bytes = per_packet(lab, exp, "counter:link.rx_bytes", "igb")
            checks += [
                Check(check_id("cpu-syncs-per-frame", point), f"igb syncs for the CPU per frame{at(point)}", cpu, "~",
                      1.0, rel_tol=0.02, how=how("cpu", exp), unmeasured=why),
                Check(check_id("device-syncs-per-frame", point), f"igb syncs for the device per frame{at(point)}", dev,
                      "~", 1.0, rel_tol=0.02, how=how("device", exp), unmeasured=why),
                Check(check_id("cpu-sync-bytes-ratio", point), "bytes synced for the CPU per frame / bytes received "
                      f"per frame{at(point)}",
                      None if cpu_bytes is None or not frame_bytes else cpu_bytes / frame_bytes, "~", 1.0,
                      rel_tol=0.01, how=how("cpu", exp) + "; received bytes from ip -s link rx_bytes", unmeasured=why),
            ]
            explanation.append(
                f"{point.describe().capitalize()}, every DMA bounced through swiotlb: igb synced {fmt(cpu)} times per "
                f"frame for the CPU, {fmt(cpu_bytes, 1)} bytes (the frame is {fmt(frame_bytes, 1)} bytes), and "
                f"{fmt(dev)} times for the device, in lengths {self._lens(device_syncs(lab, exp))}.")
        # The talk's bound, whatever igb.h says: a device sync never covers more than
        # half the page the ring's buffers come from.
        for mode, exps in (("build_skb", self.samples[0].experiments()), ("legacy", (SYNC_EXPERIMENTS["legacy"],)),
                           ("large", (SYNC_EXPERIMENTS["large"],))):
            lens = [length for e in exps for length in device_syncs(lab, e)]
            ran = [e for e in exps if e in lab.results]
            largest = float(max(lens)) if lens else (0.0 if ran else None)
            page = PAGE_SIZE * PAGE_ORDER_PAGES[mode]
            cid = "largest-device-sync" if mode == "build_skb" else f"{mode}-largest-device-sync"
            checks.append(Check(cid, f"largest sync for the device (bytes, {mode} ring)", largest, "<=", page // 2,
                                how=how("device", ", ".join(exps)) + f"; half of the {page}-byte page the ring's "
                                "buffers share (the talk's bound, not igb.h's)",
                                unmeasured=why_unmeasured(lab, *exps)))
        for mode, experiment in SYNC_EXPERIMENTS.items():
            lens = device_syncs(lab, experiment)
            n = frames(lab, experiment)
            want = sizes.get(mode) if sizes else None
            why_mode = why_unmeasured(lab, experiment) if experiment not in lab.results else "; ".join(notes)
            exact = None if want is None or not n else lens.get(want, 0) / n
            other = None if want is None or experiment not in lab.results else float(
                sum(c for length, c in lens.items() if length != want))
            label = f"igb_rx_bufsz() = {want}" if want else "igb_rx_bufsz()"
            checks += [
                Check(f"{mode}-bufsz-syncs-per-frame", f"device syncs of exactly {label} bytes per frame ({mode} ring)",
                      exact, "~", 1.0, rel_tol=0.02, how=how("device", experiment) + "; expected size from igb.h",
                      unmeasured=why_mode),
                Check(f"{mode}-other-size-syncs", f"device syncs of any other length ({mode} ring)", other, "==", 0,
                      how=how("device", experiment), unmeasured=why_mode),
            ]
            if experiment in lab.results:
                explanation.append(f"{mode} ring ({experiment}): device syncs by length {self._lens(lens)} over "
                                   f"{n} frames; igb_rx_bufsz() for this mode is {want} bytes in igb.h.")
        checks.append(Check("dma-api-errors", "DMA-API errors that may be igb's during the swiotlb experiments",
                            errors, "==", 0, how=DMA_API, unmeasured="kernel without CONFIG_DMA_API_DEBUG"))
        if reports:
            explanation.append("DMA-API reported: " + "; ".join(reports))
        return ClaimResult(self.id, self.title, self.slide, checks, explanation, notes)

    @staticmethod
    def _lens(lens: dict[int, int]) -> str:
        return ", ".join(f"{length} B x{n}" for length, n in sorted(lens.items())) or "none"

    @staticmethod
    def _bufsz(lab: Lab) -> tuple[dict[str, int] | None, list[str]]:
        try:
            igb_h = lab.kernel("stock").source_file(IGB_H).read_text()
            sizes = igb_rx_bufsz(igb_h)
        except HarnessError as e:  # no source kept (prebuilt kernel), or igb.h no longer as modelled
            return None, [f"igb_rx_bufsz() not known: {e}"]
        return sizes, [f"igb.h: igb_rx_bufsz() returns {sizes['build_skb']} (build_skb ring), "
                       f"{sizes['legacy']} (legacy-rx), {sizes['large']} (large frames, 3K buffers)"]


class SkipCpuSync:
    id, slide = "skip-cpu-sync", "8"
    title = ("igb maps and unmaps rx pages with DMA_ATTR_SKIP_CPU_SYNC on every path (syncs are explicit "
             "and partial)")
    region = ("every path that maps or unmaps an rx page: the ring fill and teardown (link up/down) and the hot "
              "path when a page cannot be reused (a receiver holding its skbs); every other experiment of the run "
              "counts too")
    experiments = ("ring-fill", "rx-held")

    def evaluate(self, lab: Lab) -> ClaimResult:
        # Every experiment of the run that saw igb's rx maps counts: a path the
        # claim's own experiments miss is still judged when another reached it.
        seen_in = tuple(dict.fromkeys([*self.experiments, *lab.results]))
        maps, map_exps = attrs_by_direction(lab, seen_in, "dma_map_page_attrs", "igb", RX)
        unmaps, unmap_exps = attrs_by_direction(lab, seen_in, "dma_unmap_page_attrs", "igb", RX)
        by_caller = callers(lab, seen_in, "dma_unmap_page_attrs", "igb")
        paths = {path: sum(sum(by_caller.get(f, {}).values()) for f in funcs) for path, funcs in UNMAP_PATHS.items()}
        known = {f for funcs in UNMAP_PATHS.values() for f in funcs}
        errors, reports = dma_api_errors(lab, seen_in, "igb")
        why_fill, why_held = why_unmeasured(lab, "ring-fill"), why_unmeasured(lab, "rx-held")
        how = ("dma:dma_map_page / dma_unmap_page events, attrs keyed by device and direction, and the calling "
               "function from the event's stack trace; every experiment of the run")
        measured_fill = "ring-fill" in lab.results
        measured_held = "rx-held" in lab.results
        checks = [
            Check("rx-maps-seen", "igb rx pages mapped while probed", float(sum(maps.values())) if map_exps else None,
                  ">", 0, how=how, unmeasured=why_fill),
            Check("rx-maps-skip-cpu-sync", "fraction of igb rx (from_device) maps with DMA_ATTR_SKIP_CPU_SYNC",
                  fraction_with(maps, DMA_ATTR_SKIP_CPU_SYNC), "==", 1.0, how=how, unmeasured=why_fill),
            Check("teardown-unmaps-seen", "igb rx unmaps from ring teardown (igb_clean_rx_ring)",
                  float(paths["ring teardown"]) if measured_fill else None, ">", 0, how=how + "; igb down/up",
                  unmeasured=why_fill),
            Check("hot-path-unmaps-seen", "igb rx unmaps from the hot path (igb_put_rx_buffer in igb_poll)",
                  float(paths["hot path (page given up)"]) if measured_held else None, ">", 0,
                  how=how + "; provoked by a receiver that holds its skbs", unmeasured=why_held),
            Check("rx-unmaps-skip-cpu-sync", "fraction of igb rx (from_device) unmaps with DMA_ATTR_SKIP_CPU_SYNC",
                  fraction_with(unmaps, DMA_ATTR_SKIP_CPU_SYNC), "==", 1.0, how=how, unmeasured=why_fill),
            Check("dma-api-errors", "DMA-API errors that may be igb's during the run's experiments", errors, "==", 0,
                  how=DMA_API, unmeasured="kernel without CONFIG_DMA_API_DEBUG"),
        ]
        bit = DMA_ATTR_SKIP_CPU_SYNC
        path_text = "; ".join(
            f"{caller}(): {n} unmaps, attrs {', '.join(f'{a:#x} x{c}' for a, c in sorted(by.items()))}"
            + ("" if caller in known else " (a path this claim does not name)")
            for caller, by in sorted(by_caller.items()) for n in [sum(by.values())])
        missing_bit = [c for c, by in by_caller.items() if any(not a & bit for a in by)]
        explanation = [
            f"igb mapped {sum(maps.values())} rx pages (attrs {self._attrs(maps)}) and unmapped "
            f"{sum(unmaps.values())} (attrs {self._attrs(unmaps)}) over the experiments "
            f"{', '.join(sorted(set(map_exps) | set(unmap_exps))) or 'none'} "
            f"(DMA_ATTR_SKIP_CPU_SYNC = {bit:#x}).",
            f"Unmaps by calling function: {path_text or 'none seen'}.",
            ("Every rx unmap skipped the implicit CPU sync: the syncs igb makes are the explicit, partial ones."
             if not missing_bit else "Unmaps without DMA_ATTR_SKIP_CPU_SYNC came from "
             + ", ".join(f"{c}()" for c in missing_bit) + ": each of those syncs the whole buffer for the CPU "
             "again (and under swiotlb copies it back), undoing what a CPU wrote."),
            f"The DMA API checker counted {fmt(errors, 0)} errors that may be igb's"
            + (": " + "; ".join(reports) if reports else "."),
        ]
        return ClaimResult(self.id, self.title, self.slide, checks, explanation)

    @staticmethod
    def _attrs(by: dict[int, int]) -> str:
        return ", ".join(f"{a:#x} x{n}" for a, n in sorted(by.items())) or "none"
