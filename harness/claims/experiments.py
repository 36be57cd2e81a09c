"""The experiments behind the claims, as values. An experiment says who sends to
whom, on which kernel variant and DMA mode, at which traffic point, with which
probes and in which receiver state (ring mode, XDP program, a socket holding
every skb, warm-up frames); its name and its description derive from that, and one
runner measures them all. Three need more than traffic (the XDP headroom probe,
the AF_XDP receiver, the cost of the device trace) and name their own procedure.
Each is measured once per run on the guest it names, so claims share them; a
sampled experiment is a base experiment at another traffic point (traffic_space)."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from harness.errors import GuestError, MeasurementFailure, Unmeasurable
from harness.guest.vm import Guest
from harness.measurement import gcov, udp_sink, xdp
from harness.measurement.btf import struct_sizes
from harness.measurement.cost import CostProbe
from harness.measurement.dma_probe import DmaProbe
from harness.measurement.irq_affinity import PKTGEN_CPU, SOCKET_SENDER_CPU, interrupts_apart
from harness.measurement.measure import MEASURE_PKTGEN, PACING_RETRIES, Measurement, RunContext, measure_rx
from harness.measurement.netcheck import bring_up
from harness.measurement.probes import PAGE_REF_FUNCTIONS, RX_PATH_FUNCTIONS, EventCountProbe, GraphProbe, Probe
from harness.measurement.skb_home import SkbHomeProbe
from harness.measurement.socket_tx import run_socket_tx
from harness.measurement.traffic import PktgenConfig, run_pktgen
from harness.measurement.xsk import XskSnapshot, one_channel, receiver_loss, rx_queue, xsk_receiver
from harness.nics import nic

from .cost_claims import (
    COST_PKTGEN,
    COST_SINK,
    E1000E_COST,
    LEGACY_COST,
    NO_REUSE_COST,
    POOL_COST,
    POOL_HELD_COST,
    RX_COST,
    XDP_DROP_COST,
)
from .doorbell_claims import (
    RX_BURST,
    RX_BURST_EXPERIMENT,
    RX_BURST_XDP_EXPERIMENT,
    TRACE_COST_EXPERIMENT,
    TX_RUNS,
    tx_experiment,
)
from .lab import Lab
from .pool_claims import HOLD as POOL_HOLD
from .pool_claims import PEER as POOL_PEER
from .pool_claims import POOL_NIC, PP_DROP_EXPERIMENT, PP_EXPERIMENT, PP_HELD_EXPERIMENT
from .pool_claims import RELEASE as POOL_RELEASE
from .rx_claims import SKB_HOME_EXPERIMENT
from .skb_bulk_claims import SOCKET_TX_COST
from .traffic_space import (
    DEFAULT_POINT,
    LEGACY_MIX,
    MIXED_SIZES,
    SYNC_MIX,
    XDP_MIX,
    TrafficPoint,
    sampled_name,
    split_name,
)
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
# A receiver that holds every skb pins a page per two frames (udp_sink "holds").
HELD_PKTGEN = PktgenConfig(count=2_000, rate_pps=2_500)
# The receive buffer sizes igb_rx_bufsz() chooses between, each provoked on the
# swiotlb guest (where syncs are real) with fewer frames: the rule is per sync.
BUFSZ_PKTGEN = PktgenConfig(count=1_000, rate_pps=2_500)
LARGE_MTU = 3000  # > IGB_MAX_FRAME_BUILD_SKB: igb switches the ring to 3K buffers in order-1 pages
# Frames QEMU drops never reach the driver, so per-frame counts stay exact; a
# loss above 1% fails the experiment (and says where).
MAX_LOSS = 0.01
# XDP_TX makes igb transmit every frame back while it receives: paced at 5 kpps,
# 133 of 10,000 frames were lost before the NIC model counted them.
XDP_TX_PKTGEN = PktgenConfig(count=2_000, rate_pps=2_500)
# Tx bulking: pktgen paces per xmit call and a call sends a whole burst (xmit_more on
# all but its last frame), so ratep is the frame rate / burst. 2,048 frames: whole
# bursts of 1, 8 and 32.
TX_FRAMES, TX_RATE = 2_048, 5_000
# BQL starts a quiet queue with a limit of 0 and grows it with completions; while it
# is reached, netif_xmit_stopped() makes igb write the tail for every frame. Measured
# here: the first run of bursts of 32 on a fresh igb queue wrote 63 single tails and 62
# whole bursts, the same run again 63 whole bursts (BQL limit 3,840 bytes by then).
# Frames sent before the measured ones let the limit settle.
TX_WARMUP_FRAMES = 256
POOL_WARMUP_FRAMES = 512
# The AF_XDP path's functions beside the rx path's: the copy into the umem and the redirect.
XSK_FUNCTIONS = ["__xsk_rcv", "__xsk_map_redirect", "xp_alloc", "xp_alloc_batch"]

# Probes by name: what each arms, and how the description says it.
PROBES: dict[str, tuple[Callable[[Experiment], Probe], str]] = {
    "graph": (lambda _: GraphProbe(), "function_graph"),
    "dma": (lambda _: DmaProbe(), "DMA events"),
    "page_ref": (lambda _: EventCountProbe(["page_ref:page_ref_mod", "page_ref:page_ref_mod_and_test"], "val"),
                 "page_ref tracepoints (CONFIG_DEBUG_PAGE_REF)"),
    "page_pool": (lambda _: EventCountProbe([POOL_HOLD, POOL_RELEASE]), "page_pool tracepoints"),
    "skb_home": (lambda exp: SkbHomeProbe(exp.receiver),
                 "skb->data at the hand-off to GRO (kprobe) against the buffers synced for the CPU"),
    "cost": (lambda exp: CostProbe(exp.receiver, exp.sender),
             "instructions counted by QEMU's TCG plugin (no tracer in the guest)"),
}
# The receiver's ring mode (igb): the build_skb ring, legacy-rx (2K buffers, the
# copying igb_construct_skb), or 3K buffers in order-1 pages (MTU above 2K).
RING_MODES = {"default": "", "legacy-rx": "priv-flag legacy-rx on", "large": f"MTU {LARGE_MTU} (3K buffers)"}
DMA_MODE_TEXT = {"swiotlb": "swiotlb=force", "iommu": "behind QEMU's intel-iommu (intel_iommu=on)"}
SOURCES = {"pktgen": run_pktgen, "socket": run_socket_tx}
# Where each source sends from: its sender's interrupts go there, the receiver's to the other CPU
# (for a socket always, for the cost experiments with either: irq_affinity says why).
SENDER_CPUS = {"pktgen": PKTGEN_CPU, "socket": SOCKET_SENDER_CPU}
XDP_ACTIONS = {"xdp_pass": "XDP_PASS", "xdp_drop": "XDP_DROP", "xdp_tx": "XDP_TX"}


@dataclass(frozen=True)
class Experiment:
    name: str
    variant: str = "stock"
    dma_mode: str = "direct"
    sender: str = "e1000e"  # catalogue models
    receiver: str = "igb"
    pktgen: PktgenConfig = CLAIM_PKTGEN  # count, rate and burst; size and checksum come from `point`
    point: TrafficPoint = DEFAULT_POINT
    probes: tuple[str, ...] = ("graph", "dma")
    ring: str = "default"
    xdp: str = ""  # an XDP program (bpf/) attached natively to the receiver
    # A UDP socket on the receiver the frames go to (udp_sink.MODES: holds, drains, full); "":
    # none, and DST_IP is not the guest's (the stack drops each frame at the route lookup).
    sink: str = ""
    warmup: int = 0  # unmeasured frames first (BQL's limit, a page_pool's first refills)
    link_bounce: bool = False  # the receiver's link down and up with the probes armed (ring teardown and fill)
    needs_config: str = ""  # a kernel option without which it cannot be measured
    cost: bool = False  # on the cost guest (QEMU with the instruction-counting plugin, harness.measurement.cost)
    source: str = "pktgen"  # what sends the frames: pktgen, or "socket" (a UDP socket: the stack's own skbs)
    max_loss: float = MAX_LOSS
    retries: int = PACING_RETRIES
    procedure: Callable[[Experiment, Guest, RunContext, Lab], Measurement] | None = None  # beyond traffic
    note: str = ""  # what the procedure or the setting adds, in words

    def at(self, point: TrafficPoint) -> Experiment:
        """This experiment at another traffic point, named base@tag."""
        return dataclasses.replace(self, name=sampled_name(self.name, point), point=point)

    def traffic(self) -> PktgenConfig:
        return dataclasses.replace(self.pktgen, pkt_size=self.point.frame_size, udp_csum=self.point.udp_csum)

    @property
    def what(self) -> str:
        cfg = self.pktgen
        parts = [f"{cfg.count:,} frames {self.sender} -> {self.receiver}"
                 + (f" of {'/'.join(map(str, cfg.imix))} bytes mixed" if cfg.imix else "")
                 + (f" in pktgen bursts of {cfg.burst}" if cfg.burst > 1 else "")
                 + (f" at {cfg.rate_pps:,}/s" if cfg.rate_pps not in (MEASURE_PKTGEN.rate_pps, 0) else "")]
        if self.variant != "stock":
            parts.append(f"{self.variant} kernel")
        if self.dma_mode != "direct":
            parts.append(DMA_MODE_TEXT[self.dma_mode])
        if self.source != "pktgen":
            parts.append("sent from a UDP socket (not pktgen)")
        if self.point != DEFAULT_POINT:
            parts.append(self.point.describe())
        if self.ring != "default":
            parts.append(RING_MODES[self.ring])
        if self.xdp:
            parts.append(f"{XDP_ACTIONS.get(self.xdp, self.xdp)} on {self.receiver} (native)")
        if self.sink:
            parts.append(udp_sink.describe(self.sink))
        if self.source == "socket" or self.cost:
            parts.append(f"the sender's interrupts on CPU {SENDER_CPUS[self.source]}, the receiver's on the next")
        if self.warmup:
            parts.append(f"after {self.warmup:,} unmeasured")
        if self.link_bounce:
            parts.append(f"{self.receiver} down/up (ring teardown and fill) while probed")
        if self.note:
            parts.append(self.note)
        probes = [PROBES[p][1] for p in self.probes]
        return ", ".join(parts) + (f"; {' + '.join(probes)}" if probes else "")

    def run(self, g: Guest, ctx: RunContext, lab: Lab) -> Measurement:
        if self.needs_config and f"{self.needs_config}=y" not in g.kernel.config.read_text().splitlines():
            raise Unmeasurable(f"needs {self.needs_config} (off in Debian's kernels)")
        return (self.procedure or measure_traffic)(self, g, ctx, lab)


def measure_traffic(exp: Experiment, g: Guest, ctx: RunContext, lab: Lab) -> Measurement:
    """The experiment's receiver state set up (and undone after), then its frames
    with its probes armed around exactly them."""
    rx_if = g.nic(exp.receiver)
    with contextlib.ExitStack() as state:
        if exp.point.queue:
            state.enter_context(rx_queue(g, rx_if, exp.point.queue))
        if exp.source == "socket" or exp.cost:
            state.enter_context(interrupts_apart(g, nic(exp.sender).pci_address, nic(exp.receiver).pci_address,
                                                 SENDER_CPUS[exp.source]))
        if exp.ring == "legacy-rx":
            state.enter_context(legacy_rx_on(g))
        elif exp.ring == "large":
            state.enter_context(mtu(g, LARGE_MTU))
        prog = state.enter_context(xdp_attached(g, exp, lab)) if exp.xdp else None
        if exp.warmup:
            warm_up(g, exp.sender, exp.receiver, dataclasses.replace(exp.traffic(), count=exp.warmup))
        if exp.sink:
            state.enter_context(udp_sink.udp_sink(g, rx_if, exp.sink))
        # Run with the probes armed, before each attempt's traffic (a lossy attempt is sent again).
        armed = [h for h in (link_bounce(exp.receiver) if exp.link_bounce else None, prog.mark if prog else None)
                 if h is not None]
        m = measure_rx(g, ctx, [PROBES[p][0](exp) for p in exp.probes], src=exp.sender, dst=exp.receiver,
                       pktgen=exp.traffic(), max_loss=exp.max_loss, retries=exp.retries,
                       while_armed=(lambda guest: [h(guest) for h in armed]) if armed else None,
                       send=SOURCES[exp.source])
        if prog:
            prog.add(m)
        steered_to(m, exp)
        return m


def steered_to(m: Measurement, exp: Experiment) -> None:
    """A point on another rx queue holds only if the frames arrived there (the
    queue's own ethtool -S counter): else the steering failed, not the driver."""
    if not exp.point.queue:
        return
    key = f"counter:rx_queue_{exp.point.queue}_packets"
    try:
        on_queue = m.value(key, nic(exp.receiver).driver)
    except KeyError:
        raise Unmeasurable(f"{exp.receiver} has no per-queue counter {key.removeprefix('counter:')}") from None
    if on_queue < 0.99 * m.traffic.received:
        raise Unmeasurable(f"RSS steering put {on_queue:g} of {m.traffic.received} frames on rx queue "
                           f"{exp.point.queue} (ethtool -X weight): the device model did not follow the table")


def link_bounce(model: str) -> Callable[[Guest], None]:
    """Link down (the driver unmaps its whole ring) and up (it maps a fresh one)."""
    def bounce(g: Guest) -> None:
        g.run(["ip", "link", "set", "dev", g.nic(model), "down"])
        g.run(["ip", "link", "set", "dev", g.nic(model), "up"])
    return bounce


@dataclass
class XdpRun:
    """An XDP program attached for an experiment: its run count is read just before
    the measured traffic (`mark`, with the probes armed: again for each attempt
    measure_rx makes) and after it (`add`), so warm-up frames and a lossy attempt
    sent again are not counted."""

    g: Guest
    att: xdp.XdpAttachment
    program: str
    driver: str
    before: int = 0

    def mark(self, g: Guest) -> None:
        self.before = xdp.prog_stats(g, self.att.prog_id)["run_cnt"]

    def add(self, m: Measurement) -> None:
        m.add(f"xdp_run_cnt:{self.program}", xdp.prog_stats(self.g, self.att.prog_id)["run_cnt"] - self.before,
              self.driver, f"bpftool prog show id {self.att.prog_id}: run_cnt delta over the measured frames "
              "(kernel.bpf_stats_enabled=1)", {"attach_mode": self.att.mode})
        m.add("xdp_attach_mode", 1.0 if self.att.mode == "native" else 0.0, self.driver,
              "ip link set xdpdrv; the mode the kernel reports", {"mode": self.att.mode})


@contextlib.contextmanager
def xdp_attached(g: Guest, exp: Experiment, lab: Lab) -> Iterator[XdpRun]:
    """exp.xdp attached natively to the receiver while the body runs."""
    ifname = g.nic(exp.receiver)
    xdp.enable_run_counts(g)
    att = xdp.attach(g, ifname, xdp.build_programs(lab.cache)[exp.xdp], "native")
    try:
        yield XdpRun(g, att, exp.xdp, nic(exp.receiver).driver)
    finally:
        xdp.detach(g, ifname)


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


def warm_up(g: Guest, src: str, dst: str, cfg: PktgenConfig) -> None:
    """Unmeasured frames src -> dst (catalogue models) before an experiment's own, for a
    state that only traffic settles (BQL's limit, a page_pool's first refills)."""
    src_if, dst_if = g.nic(src), g.nic(dst)
    bring_up(g, [src_if, dst_if])
    run_pktgen(g, src_if, dst_if, cfg, require_all=False)


def xdp_headroom(exp: Experiment, g: Guest, ctx: RunContext, lab: Lab) -> Measurement:
    """The headroom as the driver's xdp_buff has it (kprobe) and as the program can use it."""
    igb = g.nic("igb")
    att = xdp.attach(g, igb, xdp.build_programs(lab.cache)["xdp_headroom"], "native")
    try:
        xdp.arm_headroom_kprobe(g)
        try:
            m = measure_rx(g, ctx, [], pktgen=exp.traffic())
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


def tx_pktgen(burst: int, count: int = TX_FRAMES) -> PktgenConfig:
    return PktgenConfig(count=count, burst=burst, rate_pps=max(1, TX_RATE // burst))


def tx_trace_cost(exp: Experiment, g: Guest, ctx: RunContext, lab: Lab) -> Measurement:
    """What the device witness costs: the same unpaced frames igb -> e1000e without and
    with the QEMU trace events on (pktgen's rate, compared only as a ratio in one run;
    frames the receiver misses do not matter here)."""
    cfg = exp.traffic()
    plain = measure_rx(g, ctx, [], src=exp.sender, dst=exp.receiver, pktgen=cfg, max_loss=1.0, retries=0,
                       witness=False)
    traced = measure_rx(g, ctx, [], src=exp.sender, dst=exp.receiver, pktgen=cfg, max_loss=1.0, retries=0)
    traced.add("pktgen_pps_untraced", plain.traffic.result.pps, nic(exp.sender).driver,
               "pktgen Result line of the same frames just before, QEMU trace events off")
    return traced


def xsk_rx(exp: Experiment, g: Guest, ctx: RunContext, lab: Lab) -> Measurement:
    """pktgen into an AF_XDP socket on igb's only queue, bound in the mode the
    experiment's note names. The receiver's snapshots around the traffic (the last
    one taken with the probes armed, so a resend after lost frames starts afresh)
    give the traffic's share: frames the kernel put on the socket's rx ring and
    frames the receiver read. A receiver that read fewer than were delivered
    failed, not the kernel: MeasurementFailure."""
    mode = XSK_MODES[exp.name.partition("@")[0]]
    igb, queue = g.nic(exp.receiver), exp.point.queue
    probes: list[Probe] = [GraphProbe(functions=RX_PATH_FUNCTIONS + PAGE_REF_FUNCTIONS + XSK_FUNCTIONS), DmaProbe()]
    # Queue 0: the device reduced to one channel; another queue: every flow steered to it.
    with rx_queue(g, igb, queue) if queue else one_channel(g, igb), \
            xsk_receiver(g, igb, "igb", mode, lab.cache, queue) as rx:
        before: list[XskSnapshot] = []
        m = measure_rx(g, ctx, probes, src=exp.sender, dst=exp.receiver, pktgen=exp.traffic(),
                       max_loss=exp.max_loss, while_armed=lambda _: before.append(rx.snapshot()))
        got = rx.snapshot().since(before[-1])
    steered_to(m, exp)
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


XSK_MODES = {XSK_ZC: "zerocopy", XSK_COPY: "copy"}


def calls(m: Measurement, fn: str) -> float:
    """Calls of `fn` under igb_poll in `m` (NaN where it was not traced)."""
    try:
        return m.value(f"calls:{fn}", "igb")
    except KeyError:
        return float("nan")


def swiotlb(name: str, **setting: object) -> Experiment:
    """On the swiotlb=force guest, DMA events only. swiotlb bounces every frame (and a
    driver edited to sync too much prints DMA-API reports on the console): one more
    halving of the rate before it counts as lossy."""
    return dataclasses.replace(Experiment(name, dma_mode="swiotlb", probes=("dma",), retries=3), **setting)


def pool(name: str, **setting: object) -> Experiment:
    """vmxnet3 receiving from the e1000e with an XDP program attached (its rx is then on
    a page_pool), after warm-up frames; the page_pool tracepoints counted."""
    return dataclasses.replace(Experiment(name, sender=POOL_PEER, receiver=POOL_NIC, warmup=POOL_WARMUP_FRAMES,
                                          probes=("page_pool",)), **setting)


def cost(name: str, **setting: object) -> Experiment:
    """On the cost guest: instructions counted by QEMU (the cost probe alone: a tracer in
    the guest would be counted too), in the one traffic regime of every cost figure, the
    frames ending in the full socket (udp_sink) unless another sink is asked for."""
    return dataclasses.replace(Experiment(name, probes=("cost",), pktgen=COST_PKTGEN, cost=True, sink=COST_SINK),
                               **setting)


BASE_EXPERIMENTS = [
    Experiment("rx", max_loss=0.0, pktgen=MEASURE_PKTGEN),
    Experiment("rx-control", sender="igb", receiver="e1000e"),
    Experiment("ring-fill", probes=("dma",), link_bounce=True),
    Experiment("rx-held", pktgen=HELD_PKTGEN, sink="holds", note="page reuse defeated"),
    Experiment("legacy-rx", ring="legacy-rx", pktgen=dataclasses.replace(CLAIM_PKTGEN, imix=LEGACY_MIX)),
    Experiment("xdp-drop", xdp="xdp_drop", pktgen=dataclasses.replace(CLAIM_PKTGEN, imix=XDP_MIX)),
    Experiment("xdp-pass", xdp="xdp_pass"),
    Experiment("xdp-tx", xdp="xdp_tx", pktgen=XDP_TX_PKTGEN),
    Experiment("rx-page-refs", probes=("page_ref", "graph", "dma"), needs_config="CONFIG_DEBUG_PAGE_REF"),
    swiotlb("rx-swiotlb", pktgen=dataclasses.replace(CLAIM_PKTGEN, imix=SYNC_MIX)),
    swiotlb("rx-swiotlb-legacy", pktgen=BUFSZ_PKTGEN, ring="legacy-rx"),
    swiotlb("rx-swiotlb-large", pktgen=BUFSZ_PKTGEN, ring="large"),
    Experiment("rx-iommu", dma_mode="iommu", probes=("dma",), retries=3),
    # DMA events only: the variant's igb.ko was just loaded, and function_graph would
    # have to patch its call sites again (2.4 s under TCG) for counts no rule reads.
    Experiment("rx-no-reuse", variant="no-reuse", probes=("dma",), pktgen=SLOW_RX_PKTGEN),
    # Where each frame's bytes are at the hand-off: the sizes mixed in one run, a trace
    # instance of its own (function_graph is turned off first, as for any probe beside it).
    Experiment(SKB_HOME_EXPERIMENT, probes=("skb_home",), pktgen=dataclasses.replace(CLAIM_PKTGEN, imix=MIXED_SIZES)),
    # e1000e sends in pktgen bursts: igb's model receives each burst back to back, and
    # function_graph counts the refills the device trace sees as RDT writes.
    Experiment(RX_BURST_EXPERIMENT, probes=("graph",), pktgen=tx_pktgen(RX_BURST),
               note="QEMU trace events (RDT writes)"),
    Experiment(RX_BURST_XDP_EXPERIMENT, probes=("graph",), pktgen=tx_pktgen(RX_BURST), xdp="xdp_pass",
               note="QEMU trace events (RDT writes)"),
    *[Experiment(tx_experiment(sender, burst), sender=sender, receiver=receiver, probes=(), pktgen=tx_pktgen(burst),
                 warmup=TX_WARMUP_FRAMES, note="BQL's limit settled; QEMU trace events (TDT writes, frames written)")
      for sender, receiver, bursts in TX_RUNS for burst in bursts],
    # vmxnet3's rx is on a page_pool while XDP is attached; the warm-up frames are the
    # pool's start (the ring fill and the first refills), not its steady state.
    pool(PP_EXPERIMENT, xdp="xdp_pass"),
    pool(PP_DROP_EXPERIMENT, xdp="xdp_drop"),
    pool(PP_HELD_EXPERIMENT, xdp="xdp_pass", sink="holds", pktgen=HELD_PKTGEN),
    *[Experiment(name, probes=("graph", "dma"), procedure=xsk_rx,
                 note=f"into an AF_XDP socket bound with {flag} on their rx queue (queue 0: igb reduced to one "
                 "channel)")
      for name, flag in ((XSK_ZC, "XDP_ZEROCOPY"), (XSK_COPY, "XDP_COPY"))],
    # The guest's only kprobe, after every function_graph experiment of its guest: on
    # 7.3.4's debug flavour, function_graph set up after a kprobe had been armed and
    # removed crashed the kernel in 2 of 2 runs (README, known issues).
    Experiment("xdp-headroom", pktgen=PktgenConfig(count=HEADROOM_FRAMES, rate_pps=2000), probes=(),
               procedure=xdp_headroom, note="xdp_headroom.o attached, a kprobe on bpf_xdp_adjust_head"),
    Experiment(TRACE_COST_EXPERIMENT, sender="igb", receiver="e1000e", probes=(), pktgen=PktgenConfig(count=TX_FRAMES),
               procedure=tx_trace_cost, note="unpaced, QEMU trace events off, then on (their cost)"),
    # The cost guest's: instructions per frame, one regime (cost_claims.COST_PKTGEN), no tracer in the guest.
    cost(RX_COST),
    cost(NO_REUSE_COST, variant="no-reuse"),
    cost(LEGACY_COST, ring="legacy-rx"),
    cost(XDP_DROP_COST, xdp="xdp_drop", sink=""),  # no frame gets past XDP: no sink to describe
    cost(E1000E_COST, sender="igb", receiver="e1000e"),
    # igb transmits the stack's own skbs (pktgen's are never freed on completion): the bulk free.
    # No sink: with DST_IP the guest's own, the sender's datagrams would go through loopback.
    cost(SOCKET_TX_COST, sender="igb", receiver="e1000e", source="socket", sink=""),
    # page_pool recycling against a pool that must allocate: vmxnet3 with XDP_PASS (its rx on a
    # pool) into a UDP socket that is read (pages come back) or never read (none does).
    cost(POOL_COST, sender=POOL_PEER, receiver=POOL_NIC, xdp="xdp_pass", warmup=POOL_WARMUP_FRAMES,
         sink="drains"),
    cost(POOL_HELD_COST, sender=POOL_PEER, receiver=POOL_NIC, xdp="xdp_pass", warmup=POOL_WARMUP_FRAMES,
         sink="holds"),
]


class ExperimentCatalogue(Mapping[str, Experiment]):
    """The base experiments by name, and any of them at a traffic point (`rx@1514B`)."""

    def __init__(self, base: list[Experiment]) -> None:
        self.base = {e.name: e for e in base}

    def __getitem__(self, name: str) -> Experiment:
        base, point = split_name(name)
        return self.base[base] if point == DEFAULT_POINT else self.base[base].at(point)

    def __iter__(self) -> Iterator[str]:
        return iter(self.base)

    def __len__(self) -> int:
        return len(self.base)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.partition("@")[0] in self.base

    def rank(self, name: str) -> int:
        """Where the experiment's base stands in the catalogue (the order experiments run in)."""
        return list(self.base).index(name.partition("@")[0])


EXPERIMENTS = ExperimentCatalogue(BASE_EXPERIMENTS)
# The no-reuse variant differs from stock by igb.ko only: right after the stock
# direct-DMA experiments it is loaded into the same guest (no second boot).
GUEST_ORDER = [("stock", "direct"), ("no-reuse", "direct"), ("stock", "swiotlb"), ("stock", "iommu")]


# The driver objects a --coverage run reads gcov counts of (igb's rx/tx and AF_XDP code).
COVERED_OBJECTS = ("igb_main", "igb_xsk")


def run_experiment(lab: Lab, name: str) -> None:
    exp = EXPERIMENTS[name]
    # Counts only of the kernel under test: a variant's igb.ko is another build (its .gcno differs).
    counted = lab.coverage and exp.variant == "stock"

    def run(g: Guest) -> Measurement:
        ctx = RunContext(lab.run_id, g.kernel.key, exp.variant, exp.dma_mode, " ".join(g.options.cmdline_extra))
        if counted:
            gcov.reset(g)
        m = exp.run(g, ctx, lab)
        if counted:
            lab.gcov[name] = gcov.collect(g, COVERED_OBJECTS)
        return m

    lab.measure(name, exp.variant, exp.dma_mode, run, exp.cost)
