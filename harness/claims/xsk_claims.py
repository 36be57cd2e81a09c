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

from .base import Check, ClaimResult
from .lab import Lab
from .rules import detail, fmt, per_packet, value, why_unmeasured

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
    region = ("igb's queue 0 with the device reduced to one channel, bound zero-copy and copy; the other queues "
              "are not sampled yet")
    experiments = (ZC, COPY)

    def evaluate(self, lab: Lab) -> ClaimResult:
        why_zc, why_copy = why_unmeasured(lab, ZC), why_unmeasured(lab, COPY)
        zc_on = value(lab, ZC, "xsk_zerocopy", "igb")
        zc_rx = per_packet(lab, ZC, "xsk_delivered", "igb")
        zc_copies = per_packet(lab, ZC, COPY_FN, "igb")
        zc_redirects = per_packet(lab, ZC, REDIRECT_FN, "igb")
        zc_allocs = per_packet(lab, ZC, "calls:__alloc_pages_noprof", "igb")
        zc_maps = per_packet(lab, ZC, "dma_map_page_attrs", "igb")
        copy_rx = per_packet(lab, COPY, "xsk_delivered", "igb")
        copies = per_packet(lab, COPY, COPY_FN, "igb")
        checks = [
            Check("zc-in-effect", "the socket bound with XDP_ZEROCOPY is zero-copy (XDP_OPTIONS)", zc_on, "==", 1.0,
                  how="getsockopt(SOL_XDP, XDP_OPTIONS) & XDP_OPTIONS_ZEROCOPY", unmeasured=why_zc),
            Check("zc-frames-delivered", "frames delivered to the zero-copy socket per frame igb received", zc_rx, "~",
                  1.0, rel_tol=0.01, how=SOCKET, unmeasured=why_zc),
            Check("zc-redirects-per-frame", "redirects to the socket (__xsk_map_redirect) per frame, zero-copy",
                  zc_redirects, "~", 1.0, rel_tol=0.01, how=GRAPH, unmeasured=why_zc),
            Check("zc-copies-per-frame", "copies into the umem (__xsk_rcv) per frame, zero-copy", zc_copies, "==", 0,
                  how=GRAPH, unmeasured=why_zc),
            Check("zc-page-allocs-per-frame", "page allocations per frame under igb_poll, zero-copy", zc_allocs, "<",
                  0.05, how=GRAPH, unmeasured=why_zc),
            Check("zc-maps-per-frame", "igb DMA maps per frame, zero-copy (the umem is mapped at bind)", zc_maps, "<",
                  0.05, how=DMA, unmeasured=why_zc),
            Check("copy-frames-delivered", "frames delivered to the copy-mode socket per frame igb received", copy_rx,
                  "~", 1.0, rel_tol=0.01, how=SOCKET, unmeasured=why_copy),
            Check("copy-copies-per-frame", "copies into the umem (__xsk_rcv) per frame, copy mode", copies, "~", 1.0,
                  rel_tol=0.02, how=GRAPH, unmeasured=why_copy),
        ]
        text = [
            (f"Zero-copy: the kernel delivered {fmt(zc_rx, 4)} frames to the socket per frame igb received, "
             f"{fmt(zc_redirects, 4)} redirects, {fmt(zc_copies, 4)} copies, {fmt(zc_allocs, 4)} page allocations "
             f"and {fmt(zc_maps, 4)} DMA maps per frame." if ZC in lab.results
             else f"Zero-copy not measured: {why_zc}."),
            (f"Copy mode: the kernel delivered {fmt(copy_rx, 4)} frames to the socket per frame, with "
             f"{fmt(copies, 4)} copies (__xsk_rcv) per frame." if COPY in lab.results
             else f"Copy mode not measured: {why_copy}."),
            *[socket_line(lab, e) for e in (ZC, COPY) if e in lab.results],
        ]
        return ClaimResult(self.id, self.title, self.slide, checks, text)


def socket_line(lab: Lab, experiment: str) -> str:
    """Frames delivered and read and the socket's XDP_STATISTICS, as the receiver reported them."""
    d = detail(lab, experiment, "xsk_delivered", "igb")
    if not d:
        return f"{experiment}: the receiver's socket counts were not recorded."
    stats = ", ".join(f"{k} {v}" for k, v in d.get("stats", {}).items())
    bad = f"; {d['bad_descs']} descriptors outside the umem" if d.get("bad_descs") else ""
    return (f"{experiment}: {d['delivered']} frames delivered to the socket's rx ring, {d['read']} read by the "
            f"receiver{bad}; XDP_STATISTICS {stats}.")
