"""Where the payload lives at the hand-off to GRO (measurement/skb_home.py): BTF
member offsets and the matching of skb->data against the buffers the driver synced
for the CPU, on lines in the format tracefs prints them."""

from harness.measurement.skb_home import frames_at_home, member_offsets

BTF = """\
[4118] STRUCT 'sk_buff' size=232 vlen=28
\t'(anon)' type_id=5432 bits_offset=0
\t'(anon)' type_id=5433 bits_offset=128
\t'len' type_id=4 bits_offset=896
\t'data_len' type_id=4 bits_offset=928
\t'head' type_id=98 bits_offset=1536
\t'data' type_id=98 bits_offset=1600
[4119] STRUCT 'sk_buff_head' size=24 vlen=2
\t'len' type_id=4 bits_offset=128
"""

POB = 0xFFFF888000000000
IGB, E1000E = "0000:00:04.0", "0000:00:05.0"


def sync(device: str, dma: int, size: int) -> str:
    return (f"          <idle>-0       [001] ..s2.   812.113321: dma_sync_single_for_cpu: {device} "
            f"dir=FROM_DEVICE dma_addr={dma:x} size={size}")


PKTGEN_SRC = 0x010012C6  # 198.18.0.1 loaded as a little-endian u32


def handoff(phys: int, length: int, src: int = PKTGEN_SRC) -> str:
    return (f"          <idle>-0       [001] ..s2.   812.113400: skb_home: (net.napi_gro_receive_entry) "
            f"data={POB + phys:#x} len={length} src={src:#x} pob={POB:#x}")


def test_member_offsets_of_the_first_definition_only():
    assert member_offsets(BTF, "sk_buff", ("data", "len")) == {"data": 200, "len": 112}
    assert member_offsets(BTF, "sk_buff_head", ("len",)) == {"len": 16}
    assert member_offsets(BTF, "net_device", ("mtu",)) == {}


def test_frames_in_the_synced_buffer_stay_home():
    # Two halves of one page, each reused: the frame starts where the sync starts, skb->data 14 bytes on.
    trace = "\n".join([
        sync(IGB, 0x3A4C040, 60), handoff(0x3A4C040 + 14, 46),
        sync(IGB, 0x3A4C840, 1514), handoff(0x3A4C840 + 14, 1500),
        sync(IGB, 0x3A4C040, 256), handoff(0x3A4C040 + 14, 242),
        # a copy: the bytes handed on are in memory no sync of igb covers (a napi frag)
        sync(IGB, 0x3A4C840, 1514), handoff(0x5000000 + 64 + 14, 1500),
        # another device's buffer is not igb's
        sync(E1000E, 0x6000000, 60), handoff(0x6000000 + 14, 46),
        # the guest's ssh (another source) is not the traffic: not counted
        handoff(0x7000000 + 14, 46, src=0x0202000A),
    ])
    assert frames_at_home(trace, IGB) == {46: [1, 2], 1500: [1, 2], 242: [1, 1]}


def test_the_source_address_as_the_kprobe_reads_it():
    from harness.measurement.skb_home import ipv4_le

    assert ipv4_le("198.18.0.1") == PKTGEN_SRC


def test_no_handoff_no_frames():
    assert frames_at_home(sync(IGB, 0x1000, 60), IGB) == {}
