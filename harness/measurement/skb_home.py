"""Where the bytes an rx driver hands to the stack live: in the receive buffer the
device wrote (no copy), or anywhere else (a copy, by whatever route). Recognised by
the effect, not by which allocator ran.

Two witnesses in one trace instance of their own, during the traffic only:
  - the DMA API's `dma:dma_sync_single_for_cpu` events of the receiving device: the
    bus address and length of every buffer the driver took over from the device
    (with direct DMA, x86-64 without an IOMMU, the bus address is the physical one);
  - an event probe on `net:napi_gro_receive_entry` (the hand-off to GRO, before GRO
    touches the skb): skb->data and skb->len at the offsets the kernel's BTF gives,
    the IPv4 source address skb->data points at (only the traffic's frames count:
    the guest's ssh is handed off too), and `page_offset_base` (the direct map's base).
A frame stayed home when skb->data - page_offset_base, its physical address, lies in
a range the driver synced for the CPU in the same traffic. Rx pages are reused, so
the ranges repeat; a copy lands in memory the device never wrote (a napi frag, a
slab object), which no sync covers.

An event probe rides the tracepoint, not ftrace: a kprobe on gro_receive_skb's entry
crashed 7.3.4 in this guest (the kprobe-and-ftrace bug of README's known issues,
even with function_graph off), so no kprobe is used."""

from __future__ import annotations

import bisect
import re
from collections import defaultdict

from harness.errors import Unmeasurable
from harness.guest.vm import Guest
from harness.measurement.probes import Observation, T, teardown_tracer, tracefs_script
from harness.measurement.traffic import SRC_IP
from harness.nics import nic

INSTANCE = f"{T}/instances/harness_skb_home"
EVENT = "harness/skb_home"
HANDOFF = "net/napi_gro_receive_entry"
SYNC = "dma/dma_sync_single_for_cpu"
MEMBER_LINE = re.compile(r"^\s+'([^']+)' type_id=\d+ bits_offset=(\d+)")
HANDOFF_LINE = re.compile(r"data=0x([0-9a-f]+) len=(\d+) src=0x([0-9a-f]+) pob=0x([0-9a-f]+)")
SYNC_LINE = re.compile(r"dma_sync_single_for_cpu: (\S+) dir=\w+ dma_addr=([0-9a-f]+) size=(\d+)")
# The x86-64 direct map's base with 4-level paging and no KASLR of the memory map.
DEFAULT_PAGE_OFFSET = 0xFFFF888000000000


def member_offsets(btf_raw: str, struct: str, members: tuple[str, ...]) -> dict[str, int]:
    """Byte offsets of direct members of `struct` in `bpftool btf dump ... format raw`
    (the first definition of that name)."""
    lines = btf_raw.splitlines()
    head = re.compile(rf"^\[\d+\] STRUCT '{re.escape(struct)}' size=\d+ vlen=\d+")
    start = next((i for i, line in enumerate(lines) if head.match(line)), None)
    if start is None:
        return {}
    out: dict[str, int] = {}
    for line in lines[start + 1:]:
        m = MEMBER_LINE.match(line)
        if not m:
            break
        if m.group(1) in members and m.group(1) not in out:
            out[m.group(1)] = int(m.group(2)) // 8
    return out


def ipv4_le(address: str) -> int:
    """An IPv4 address as the u32 a little-endian load of its 4 header bytes gives."""
    return int.from_bytes(bytes(int(b) for b in address.split(".")), "little")


def frames_at_home(trace: str, device: str, src_ip: str = SRC_IP) -> dict[int, list[int]]:
    """skb->len -> [frames whose data lay in a range `device` synced for the CPU, frames],
    for the frames from `src_ip` (the traffic's; other NICs hand off too: the guest's ssh)."""
    ranges: list[tuple[int, int]] = []
    handoffs: list[tuple[int, int]] = []  # (physical address of skb->data, skb->len)
    src = ipv4_le(src_ip)
    for line in trace.splitlines():
        if (s := SYNC_LINE.search(line)) and s.group(1) == device:
            start = int(s.group(2), 16)
            ranges.append((start, start + int(s.group(3))))
        elif (h := HANDOFF_LINE.search(line)) and int(h.group(3), 16) == src:
            handoffs.append((int(h.group(1), 16) - int(h.group(4), 16), int(h.group(2))))
    ranges.sort()
    starts = [a for a, _ in ranges]
    by_len: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for phys, length in handoffs:
        i = bisect.bisect_right(starts, phys) - 1
        # the ranges of one buffer repeat (reuse): any range that starts at or before phys may hold it
        home = any(a <= phys < b for a, b in ranges[max(0, i - 64):i + 1])
        by_len[length][0] += home
        by_len[length][1] += 1
    return dict(by_len)


