"""The traffic a driver's rx and tx code branches on, as values: a traffic point
(frame size, the sender's checksum state, the rx queue), the points each claim's
verdict is judged on, and the sizes mixed in one run. A sampled experiment is its
base experiment at another point, named `base@tag` (`rx@1514B+csum`,
`tx-burst-8@csum`, `xsk-zc@q1`), so adding a point to a claim is a change to the
data below, nothing else: the experiment, its checks and the report rows follow."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from harness.errors import HarnessError
from harness.measurement.traffic import MIN_FRAME

# 1514: the largest frame at MTU 1500 (pktgen's pkt_size counts no FCS).
MAX_FRAME_MTU_1500 = 1514


@dataclass(frozen=True)
class TrafficPoint:
    """One point of the traffic space. `frame_size`: bytes pktgen puts on the wire
    without FCS (60 is the 64-byte minimum). `udp_csum`: pktgen's `flag UDPCSUM`,
    which a sender with NETIF_F_IP_CSUM/HW_CSUM (igb, e1000e) transmits as
    CHECKSUM_PARTIAL (the driver's checksum-offload branch, igb_tx_csum()), and the
    receiver then sees a valid UDP checksum (its rx checksum branch)."""

    frame_size: int = MIN_FRAME
    udp_csum: bool = False
    queue: int = 0  # the receiver's rx queue the frames are steered to (0: as the experiment leaves it)

    def tag(self) -> str:
        """What distinguishes this point from the default one ('' for the default)."""
        parts = [f"{self.frame_size}B"] if self.frame_size != MIN_FRAME else []
        return "+".join(parts + (["csum"] if self.udp_csum else []) + ([f"q{self.queue}"] if self.queue else []))

    def describe(self) -> str:
        """What sets this point apart, in words (the frame size at the default point)."""
        parts = ([f"{self.frame_size}-byte frames"] if self.frame_size != MIN_FRAME or self == TrafficPoint() else [])
        parts += ["UDP checksum offloaded by the sender"] if self.udp_csum else []
        parts += [f"steered to rx queue {self.queue}"] if self.queue else []
        return ", ".join(parts)

    @classmethod
    def parse(cls, tag: str) -> TrafficPoint:
        point = cls()
        for part in filter(None, tag.split("+")):
            if m := re.fullmatch(r"(\d+)B", part):
                point = dataclasses.replace(point, frame_size=int(m[1]))
            elif part == "csum":
                point = dataclasses.replace(point, udp_csum=True)
            elif m := re.fullmatch(r"q(\d+)", part):
                point = dataclasses.replace(point, queue=int(m[1]))
            else:
                raise HarnessError(f"unknown traffic point {part!r} in {tag!r} (known: <size>B, csum, q<queue>)")
        return point


DEFAULT_POINT = TrafficPoint()


def sampled_name(base: str, point: TrafficPoint) -> str:
    """The experiment measuring `base` at `point` (the base's own name at the default point)."""
    return f"{base}@{point.tag()}" if point.tag() else base


def split_name(name: str) -> tuple[str, TrafficPoint]:
    base, _, tag = name.partition("@")
    return base, TrafficPoint.parse(tag)


@dataclass(frozen=True)
class Sample:
    """A base experiment at each of `points`: the sample a claim's checks are judged on."""

    base: str
    points: tuple[TrafficPoint, ...] = (DEFAULT_POINT,)

    def experiments(self) -> tuple[str, ...]:
        return tuple(sampled_name(self.base, p) for p in self.points)

    def by_point(self) -> list[tuple[str, TrafficPoint]]:
        return [(sampled_name(self.base, p), p) for p in self.points]


def at(point: TrafficPoint) -> str:
    """How a check's words name its traffic point ('' at the default point)."""
    return f" [{point.describe()}]" if point.tag() else ""


def check_id(base_id: str, point: TrafficPoint) -> str:
    """A check's id at a point: the default point keeps the id baselines know."""
    return f"{base_id}@{point.tag()}" if point.tag() else base_id


# ---- the samples: the points each claim's verdict is judged on --------------
# igb's rx path on its build_skb ring takes every frame up to the 1536-byte
# half-page buffer in one buffer; it branches on the frame against the header
# size IGB_RX_HDR_LEN (256: the legacy path copies up to 256 bytes of headers and
# attaches the rest as a page fragment above it) and on the checksum state
# (igb_rx_checksum). Counted by function_graph: the minimum and the largest frame at
# MTU 1500 with its UDP checksum offloaded (both branches in one point). Where the
# bytes end up (rx-skb-home) is judged at 60, 256 and 1514 bytes mixed in one run.
# Measured and dropped for the 25 % time budget (each experiment costs about 3 s with
# its set-up): 256 and 1000 bytes and a plain 1514 under function_graph (no branch
# of the build_skb ring lies between 61 and 1514 bytes; rx-skb-home covers those
# sizes by effect), XDP_PASS at 1514 (XDP_DROP's mix takes the XDP path's sizes),
# and separate experiments per size where one mixed run does (below).
RX_SIZES = (DEFAULT_POINT, TrafficPoint(MAX_FRAME_MTU_1500, udp_csum=True))
# Sizes mixed in one pktgen run (imix_weights) where a per-frame rule holds for
# every size alike, so one experiment takes each size's branch and the aggregate
# per-frame figure fails when any size misbehaves (a size that misbehaves by the
# exact opposite amount of another is the blind spot this leaves):
# legacy-rx on both sides of IGB_RX_HDR_LEN (all in the skb head; head + fragment),
LEGACY_MIX = (MIN_FRAME, 1000)
# the syncs on the swiotlb guest (where a sync copies: too short or too long shows),
SYNC_MIX = (MIN_FRAME, MAX_FRAME_MTU_1500)
# XDP_DROP, which runs on the buffer before any skb, whatever its size.
XDP_MIX = (MIN_FRAME, MAX_FRAME_MTU_1500)
# Every kind of tx frame: plain, and checksum offloaded (CHECKSUM_PARTIAL takes
# igb_tx_csum's context descriptor, one more descriptor per frame).
TX_POINTS = (DEFAULT_POINT, TrafficPoint(udp_csum=True))
# AF_XDP: a socket binds one queue. With the guest's 2 vCPUs igb sets up 2 combined
# channels (igb uses up to IGB_MAX_RX_QUEUES = 8 on an 82576): queue 0 (the device reduced to one
# channel, as before) and queue 1 (RSS's indirection table all on queue 1).
XSK_QUEUES = (DEFAULT_POINT, TrafficPoint(queue=1))
# Where the payload lives (skb_home): both sides of IGB_RX_HDR_LEN and the largest
# frame mixed in one run, told apart by skb->len at the hand-off (one experiment).
MIXED_SIZES = (MIN_FRAME, 256, MAX_FRAME_MTU_1500)
