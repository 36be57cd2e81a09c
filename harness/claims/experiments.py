"""The experiments behind the claims. Each is measured once per run on the guest
it names (kernel variant, DMA mode), so claims share them."""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from harness.errors import GuestError, MeasurementFailure, Unmeasurable
from harness.guest.vm import Guest
from harness.measurement import xdp
from harness.measurement.btf import struct_sizes
from harness.measurement.dma_probe import DmaProbe
from harness.measurement.measure import MEASURE_PKTGEN, Measurement, RunContext, measure_rx
from harness.measurement.netcheck import bring_up
from harness.measurement.probes import PAGE_REF_FUNCTIONS, RX_PATH_FUNCTIONS, EventCountProbe, GraphProbe
from harness.measurement.traffic import DST_IP, PktgenConfig, run_pktgen
from harness.measurement.xsk import XskSnapshot, one_channel, receiver_loss, xsk_receiver
from harness.nics import nic

from .doorbell_claims import RX_BURST, RX_BURST_EXPERIMENT, TRACE_COST_EXPERIMENT, TX_RUNS, tx_experiment
from .lab import Lab
from .pool_claims import HOLD as POOL_HOLD
from .pool_claims import PEER as POOL_PEER
from .pool_claims import POOL_NIC, PP_EXPERIMENT, PP_HELD_EXPERIMENT
from .pool_claims import RELEASE as POOL_RELEASE
from .xsk_claims import COPY as XSK_COPY
from .xsk_claims import ZC as XSK_ZC

HEADROOM_FRAMES = 200
# 2,000 frames per experiment: per-frame counts come out exact (1.0000, 0.0000);
# more only costs time (5,000 and 10,000 gave the same verdicts and counts).
CLAIM_PKTGEN = MEASURE_PKTGEN
# The no-reuse kernel allocates and maps a page per frame: at 5 kpps with
# function_graph on it lost 15 of 5,000 frames before the NIC model counted them
# (measured with DMA events only now; a lossy run is sent again slower).
SLOW_RX_PKTGEN = PktgenConfig(count=2_000, rate_pps=5_000)
# A receiver that holds every skb pins a page per two frames: 2,000 frames hold
# 4 MB, well inside the socket buffer below and the guest's UDP memory limits.
HELD_PKTGEN = PktgenConfig(count=2_000, rate_pps=2_500)
HELD_RCVBUF = 64 << 20
# The receive buffer sizes igb_rx_bufsz() chooses between, each provoked on the
# swiotlb guest (where syncs are real) with fewer frames: the rule is per sync.
BUFSZ_PKTGEN = PktgenConfig(count=1_000, rate_pps=2_500)
LARGE_MTU = 3000  # > IGB_MAX_FRAME_BUILD_SKB: igb switches the ring to 3K buffers in order-1 pages
# Frames QEMU drops never reach the driver, so per-frame counts stay exact; a
# loss above 1% fails the experiment (and says where).
MAX_LOSS = 0.01


@dataclass(frozen=True)
class Experiment:
    name: str
    variant: str
    dma_mode: str
    run: Callable[[Guest, RunContext, Lab], Measurement]
    what: str


def _ctx(lab: Lab, g: Guest, exp: Experiment) -> RunContext:
    return RunContext(lab.run_id, g.kernel.key, exp.variant, exp.dma_mode, " ".join(g.options.cmdline_extra))


def rx_default(g: Guest, ctx: RunContext, lab: Lab) -> Measurement:
    return measure_rx(g, ctx, [GraphProbe(), DmaProbe()])


def rx_burst(g: Guest, ctx: RunContext, lab: Lab) -> Measurement:
    """e1000e sends in pktgen bursts: igb's model receives each burst back to back, and
    function_graph counts the refills the device trace sees as RDT writes."""
    return measure_rx(g, ctx, [GraphProbe()], pktgen=tx_pktgen(RX_BURST), max_loss=MAX_LOSS)


def rx_control(g: Guest, ctx: RunContext, lab: Lab) -> Measurement:
    return measure_rx(g, ctx, [GraphProbe(), DmaProbe()], src="igb", dst="e1000e", pktgen=CLAIM_PKTGEN,
                      max_loss=MAX_LOSS)


