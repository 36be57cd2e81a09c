"""What igb's source says its rx buffers look like, computed from the source
tree the kernel was built from (igb.h), the kernel config and struct sizes from
BTF, so a test compares a measurement with the code rather than with a literal.

Modelled on 6.12 igb.h for PAGE_SIZE 4096 (x86):
  IGB_SKB_PAD = igb_skb_pad() = igb_compute_pad(IGB_RXBUFFER_1536 - NET_IP_ALIGN)
              = SKB_WITH_OVERHEAD(ALIGN(1536, PAGE_SIZE / 2)) - 1536
  igb_rx_offset() = IGB_SKB_PAD when the ring uses build_skb (the default), else 0
  rx buffer size synced for the device = IGB_MAX_FRAME_BUILD_SKB = 1536 - NET_IP_ALIGN
If igb.h no longer has these definitions the layout is unknown, not guessed."""

from __future__ import annotations

import re
from dataclasses import dataclass

from harness.errors import HarnessError

PAGE_SIZE = 4096
NET_IP_ALIGN_X86 = 0


class UnknownLayout(HarnessError):
    pass


@dataclass(frozen=True)
class IgbRxLayout:
    headroom: int  # igb_rx_offset() with build_skb: bytes before the frame in its half page
    rx_buf_len: int  # bytes the device may write (and that are synced for the device)
    half_page: int  # truesize of one buffer
    reasoning: str


def _define(text: str, name: str) -> str:
    m = re.search(rf"^#define\s+{name}\s+(.+?)\s*(/\*.*)?$", text, re.M)
    if not m:
        raise UnknownLayout(f"igb.h has no #define {name}: the layout model no longer matches the source")
    return m.group(1).strip()


IGB_H = "drivers/net/ethernet/intel/igb/igb.h"


def igb_rx_layout(igb_h: str, config_text: str, skb_shared_info_size: int) -> IgbRxLayout:
    """The layout from the text of igb.h (the kernel artifact keeps the one it was built from)."""
    if "igb_compute_pad(rx_buf_len)" not in igb_h or "IGB_SKB_PAD\tigb_skb_pad()" not in igb_h:
        raise UnknownLayout("igb.h does not compute IGB_SKB_PAD with igb_skb_pad()/igb_compute_pad() "
                            "as in 6.12: the layout model does not apply")
    buf_1536 = int(_define(igb_h, "IGB_RXBUFFER_1536"))
    buf_2048 = int(_define(igb_h, "IGB_RXBUFFER_2048"))
    ts_hdr = int(_define(igb_h, "IGB_TS_HDR_LEN"))
    shift = re.search(r"^CONFIG_X86_L1_CACHE_SHIFT=(\d+)$", config_text, re.M)
    if not shift:
        raise UnknownLayout("config has no CONFIG_X86_L1_CACHE_SHIFT (not an x86 kernel?)")
    cache_bytes = 1 << int(shift.group(1))

    def align(x: int, a: int) -> int:
        return (x + a - 1) // a * a

    def with_overhead(x: int) -> int:  # SKB_WITH_OVERHEAD
        return x - align(skb_shared_info_size, cache_bytes)

    net_skb_pad = max(32, cache_bytes)
    if net_skb_pad + ts_hdr + buf_1536 > with_overhead(buf_2048):
        raise UnknownLayout("IGB_2K_TOO_SMALL_WITH_PADDING holds on this config: 3K buffers (not modelled)")
    rx_buf_len = buf_1536 - NET_IP_ALIGN_X86
    half = align(rx_buf_len, PAGE_SIZE // 2)
    headroom = with_overhead(half) - rx_buf_len
    why = (f"igb_compute_pad({rx_buf_len}) = SKB_WITH_OVERHEAD({half}) - {rx_buf_len} = {half} - "
           f"SKB_DATA_ALIGN(sizeof(struct skb_shared_info) = {skb_shared_info_size}) - {rx_buf_len} = {headroom}")
    return IgbRxLayout(headroom, rx_buf_len, half, why)


# The ring states igb_rx_bufsz() tells apart, as the predicates it tests:
# build_skb is the default at MTU 1500, legacy-rx clears it (igb_set_rx_buffer_len
# returns before setting anything), and a frame over IGB_MAX_FRAME_BUILD_SKB
# (MTU 3000) sets the large-buffer flag on a build_skb ring.
RING_MODES = {
    "build_skb": {"ring_uses_build_skb"},
    "legacy": set(),
    "large": {"ring_uses_build_skb", "ring_uses_large_buffer"},
}
BUFSZ_FN = re.compile(r"static inline unsigned int igb_rx_bufsz\(struct igb_ring \*ring\)\s*\{(.*?)\n\}", re.S)
BUFSZ_BRANCH = re.compile(r"if \((\w+)\(ring\)\)\s*return (\w+);")
BUFSZ_DEFAULT = re.compile(r"return (\w+);\s*$")


def _eval_define(igb_h: str, name: str, seen: tuple[str, ...] = ()) -> int:
    """A #define of igb.h as a number: other defines and NET_IP_ALIGN substituted, then
    only integer arithmetic evaluated."""
    if name == "NET_IP_ALIGN":
        return NET_IP_ALIGN_X86
    if name in seen:
        raise UnknownLayout(f"igb.h: #define {name} refers to itself")
    expr = _define(igb_h, name)
    expr = re.sub(r"\b[A-Z_][A-Z0-9_]*\b", lambda m: str(_eval_define(igb_h, m.group(0), (*seen, name))), expr)
    if not re.fullmatch(r"[\d\s()+\-*/]+", expr):
        raise UnknownLayout(f"igb.h: #define {name} is not integer arithmetic: {expr!r}")
    return int(eval(expr, {"__builtins__": {}}, {}))  # digits, spaces, parentheses and + - * / only


def igb_rx_buffer_write(igb_h: str) -> int:
    """IGB_RX_BUFFER_WRITE: igb_clean_rx_irq() hands buffers back (one RDT write) once
    this many are cleaned, and once more at the end of the poll."""
    return _eval_define(igb_h, "IGB_RX_BUFFER_WRITE")


def igb_rx_bufsz(igb_h: str) -> dict[str, int]:
    """What igb_rx_bufsz() returns for each ring mode (RING_MODES), read from igb.h:
    its `if (<predicate>(ring)) return <DEFINE>;` branches in order, then the default
    `return`. The bytes igb syncs for the device on each refill (igb_alloc_rx_buffers)."""
    m = BUFSZ_FN.search(igb_h)
    if not m:
        raise UnknownLayout("igb.h has no `static inline unsigned int igb_rx_bufsz(struct igb_ring *ring)`")
    body = m.group(1)
    branches = BUFSZ_BRANCH.findall(body)
    default = BUFSZ_DEFAULT.search(body)
    if not branches or not default:
        raise UnknownLayout("igb_rx_bufsz() is not a chain of `if (ring_uses_*(ring)) return X;` as in 6.12")
    out = {}
    for mode, true_predicates in RING_MODES.items():
        chosen = next((size for pred, size in branches if pred in true_predicates), default.group(1))
        out[mode] = _eval_define(igb_h, chosen)
    return out
