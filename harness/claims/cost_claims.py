"""What each technique of the talk saves, in instructions per frame on the rx path
(harness.measurement.cost: counted by QEMU's TCG plugin, deterministic), judged as
A/B pairs measured on one cost guest in one run. "A is cheaper than B" holds when
B's rx instructions per frame exceed A's by more than the run-to-run spread,
fails when they are lower by more than it, and cannot be told within it.

Every figure is taken in one traffic regime (COST_PKTGEN: paced so that each frame
has a NAPI poll of its own; the polls per frame are reported beside it): batching
changes the per-frame cost (a poll's fixed work is shared), so figures of
different regimes are never compared."""

from __future__ import annotations

from dataclasses import dataclass

from harness.measurement.cost import INSTANCE_KINDS, METRIC
from harness.measurement.traffic import PktgenConfig
from harness.measurement.udp_sink import describe

from .base import Check, ClaimResult
from .lab import Lab
from .rules import detail, fmt, frames, per_packet, value, why_unmeasured
from .traffic_space import RX_SIZES, Sample, check_id, sampled_name

# The regime of every cost figure: 2,000 frames at 1,000/s, paced so that most frames have a NAPI poll
# (measured: polls per frame printed beside each figure).
COST_PKTGEN = PktgenConfig(count=2_000, rate_pps=1_000)
# Where the frames end: a UDP socket whose receive buffer is full (harness.measurement.udp_sink),
# the stack's whole rx path with nothing in it that waits on time.
COST_SINK = "full"
COST_REGIME = ("2,000 frames at 1,000 frames/s, the receiver's interrupts on the CPU the sender does not use; "
               "the cost of a NAPI poll that received one frame and completed (its NAPI not scheduled again)")
# Instructions per frame repeat within this fraction from run to run in separate
# guests (scripts/cost_determinism.py; README has the figures): a difference within
# it says nothing.
SPREAD = 0.005
# The experiments, each on the cost guest.
RX_COST, NO_REUSE_COST, LEGACY_COST, XDP_DROP_COST, E1000E_COST = (
    "rx-cost", "rx-cost-no-reuse", "legacy-rx-cost", "xdp-drop-cost", "e1000e-rx-cost")
POOL_COST, POOL_HELD_COST = "pp-cost", "pp-held-cost"
RX = f"{METRIC}:rx"
# The rx path's cost of one frame: the NAPI polls that received exactly one frame (a poll
# returns how many it received), their own instructions per poll. Batching changes the
# per-frame cost (a poll's fixed work is shared) and how often a guest batches depends on
# the host's timing (five guests on a host building a kernel: 0.84-1.34 polls per frame,
# 10 % apart per frame over all polls); QEMU's igb model also interrupts about twice per
# frame at this pace, the second poll finding nothing (/proc/interrupts: 11,315 rx
# interrupts for 6,000 frames; about 360 instructions each). Both are counted apart.
RX_ONE = f"{RX}:one"
RX_IDLE = f"{RX}:none"
# A figure needs this share of the frames received in polls of their own.
MIN_ONE_FRAME_POLLS = 0.25
HOW = ("QEMU TCG plugin (witness tcg-plugin): guest instructions executed in the receiver's NAPI polls that "
       "received exactly one frame (returned 1) and did not schedule their NAPI again, entry to the caller's resume, "
       f"nested tx clean and interrupts excepted, per such poll; {COST_REGIME}")
# The families whose share page reuse is about: a page and its DMA mapping per frame.
REUSE_FAMILIES = ("page allocator", "dma api")


@dataclass(frozen=True)
class Saving:
    """A is cheaper than B on the rx path, per frame (both in the same regime)."""

    id: str
    cheaper: str  # experiment A
    dearer: str  # experiment B
    driver_a: str
    driver_b: str
    what: str
    families: tuple[str, ...] = ()  # where the saving is expected, shown beside


SAVINGS = (
    *[Saving(check_id("reuse-saves", p), sampled_name(RX_COST, p), sampled_name(NO_REUSE_COST, p), "igb", "igb",
             "igb's page reuse against the same igb without it (a page allocated and mapped per frame)",
             REUSE_FAMILIES) for p in RX_SIZES],
    Saving("build-skb-saves", RX_COST, LEGACY_COST, "igb", "igb",
           "igb's build_skb ring against legacy-rx (an skb allocated and the headers copied)", ("skb", "slab")),
    Saving("xdp-drop-saves", XDP_DROP_COST, RX_COST, "igb", "igb",
           "XDP_DROP in igb against delivering the frame to the stack", ("stack", "skb")),
    Saving("igb-cheaper-than-e1000e", RX_COST, E1000E_COST, "igb", "e1000e",
           "igb's rx (pages reused, build_skb) against e1000e's (an skb and a DMA map per frame)"),
    Saving("pool-recycling-saves", POOL_COST, POOL_HELD_COST, "vmxnet3", "vmxnet3",
           "vmxnet3's page_pool recycling (XDP_PASS into a socket drained every 50 ms) against the same pool "
           "allocating every page (a socket that holds every frame)", ("page_pool", "page allocator", "dma api")),
)


def rx_per_frame(lab: Lab, experiment: str, driver: str) -> float | None:
    """Instructions of a completed one-frame poll (None when too few frames had such a poll)."""
    insns, polls = value(lab, experiment, RX_ONE, driver), value(lab, experiment, "instances:rx:one", driver)
    n = frames(lab, experiment)
    if insns is None or not polls or not n or polls < MIN_ONE_FRAME_POLLS * n:
        return None
    return insns / polls


def family_per_frame(lab: Lab, experiment: str, driver: str, family: str) -> float:
    """A family's rx instructions per frame (0 when none ran: a measured nothing)."""
    v = per_packet(lab, experiment, f"{RX}:family:{family}", driver)
    return v or 0.0