def rx_dma_only(g: Guest, ctx: RunContext, lab: Lab) -> Measurement:
    # swiotlb bounces every frame (and a driver edited to sync too much prints DMA-API
    # reports on the console): one more halving of the rate before it counts as lossy.
    return measure_rx(g, ctx, [DmaProbe()], pktgen=CLAIM_PKTGEN, max_loss=MAX_LOSS, retries=3)


def rx_variant(g: Guest, ctx: RunContext, lab: Lab) -> Measurement:
    # DMA events only: the variant's igb.ko was just loaded, and function_graph would
    # have to patch its call sites again (2.4 s under TCG) for counts no rule reads.
    return measure_rx(g, ctx, [DmaProbe()], pktgen=SLOW_RX_PKTGEN, max_loss=MAX_LOSS)


def ring_fill(g: Guest, ctx: RunContext, lab: Lab) -> Measurement:
    """DMA maps and unmaps of a whole ring: igb down (igb_clean_rx_ring unmaps every
    page) and up (igb_alloc_rx_buffers maps a fresh ring) with the probes armed, then traffic."""
    def bounce(guest: Guest) -> None:
        guest.run(["ip", "link", "set", "dev", guest.nic("igb"), "down"])
        guest.run(["ip", "link", "set", "dev", guest.nic("igb"), "up"])

    return measure_rx(g, ctx, [DmaProbe()], while_armed=bounce, pktgen=CLAIM_PKTGEN, max_loss=MAX_LOSS)


@contextlib.contextmanager
def held_skbs(g: Guest, ifname: str) -> Iterator[None]:
    """A UDP socket on the frames' destination (pktgen sends to DST_IP port 9) with
    a large receive buffer that is never read: every received skb, and so its page,
    stays referenced by the stack until the socket closes."""
    sink = ("import socket, sys, time\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            # SO_RCVBUFFORCE (33, asm-generic/socket.h; not in Python 3.11): past rmem_max, root only.
            f"s.setsockopt(socket.SOL_SOCKET, 33, {HELD_RCVBUF})\n"
            f"s.bind(({DST_IP!r}, 9))\n"
            "print('bound', flush=True)\n"
            "time.sleep(3600)\n")
    pidfile = "/run/harness-held-skbs.pid"
    g.run(f"ip addr add {DST_IP}/24 dev {ifname} && "
          f"(python3 -c {shlex.quote(sink)} > /run/harness-held-skbs.out 2>&1 & echo $! > {pidfile}) && "
          "for i in $(seq 50); do grep -q bound /run/harness-held-skbs.out && exit 0; sleep 0.1; done; "
          "cat /run/harness-held-skbs.out >&2; exit 1")
    try:
        yield
    finally:
        g.run(f"kill $(cat {pidfile}) 2>/dev/null; sleep 0.2; ip addr del {DST_IP}/24 dev {ifname}; true",
              check=False)


def rx_held(g: Guest, ctx: RunContext, lab: Lab) -> Measurement:
    """Stock igb whose receiver holds every skb: igb_can_reuse_rx_page() refuses each
    page (the stack still holds it), so igb gives it up through igb_put_rx_buffer()
    and maps a new one: the hot-path unmap that default traffic never reaches."""
    with held_skbs(g, g.nic("igb")):
        return measure_rx(g, ctx, [GraphProbe(), DmaProbe()], pktgen=HELD_PKTGEN, max_loss=MAX_LOSS)


def legacy_rx(g: Guest, ctx: RunContext, lab: Lab) -> Measurement:
    with legacy_rx_on(g):
        return measure_rx(g, ctx, [GraphProbe(), DmaProbe()], pktgen=CLAIM_PKTGEN, max_loss=MAX_LOSS)


@contextlib.contextmanager
def legacy_rx_on(g: Guest) -> Iterator[None]:
    igb = g.nic("igb")
    g.run(["ethtool", "--set-priv-flags", igb, "legacy-rx", "on"])
    try:
        yield
    finally:
        g.run(["ethtool", "--set-priv-flags", igb, "legacy-rx", "off"])


@contextlib.contextmanager
def mtu(g: Guest, value: int) -> Iterator[None]:
    igb = g.nic("igb")
    old = g.run(["cat", f"/sys/class/net/{igb}/mtu"]).stdout.strip()
    g.run(["ip", "link", "set", "dev", igb, "mtu", str(value)])
    try:
        yield
    finally:
        g.run(["ip", "link", "set", "dev", igb, "mtu", old])


