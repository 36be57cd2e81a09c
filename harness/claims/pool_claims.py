"""Claim on page_pool (the talk's agenda: Jesper Brouer's kernel memory work): a
driver whose rx pages come from a page_pool gets them back when the stack frees
the skb (skb_mark_for_recycle) or when XDP drops the frame, so in steady state the
pool hands out recycled pages and almost never goes to the page allocator.

vmxnet3 is the QEMU NIC whose driver has a pool (6.12, 7.x): vmxnet3_create_pp()
while an XDP program is attached, its rx then one pool page per frame. Counted by
the page_pool tracepoints: `page_pool_state_hold` fires per page the pool takes
from the page allocator (the slow path), `page_pool_state_release` per page it
gives back; a recycled page fires neither. Netlink's `page-pool-get` /
`page-pool-stats-get` cannot show this pool: vmxnet3_create_pp() sets no
`.netdev`, and page_pool_list() (net/core/page_pool_user.c, 6.12 and 7.3) links
only pools that have one into the lists the dump walks (read in the source, not
probed), so the tracepoints are the witness.
The A/B: the same traffic into a UDP socket that holds every skb, so no page can
come back and every frame costs a slow allocation."""

from __future__ import annotations

from harness.nics import nic

from .base import Check, ClaimResult
from .lab import Lab
from .rules import fmt, per_packet, value, why_unmeasured

POOL_NIC = "vmxnet3"
PEER = "e1000e"
HOLD, RELEASE = "page_pool:page_pool_state_hold", "page_pool:page_pool_state_release"
PP_EXPERIMENT, PP_HELD_EXPERIMENT, PP_DROP_EXPERIMENT = "pp-xdp-pass", "pp-xdp-pass-held", "pp-xdp-drop"
HOW = (f"page_pool tracepoints (hist trigger hit counts) while {POOL_NIC} receives from {PEER} with XDP_PASS "
       "attached natively; per frame the vmxnet3 counted")


def events(lab: Lab, experiment: str, event: str) -> float | None:
    """Per frame the pool's NIC received: the event's hits (0 when it did not fire). Only
    that NIC receives during the experiment, so the events are its driver's pool."""
    return per_packet(lab, experiment, f"event:{event}", "")


class PagePool:
    id, slide = "page-pool", "agenda"
    title = ("page_pool recycling: in steady state a pool's rx pages come back (skb recycle, XDP), so the page "
             "allocator is almost never called per frame")
    region = ("vmxnet3's page_pool (XDP attached) with pages coming back by every route the pool offers: the "
              "stack freeing the skb (XDP_PASS) and the driver dropping the frame (XDP_DROP, "
              "page_pool_recycle_direct); and without (a receiver holding every skb). XDP_TX is not sampled yet")
    experiments = (PP_EXPERIMENT, PP_DROP_EXPERIMENT, PP_HELD_EXPERIMENT)
    covers: tuple = ()  # --coverage instruments igb only: vmxnet3's code is not counted
    nics = (POOL_NIC,)  # the guests of a run that checks this claim get a vmxnet3 too

    def evaluate(self, lab: Lab) -> ClaimResult:
        why, why_held = why_unmeasured(lab, PP_EXPERIMENT), why_unmeasured(lab, PP_HELD_EXPERIMENT)
        slow = events(lab, PP_EXPERIMENT, HOLD)
        released = events(lab, PP_EXPERIMENT, RELEASE)
        held_slow = events(lab, PP_HELD_EXPERIMENT, HOLD)
        why_drop = why_unmeasured(lab, PP_DROP_EXPERIMENT)
        drop_slow, drop_released = events(lab, PP_DROP_EXPERIMENT, HOLD), events(lab, PP_DROP_EXPERIMENT, RELEASE)
        native = value(lab, PP_EXPERIMENT, "xdp_attach_mode", nic(POOL_NIC).driver)
        checks = [
            Check("xdp-native", f"XDP_PASS attached to {POOL_NIC} in driver mode (its pool exists only then)",
                  native, "==", 1.0, how="ip link set xdpdrv; the mode the kernel reports", unmeasured=why),
            Check("slow-allocs-per-frame", "pages the pool took from the page allocator per frame (steady state)",
                  slow, "<", 0.05, how=HOW, unmeasured=why),
            Check("releases-per-frame", "pages the pool gave back to the page allocator per frame", released,
                  "<", 0.05, how=HOW, unmeasured=why),
            Check("drop-slow-allocs-per-frame", "pages the pool took from the page allocator per frame under "
                  "XDP_DROP", drop_slow, "<", 0.05, how=HOW.replace("XDP_PASS", "XDP_DROP"), unmeasured=why_drop),
            Check("drop-releases-per-frame", "pages the pool gave back to the page allocator per frame under XDP_DROP",
                  drop_released, "<", 0.05, how=HOW.replace("XDP_PASS", "XDP_DROP"), unmeasured=why_drop),
            Check("held-slow-allocs-per-frame", "pages taken from the page allocator per frame when the receiver "
                  "holds every skb (recycling defeated)", held_slow, ">", 0.5,
                  how=HOW + "; a UDP socket that is never read holds each frame's page", unmeasured=why_held),
        ]
        mode = "native" if native == 1.0 else "not native" if native is not None else "mode unknown"
        recycled = checks[1].holds() and checks[2].holds()
        text = [
            (f"{POOL_NIC} with XDP_PASS ({mode}): {fmt(slow, 4)} slow-path allocations and {fmt(released, 4)} "
             "releases per frame after warm-up: the pool's pages come back when the stack frees the skb "
             "(skb_mark_for_recycle)." if recycled else
             f"{POOL_NIC} with XDP_PASS ({mode}): the pool took {fmt(slow, 4)} pages per frame from the page "
             f"allocator and gave {fmt(released, 4)} back: its pages do not come back to it (a page still "
             "referenced elsewhere cannot be recycled, an skb not marked for recycle frees it past the pool)."),
            f"With XDP_DROP, the driver hands each page straight back: {fmt(drop_slow, 4)} slow-path allocations "
            f"and {fmt(drop_released, 4)} releases per frame.",
            f"With a receiver that holds every skb: {fmt(held_slow, 4)} slow-path allocations per frame"
            + (": the tracepoints see the allocator when recycling cannot happen, so the 0 above is recycling."
               if recycled else "."),
        ]
        return ClaimResult(self.id, self.title, self.slide, checks, text)