class SkbHomeProbe:
    """Frames the receiving driver handed to GRO, by skb->len, and how many of them
    lay in a buffer the device wrote (see the module's docstring)."""

    name = "skb_home"

    def __init__(self, model: str) -> None:
        self.model = model

    def arm(self, guest: Guest) -> None:
        have = guest.run(["cat", f"{T}/available_events"]).stdout.split()
        missing = [e for e in (SYNC, HANDOFF) if e.replace("/", ":") not in have]
        if missing:
            raise Unmeasurable(f"needs the tracepoints {', '.join(missing)} (dma:* since Linux 6.10)")
        cmdline = guest.run(["cat", "/proc/cmdline"]).stdout
        if "swiotlb=force" in cmdline or "intel_iommu=on" in cmdline:
            raise Unmeasurable("needs direct DMA (bus address = physical address); this guest bounces or remaps")
        syms = set(guest.run("awk '{print $3}' /proc/kallsyms | grep -x page_offset_base", check=False).stdout.split())
        btf = guest.run("bpftool btf dump file /sys/kernel/btf/vmlinux format raw | "
                        "grep -A200 \"^\\[[0-9]*\\] STRUCT 'sk_buff' size=\"", check=False).stdout
        off = member_offsets(btf, "sk_buff", ("data", "len"))
        if set(off) != {"data", "len"}:
            raise Unmeasurable("struct sk_buff's data and len offsets not in the kernel's BTF "
                               "(needs CONFIG_DEBUG_INFO_BTF)")
        d = off["data"]  # skb->data: the IP header at the hand-off (its source address at +12)
        pob = "pob=@page_offset_base:x64" if "page_offset_base" in syms else f"pob={DEFAULT_PAGE_OFFSET:#x}:x64"
        teardown_tracer(guest)
        self.cleanup(guest)
        device = nic(self.model).pci_address
        system, event = HANDOFF.split("/")
        probe = (f"e:{EVENT} {system}.{event} data=+{d}($skbaddr):x64 len=+{off['len']}($skbaddr):u32 "
                 f"src=+12(+{d}($skbaddr)):x32 {pob}")
        tracefs_script(guest, f"""mkdir -p {INSTANCE}
echo 0 > {INSTANCE}/tracing_on
echo 4096 > {INSTANCE}/buffer_size_kb
echo '{probe}' >> {T}/dynamic_events
echo 'device == "{device}"' > {INSTANCE}/events/{SYNC}/filter
echo 1 > {INSTANCE}/events/{SYNC}/enable
echo 1 > {INSTANCE}/events/{EVENT}/enable
echo > {INSTANCE}/trace
echo 1 > {INSTANCE}/tracing_on""")

    def disarm(self, guest: Guest) -> None:
        guest.run(f"echo 0 > {INSTANCE}/tracing_on", check=False)

    def collect(self, guest: Guest) -> list[Observation]:
        trace = guest.run(["cat", f"{INSTANCE}/trace"]).stdout
        lost = re.search(r"entries-in-buffer/entries-written: (\d+)/(\d+)", trace)
        if lost and lost.group(1) != lost.group(2):
            raise Unmeasurable(f"the trace instance dropped events ({lost.group(1)} of {lost.group(2)} kept)")
        by_len = frames_at_home(trace, nic(self.model).pci_address)
        home, total = sum(v[0] for v in by_len.values()), sum(v[1] for v in by_len.values())
        driver = nic(self.model).driver
        how = (f"event probe on {HANDOFF.replace('/', ':')} (skb->data, skb->len at BTF offsets) against "
               f"dma:dma_sync_single_for_cpu ranges of {driver}'s device, direct DMA: physical addresses")
        return [Observation("skb_home:handoffs", total, driver, how,
                            {"by_len": {str(k): v[1] for k, v in sorted(by_len.items())}}),
                Observation("skb_home:in_rx_buffer", home, driver, how,
                            {"by_len": {str(k): v[0] for k, v in sorted(by_len.items())}})]

    def cleanup(self, guest: Guest) -> None:
        guest.run(f"[ -d {INSTANCE} ] && {{ echo 0 > {INSTANCE}/events/{EVENT}/enable; "
                  f"echo 0 > {INSTANCE}/events/{SYNC}/enable; rmdir {INSTANCE}; }}; "
                  f"echo '-:{EVENT}' >> {T}/dynamic_events 2>/dev/null; true", check=False)