def rx_swiotlb_legacy(g: Guest, ctx: RunContext, lab: Lab) -> Measurement:
    with legacy_rx_on(g):
        return measure_rx(g, ctx, [DmaProbe()], pktgen=BUFSZ_PKTGEN, max_loss=MAX_LOSS)


def rx_swiotlb_large(g: Guest, ctx: RunContext, lab: Lab) -> Measurement:
    with mtu(g, LARGE_MTU):
        return measure_rx(g, ctx, [DmaProbe()], pktgen=BUFSZ_PKTGEN, max_loss=MAX_LOSS)


def page_refs(g: Guest, ctx: RunContext, lab: Lab) -> Measurement:
    """function_graph counts __page_ref_mod* under igb_poll; the page_ref hist
    triggers make those calls happen (and show the deltas by value)."""
    if "CONFIG_DEBUG_PAGE_REF=y" not in g.kernel.config.read_text().splitlines():
        raise Unmeasurable("needs CONFIG_DEBUG_PAGE_REF (page_ref tracepoints; off in Debian's kernels)")
    return measure_rx(g, ctx, [EventCountProbe(["page_ref:page_ref_mod", "page_ref:page_ref_mod_and_test"], "val"),
                               GraphProbe(), DmaProbe()],
                      pktgen=CLAIM_PKTGEN, max_loss=MAX_LOSS)


# XDP_TX makes igb transmit every frame back while it receives: paced at 5 kpps,
# 133 of 10,000 frames were lost before the NIC model counted them.
XDP_TX_PKTGEN = PktgenConfig(count=2_000, rate_pps=2_500)


def _with_xdp(program: str, pktgen: PktgenConfig = CLAIM_PKTGEN) -> Callable[[Guest, RunContext, Lab], Measurement]:
    def run(g: Guest, ctx: RunContext, lab: Lab) -> Measurement:
        igb = g.nic("igb")
        xdp.enable_run_counts(g)
        att = xdp.attach(g, igb, xdp.build_programs(lab.cache)[program], "native")
        try:
            before = xdp.prog_stats(g, att.prog_id)["run_cnt"]
            m = measure_rx(g, ctx, [GraphProbe(), DmaProbe()], pktgen=pktgen, max_loss=MAX_LOSS)
            m.add(f"xdp_run_cnt:{program}", xdp.prog_stats(g, att.prog_id)["run_cnt"] - before, "igb",
                  f"bpftool prog show id {att.prog_id}: run_cnt delta (kernel.bpf_stats_enabled=1)",
                  {"attach_mode": att.mode})
            return m
        finally:
            xdp.detach(g, igb)
    return run


def xdp_headroom(g: Guest, ctx: RunContext, lab: Lab) -> Measurement:
    """The headroom as the driver's xdp_buff has it (kprobe) and as the program can use it."""
    igb = g.nic("igb")
    att = xdp.attach(g, igb, xdp.build_programs(lab.cache)["xdp_headroom"], "native")
    try:
        xdp.arm_headroom_kprobe(g)
        try:
            m = measure_rx(g, ctx, [], pktgen=PktgenConfig(count=HEADROOM_FRAMES, rate_pps=2000))
            driver_view = xdp.read_headroom_kprobe(g)
        finally:
            xdp.disarm_headroom_kprobe(g)
        seen = xdp.map_entries(g, "headroom_seen")
    finally:
        xdp.detach(g, igb)
    try:
        sizes = struct_sizes(g, ["skb_shared_info", "xdp_frame"])
    except GuestError:
        sizes = {}  # a kernel without BTF: the claim says why it cannot compare
    for name, size in sizes.items():
        m.add(f"sizeof:{name}", size, "", "bpftool btf dump file /sys/kernel/btf/vmlinux")
    values = sorted(set(driver_view))
    m.add("xdp_buff_headroom", values[0] if len(values) == 1 else float("nan"), "igb",
          "kprobe on bpf_xdp_adjust_head(xdp, 0): xdp->data - xdp->data_hard_start",
          {"distinct": values, "frames": len(driver_view)})
    grows = sorted({k["grow"] for k, _ in seen})
    m.add("xdp_prog_max_grow", grows[0] if len(grows) == 1 else float("nan"), "igb",
          "xdp_headroom.o: largest d with bpf_xdp_adjust_head(ctx, -d) == 0, per frame, in a BPF hash map",
          {"entries": [{**k, "frames": v} for k, v in seen], "attach_mode": att.mode})
    return m


