"""Claim on AF_XDP zero-copy (the talk's agenda: John Fastabend's zero-copy receive
to user space, AF_PACKET then, AF_XDP since): with a socket bound in zero-copy mode
the driver receives straight into the socket's umem, pre-mapped at bind time, so a
frame costs no page allocation, no DMA map and no copy in the kernel; in copy mode
the kernel copies each frame once (__xsk_rcv) into the umem.

igb has zero-copy from 6.14 (igb_xsk.c); on a kernel whose igb has none, the bind
with XDP_ZEROCOPY fails, which is the probe: the zero-copy checks are then
unmeasured with the kernel's error, and copy mode is still measured.

What the kernel delivered is the socket's rx ring producer index (the kernel's own
count); the receiver reading fewer than that fails the experiment as a measurement
failure before any rule sees it, so a frame count below 1 here is the kernel's."""

from __future__ import annotations

from harness.nics import nic

from .base import Check, ClaimResult
from .lab import Lab
from .rules import detail, fmt, per_packet, value, why_unmeasured
from .traffic_space import XSK_QUEUES, Sample, TrafficPoint, at, check_id

IGB = nic("igb")
ZC, COPY = "xsk-zc", "xsk-copy"
COPY_FN = "calls:__xsk_rcv"  # net/xdp/xsk.c: the copy into the umem (copy mode only)
REDIRECT_FN = "calls:__xsk_map_redirect"  # every frame redirected to an AF_XDP socket, either mode
GRAPH = "function_graph under igb_poll, per frame igb received"
DMA = "dma:dma_map_page events keyed by igb's PCI address, per frame"
SOCKET = ("frames the kernel put on the AF_XDP socket's rx ring (its producer index, snapshots of the receiver "
          "xsk_rx around the traffic), per frame igb received")