def polls_per_frame(lab: Lab, experiment: str, driver: str) -> float | None:
    """Share of the frames received in a completed poll of their own."""
    return per_packet(lab, experiment, "instances:rx:one", driver)


def idle_per_frame(lab: Lab, experiment: str, driver: str) -> tuple[float | None, float | None]:
    """(idle polls per frame, their instructions per frame)."""
    return (per_packet(lab, experiment, "instances:rx:none", driver), per_packet(lab, experiment, RX_IDLE, driver))


def saving_check(lab: Lab, s: Saving) -> tuple[Check, str]:
    a, b = rx_per_frame(lab, s.cheaper, s.driver_a), rx_per_frame(lab, s.dearer, s.driver_b)
    why = why_unmeasured(lab, s.cheaper, s.dearer)
    if (a is None or b is None) and all(e in lab.results for e in (s.cheaper, s.dearer)):
        why = (f"fewer than {MIN_ONE_FRAME_POLLS:.0%} of the frames had a NAPI poll of their own that completed "
               "(the regime was not held: the guest batched, or its polls scheduled their NAPI again)")
    rel = None if a is None or b is None or not b else (b - a) / b
    if rel is not None and abs(rel) <= SPREAD:
        why, rel = f"{fmt(a, 0)} vs {fmt(b, 0)} instructions per frame: within the run-to-run spread", None
    check = Check(s.id, f"rx instructions per frame saved: {s.what}, relative to the latter", rel, ">", SPREAD,
                  how=HOW, unmeasured=why)
    saved = {f: family_per_frame(lab, s.dearer, s.driver_b, f) - family_per_frame(lab, s.cheaper, s.driver_a, f)
             for f in s.families}
    shares = ", ".join(f"{f} {v:+.0f}" for f, v in saved.items())
    polls = (polls_per_frame(lab, s.cheaper, s.driver_a), polls_per_frame(lab, s.dearer, s.driver_b))
    idle = (idle_per_frame(lab, s.cheaper, s.driver_a), idle_per_frame(lab, s.dearer, s.driver_b))
    text = (f"{s.what}: {fmt(a, 0)} vs {fmt(b, 0)} rx instructions per frame"
            + (f" ({rel:+.1%})" if rel is not None else "")
            + (f"; saved per frame by family (all polls): {shares}" if shares and a is not None and b is not None
               else "")
            + f"; frames in a completed poll of their own: {fmt(polls[0], 2)} and {fmt(polls[1], 2)}; polls that found "
            f"nothing: {fmt(idle[0][0], 2)} and {fmt(idle[1][0], 2)} per frame ({fmt(idle[0][1], 0)} and "
            f"{fmt(idle[1][1], 0)} instructions per frame, not in the figures).")
    return check, text


def figures(lab: Lab, experiments: tuple[str, ...]) -> dict[str, float]:
    """Instruction counts for baselines and compare (their own tolerance:
    harness.report.compare.COST_TOLERANCE): by region and function per frame, and a
    completed one-frame poll's per such poll. How many polls were batched, empty or
    rescheduled is the host's timing, so those kinds are no baseline figure, and the
    one-frame kind is taken per poll, not per frame."""
    out: dict[str, float] = {}
    for e in experiments:
        m = lab.results.get(e)
        if m is None:
            continue
        rows = m.frame[m.frame.metric.str.startswith(METRIC)]
        for row in rows.itertuples():
            key = f"{e}/{row.metric}" + (f"/{row.driver}" if row.driver else "")
            kind = next((k for k, *_ in INSTANCE_KINDS if row.metric.endswith(f":{k}")), None)
            if kind is None:
                out[key] = float(row.value) / m.traffic.received if m.traffic.received else float("nan")
            elif kind == "one":
                role = row.metric.removeprefix(f"{METRIC}:").removesuffix(f":{kind}")
                polls = value(lab, e, f"instances:{role}:{kind}", row.driver)
                out[key] = float(row.value) / polls if polls else float("nan")
    return out


class RxCost:
    id, slide = "rx-cost", "agenda"
    title = ("what each technique saves: instructions per frame on the rx path, page reuse, build_skb, XDP_DROP, "
             "page_pool recycling, igb against e1000e")
    region = (f"igb receiving from the e1000e at 60 and 1514 bytes (page reuse), 60 bytes otherwise, "
              f"{describe(COST_SINK)}; vmxnet3's page_pool under XDP_PASS; {COST_REGIME}. Not sampled: "
              "DMA_ATTR_SKIP_CPU_SYNC (its B kernel corrupts skbs: README)")
    samples = (Sample(RX_COST, RX_SIZES), Sample(NO_REUSE_COST, RX_SIZES), Sample(LEGACY_COST),
               Sample(XDP_DROP_COST), Sample(E1000E_COST), Sample(POOL_COST), Sample(POOL_HELD_COST))
    nics = ("vmxnet3",)  # the page_pool A/B's receiver
    experiments = tuple(e for s in samples for e in s.experiments())
    covers: tuple = ()

    def evaluate(self, lab: Lab) -> ClaimResult:
        checks, text = [], []
        for s in SAVINGS:
            check, line = saving_check(lab, s)
            checks.append(check)
            text.append(line)
        top = detail(lab, RX_COST, RX, "igb").get("top", [])
        n = lab.results[RX_COST].traffic.received if RX_COST in lab.results else 0
        if top and n:
            text.append("igb's rx path per frame (stock, 60 bytes), most expensive functions: "
                        + ", ".join(f"{fn} {count / n:.0f}" for fn, count in top[:8]) + ".")
        result = ClaimResult(self.id, self.title, self.slide, checks, text)
        result.figures = figures(lab, self.experiments)
        return result