# Tx bulking: pktgen paces per xmit call and a call sends a whole burst (xmit_more on
# all but its last frame), so ratep is the frame rate / burst. 2,048 frames: whole
# bursts of 1, 8 and 32.
TX_FRAMES, TX_RATE = 2_048, 5_000


def tx_pktgen(burst: int, count: int = TX_FRAMES) -> PktgenConfig:
    return PktgenConfig(count=count, burst=burst, rate_pps=max(1, TX_RATE // burst))


# BQL starts a quiet queue with a limit of 0 and grows it with completions; while it
# is reached, netif_xmit_stopped() makes igb write the tail for every frame. Measured
# here: the first run of bursts of 32 on a fresh igb queue wrote 63 single tails and 62
# whole bursts, the same run again 63 whole bursts (BQL limit 3,840 bytes by then).
# Frames sent before the measured ones let the limit settle.
TX_WARMUP_FRAMES = 256


def warm_up(g: Guest, src: str, dst: str, cfg: PktgenConfig) -> None:
    """Unmeasured frames src -> dst (catalogue models) before an experiment's own, for a
    state that only traffic settles (BQL's limit, a page_pool's first refills)."""
    src_if, dst_if = g.nic(src), g.nic(dst)
    bring_up(g, [src_if, dst_if])
    run_pktgen(g, src_if, dst_if, cfg, require_all=False)


def _tx_burst(sender: str, receiver: str, burst: int) -> Callable[[Guest, RunContext, Lab], Measurement]:
    def run(g: Guest, ctx: RunContext, lab: Lab) -> Measurement:
        warm_up(g, sender, receiver, tx_pktgen(burst, TX_WARMUP_FRAMES))
        return measure_rx(g, ctx, [], src=sender, dst=receiver,
                          pktgen=tx_pktgen(burst), max_loss=MAX_LOSS)
    return run


def tx_trace_cost(g: Guest, ctx: RunContext, lab: Lab) -> Measurement:
    """What the device witness costs: the same unpaced frames igb -> e1000e without and
    with the QEMU trace events on (pktgen's rate, compared only as a ratio in one run;
    frames the receiver misses do not matter here)."""
    cfg = PktgenConfig(count=TX_FRAMES)
    plain = measure_rx(g, ctx, [], src="igb", dst="e1000e", pktgen=cfg, max_loss=1.0, retries=0, witness=False)
    traced = measure_rx(g, ctx, [], src="igb", dst="e1000e", pktgen=cfg, max_loss=1.0, retries=0)
    traced.add("pktgen_pps_untraced", plain.traffic.result.pps, "igb",
               "pktgen Result line of the same frames just before, QEMU trace events off")
    return traced


def _pool_rx(held: bool) -> Callable[[Guest, RunContext, Lab], Measurement]:
    """vmxnet3 (its rx on a page_pool while XDP is attached) receiving from the e1000e,
    XDP_PASS in driver mode, the page_pool tracepoints counted after warm-up frames
    (the ring fill and the first refills are the pool's start, not its steady state);
    `held`: into a socket that holds every skb, so no page can be recycled."""
    def run(g: Guest, ctx: RunContext, lab: Lab) -> Measurement:
        ifname = g.nic(POOL_NIC)
        att = xdp.attach(g, ifname, xdp.build_programs(lab.cache)["xdp_pass"], "native")
        try:
            warm_up(g, POOL_PEER, POOL_NIC, PktgenConfig(count=POOL_WARMUP_FRAMES, rate_pps=2_500))
            probes = [EventCountProbe([POOL_HOLD, POOL_RELEASE])]
            with held_skbs(g, ifname) if held else contextlib.nullcontext():
                m = measure_rx(g, ctx, probes, src=POOL_PEER, dst=POOL_NIC,
                               pktgen=HELD_PKTGEN if held else CLAIM_PKTGEN, max_loss=MAX_LOSS)
            m.add("xdp_attach_mode", 1.0 if att.mode == "native" else 0.0, nic(POOL_NIC).driver,
                  "ip link set xdpdrv; the mode the kernel reports", {"mode": att.mode})
            return m
        finally:
            xdp.detach(g, ifname)
    return run


POOL_WARMUP_FRAMES = 512
# The AF_XDP path's functions beside the rx path's: the copy into the umem and the redirect.
XSK_FUNCTIONS = ["__xsk_rcv", "__xsk_map_redirect", "xp_alloc", "xp_alloc_batch"]


def _xsk_rx(mode: str) -> Callable[[Guest, RunContext, Lab], Measurement]:
    """pktgen e1000e -> igb into an AF_XDP socket on igb's only queue, bound in `mode`.
    The receiver's snapshots around the traffic (the last one taken with the probes
    armed, so a resend after lost frames starts afresh) give the traffic's share: frames
    the kernel put on the socket's rx ring and frames the receiver read. A receiver that
    read fewer than were delivered failed, not the kernel: MeasurementFailure."""
    def run(g: Guest, ctx: RunContext, lab: Lab) -> Measurement:
        igb = g.nic("igb")
        probes = [GraphProbe(functions=RX_PATH_FUNCTIONS + PAGE_REF_FUNCTIONS + XSK_FUNCTIONS), DmaProbe()]
        with one_channel(g, igb), xsk_receiver(g, igb, "igb", mode, lab.cache) as rx:
            before: list[XskSnapshot] = []
            m = measure_rx(g, ctx, probes, pktgen=CLAIM_PKTGEN, max_loss=MAX_LOSS,
                           while_armed=lambda _: before.append(rx.snapshot()))
            got = rx.snapshot().since(before[-1])
        loss = receiver_loss(got)
        if loss:
            kernel = ", ".join(f"{fn} {calls(m, fn):g}" for fn in ("__xsk_map_redirect", "__xsk_rcv"))
            raise MeasurementFailure(f"{loss}; igb received {m.traffic.received} frames; calls under igb_poll "
                                     f"(function_graph): {kernel}")
        snapshots = "difference of the receiver's snapshots around the traffic"
        # Descriptors outside the umem are no frames delivered (the kernel's fault, counted apart).
        m.add("xsk_delivered", got.delivered - got.bad_descs, "igb",
              f"the socket's rx ring producer index (the kernel's), {snapshots}", got.to_json())
        m.add("xsk_received", got.read, "igb", f"xsk_rx: frames read from the socket's rx ring, {snapshots}",
              {"bytes": got.bytes, "mode": mode})
        for stat, value in got.stats.items():
            m.add(f"xsk_stat:{stat}", value, "igb", f"getsockopt(SOL_XDP, XDP_STATISTICS) {stat}, {snapshots}")
        m.add("xsk_zerocopy", 1.0 if rx.zerocopy else 0.0, "igb", "getsockopt(SOL_XDP, XDP_OPTIONS)")
        return m
    return run


def calls(m: Measurement, fn: str) -> float:
    """Calls of `fn` under igb_poll in `m` (NaN where it was not traced)."""
    try:
        return m.value(f"calls:{fn}", "igb")
    except KeyError:
        return float("nan")


def frames(cfg: PktgenConfig) -> str:
    return f"{cfg.count:,} frames" + (f" at {cfg.rate_pps:,}/s" if cfg.rate_pps != MEASURE_PKTGEN.rate_pps else "")


EXPERIMENTS = {e.name: e for e in [
    Experiment("rx", "stock", "direct", rx_default,
               f"{frames(MEASURE_PKTGEN)} e1000e -> igb, function_graph + DMA events"),
    Experiment("rx-control", "stock", "direct", rx_control, f"{frames(CLAIM_PKTGEN)} igb -> e1000e (e1000e receives)"),
    Experiment("ring-fill", "stock", "direct", ring_fill,
               f"igb down/up (ring teardown and fill) + {frames(CLAIM_PKTGEN)}, DMA events"),
    Experiment("rx-held", "stock", "direct", rx_held,
               f"{frames(HELD_PKTGEN)} e1000e -> igb into a UDP socket that holds every skb (page reuse defeated)"),
    Experiment("legacy-rx", "stock", "direct", legacy_rx, f"igb priv-flag legacy-rx on, {frames(CLAIM_PKTGEN)}"),
    Experiment("xdp-drop", "stock", "direct", _with_xdp("xdp_drop"),
               f"XDP_DROP on igb (native), {frames(CLAIM_PKTGEN)}"),
    Experiment("xdp-pass", "stock", "direct", _with_xdp("xdp_pass"),
               f"XDP_PASS on igb (native), {frames(CLAIM_PKTGEN)}"),
    Experiment("xdp-tx", "stock", "direct", _with_xdp("xdp_tx", XDP_TX_PKTGEN),
               f"XDP_TX on igb (native), {frames(XDP_TX_PKTGEN)}"),
    Experiment("xdp-headroom", "stock", "direct", xdp_headroom, f"xdp_headroom.o on igb, {HEADROOM_FRAMES} frames"),
    Experiment("rx-page-refs", "stock", "direct", page_refs,
               f"{frames(CLAIM_PKTGEN)} e1000e -> igb, page_ref tracepoints on (CONFIG_DEBUG_PAGE_REF)"),
    Experiment("rx-swiotlb", "stock", "swiotlb", rx_dma_only,
               f"{frames(CLAIM_PKTGEN)} e1000e -> igb with swiotlb=force"),
    Experiment("rx-swiotlb-legacy", "stock", "swiotlb", rx_swiotlb_legacy,
               f"{frames(BUFSZ_PKTGEN)} with swiotlb=force and legacy-rx on (2K buffers)"),
    Experiment("rx-swiotlb-large", "stock", "swiotlb", rx_swiotlb_large,
               f"{frames(BUFSZ_PKTGEN)} with swiotlb=force and MTU {LARGE_MTU} (3K buffers)"),
    Experiment("rx-iommu", "stock", "iommu", rx_dma_only,
               f"{frames(CLAIM_PKTGEN)} e1000e -> igb behind QEMU's intel-iommu (intel_iommu=on)"),
    Experiment("rx-no-reuse", "no-reuse", "direct", rx_variant,
               f"{frames(SLOW_RX_PKTGEN)} e1000e -> igb, no-reuse kernel"),
    Experiment(RX_BURST_EXPERIMENT, "stock", "direct", rx_burst,
               f"{TX_FRAMES:,} frames e1000e -> igb in pktgen bursts of {RX_BURST}, function_graph + QEMU trace "
               "events (RDT writes)"),
    *[Experiment(tx_experiment(sender, burst), "stock", "direct", _tx_burst(sender, receiver, burst),
                 f"{TX_FRAMES:,} frames {sender} -> {receiver} in pktgen bursts of {burst} (after "
                 f"{TX_WARMUP_FRAMES} unmeasured: BQL's limit), QEMU trace events (TDT writes, frames written)")
      for sender, receiver, bursts in TX_RUNS for burst in bursts],
    Experiment(PP_EXPERIMENT, "stock", "direct", _pool_rx(held=False),
               f"{frames(CLAIM_PKTGEN)} e1000e -> vmxnet3 with XDP_PASS (native: its page_pool), after "
               f"{POOL_WARMUP_FRAMES} unmeasured, page_pool tracepoints"),
    Experiment(PP_HELD_EXPERIMENT, "stock", "direct", _pool_rx(held=True),
               f"{frames(HELD_PKTGEN)} e1000e -> vmxnet3 with XDP_PASS into a UDP socket that holds every skb, "
               "page_pool tracepoints"),
    Experiment(XSK_ZC, "stock", "direct", _xsk_rx("zerocopy"),
               f"{frames(CLAIM_PKTGEN)} e1000e -> igb into an AF_XDP socket bound with XDP_ZEROCOPY (one queue), "
               "function_graph + DMA events"),
    Experiment(XSK_COPY, "stock", "direct", _xsk_rx("copy"),
               f"{frames(CLAIM_PKTGEN)} e1000e -> igb into an AF_XDP socket bound with XDP_COPY (one queue), "
               "function_graph + DMA events"),
    Experiment(TRACE_COST_EXPERIMENT, "stock", "direct", tx_trace_cost,
               f"{TX_FRAMES:,} unpaced frames igb -> e1000e, QEMU trace events off, then on (their cost)"),
]}
# The no-reuse variant differs from stock by igb.ko only: right after the stock
# direct-DMA experiments it is loaded into the same guest (no second boot).
GUEST_ORDER = [("stock", "direct"), ("no-reuse", "direct"), ("stock", "swiotlb"), ("stock", "iommu")]


def run_experiment(lab: Lab, name: str) -> None:
    exp = EXPERIMENTS[name]
    lab.measure(name, exp.variant, exp.dma_mode, lambda g: exp.run(g, _ctx(lab, g, exp), lab))