class XskZeroCopy:
    id, slide = "xsk-zero-copy", "agenda"
    title = ("AF_XDP zero-copy: igb receives into the socket's umem with no page allocation, DMA map or copy "
             "per frame; copy mode copies each frame once")
    region = ("every queue a socket can bind: igb's 2 combined channels with the guest's 2 vCPUs (queue 0 with "
              "the device reduced to one channel, queue 1 with RSS's table all on it; the 82576 model's other "
              "queues are not set up by igb here), bound zero-copy and copy")
    # --coverage: igb's zero-copy rx (igb_xsk.c, 6.14+) and its copy-mode rx loop
    covers = ((f"{IGB.source_dir}/igb_xsk.c", ("igb_clean_rx_irq_zc", "igb_alloc_rx_buffers_zc")),
              (f"{IGB.source_dir}/{IGB.rx_source}", IGB.rx_roots[:1]))
    samples = (Sample(ZC, XSK_QUEUES), Sample(COPY, XSK_QUEUES))
    experiments = tuple(e for s in samples for e in s.experiments())

    def evaluate(self, lab: Lab) -> ClaimResult:
        checks: list[Check] = []
        text: list[str] = []
        for (zc, point), (copy, _) in zip(self.samples[0].by_point(), self.samples[1].by_point(), strict=True):
            point_checks, point_text = self._at(lab, zc, copy, point)
            checks += point_checks
            text += point_text
        return ClaimResult(self.id, self.title, self.slide, checks, text)

    @staticmethod
    def _at(lab: Lab, zc: str, copy: str, point: TrafficPoint) -> tuple[list[Check], list[str]]:
        why_zc, why_copy = why_unmeasured(lab, zc), why_unmeasured(lab, copy)
        zc_on = value(lab, zc, "xsk_zerocopy", "igb")
        zc_rx = per_packet(lab, zc, "xsk_delivered", "igb")
        zc_copies = per_packet(lab, zc, COPY_FN, "igb")
        zc_redirects = per_packet(lab, zc, REDIRECT_FN, "igb")
        zc_allocs = per_packet(lab, zc, "calls:__alloc_pages_noprof", "igb")
        zc_maps = per_packet(lab, zc, "dma_map_page_attrs", "igb")
        copy_rx = per_packet(lab, copy, "xsk_delivered", "igb")
        copies = per_packet(lab, copy, COPY_FN, "igb")
        q = at(point)
        checks = [
            Check(check_id("zc-in-effect", point), f"the socket bound with XDP_ZEROCOPY is zero-copy (XDP_OPTIONS){q}",
                  zc_on, "==", 1.0, how="getsockopt(SOL_XDP, XDP_OPTIONS) & XDP_OPTIONS_ZEROCOPY", unmeasured=why_zc),
            Check(check_id("zc-frames-delivered", point), f"frames delivered to the zero-copy socket per frame igb "
                  f"received{q}", zc_rx, "~", 1.0, rel_tol=0.01, how=SOCKET, unmeasured=why_zc),
            Check(check_id("zc-redirects-per-frame", point), "redirects to the socket (__xsk_map_redirect) per "
                  f"frame, zero-copy{q}", zc_redirects, "~", 1.0, rel_tol=0.01, how=GRAPH, unmeasured=why_zc),
            Check(check_id("zc-copies-per-frame", point), f"copies into the umem (__xsk_rcv) per frame, zero-copy{q}",
                  zc_copies, "==", 0, how=GRAPH, unmeasured=why_zc),
            Check(check_id("zc-page-allocs-per-frame", point), f"page allocations per frame under igb_poll, "
                  f"zero-copy{q}", zc_allocs, "<", 0.05, how=GRAPH, unmeasured=why_zc),
            Check(check_id("zc-maps-per-frame", point), f"igb DMA maps per frame, zero-copy (the umem is mapped at "
                  f"bind){q}", zc_maps, "<", 0.05, how=DMA, unmeasured=why_zc),
            Check(check_id("copy-frames-delivered", point), f"frames delivered to the copy-mode socket per frame igb "
                  f"received{q}", copy_rx, "~", 1.0, rel_tol=0.01, how=SOCKET, unmeasured=why_copy),
            Check(check_id("copy-copies-per-frame", point), f"copies into the umem (__xsk_rcv) per frame, copy "
                  f"mode{q}", copies, "~", 1.0, rel_tol=0.02, how=GRAPH, unmeasured=why_copy),
        ]
        where = f"rx queue {point.queue}"
        text = [
            (f"Zero-copy, {where}: the kernel delivered {fmt(zc_rx, 4)} frames to the socket per frame igb "
             f"received, {fmt(zc_redirects, 4)} redirects, {fmt(zc_copies, 4)} copies, {fmt(zc_allocs, 4)} page "
             f"allocations and {fmt(zc_maps, 4)} DMA maps per frame." if zc in lab.results
             else f"Zero-copy, {where}, not measured: {why_zc}."),
            (f"Copy mode, {where}: the kernel delivered {fmt(copy_rx, 4)} frames to the socket per frame, with "
             f"{fmt(copies, 4)} copies (__xsk_rcv) per frame." if copy in lab.results
             else f"Copy mode, {where}, not measured: {why_copy}."),
            *[socket_line(lab, e) for e in (zc, copy) if e in lab.results],
        ]
        return checks, text


def socket_line(lab: Lab, experiment: str) -> str:
    """Frames delivered and read and the socket's XDP_STATISTICS, as the receiver reported them."""
    d = detail(lab, experiment, "xsk_delivered", "igb")
    if not d:
        return f"{experiment}: the receiver's socket counts were not recorded."
    stats = ", ".join(f"{k} {v}" for k, v in d.get("stats", {}).items())
    bad = f"; {d['bad_descs']} descriptors outside the umem" if d.get("bad_descs") else ""
    return (f"{experiment}: {d['delivered']} frames delivered to the socket's rx ring, {d['read']} read by the "
            f"receiver{bad}; XDP_STATISTICS {stats}.")
