"""The AF_XDP receiver's side of the xsk experiments: its snapshots, the rule that
tells a receiver's loss from a kernel that did not deliver, and the report's socket
table (the lab's one retry of a measurement failure: test_retries.py)."""

from __future__ import annotations

from harness.measurement.xsk import XskSnapshot, receiver_loss
from harness.report.report import af_xdp_markdown, af_xdp_rows

STATS = {"rx_dropped": 0, "rx_ring_full": 0, "rx_fill_ring_empty_descs": 0, "rx_invalid_descs": 0}


def snapshot(read: int, delivered: int, unread: int = 0, drained: bool = True, **stats: int) -> XskSnapshot:
    doc = {"snapshot": 1, "read": read, "bytes": 60 * read, "delivered": delivered, "unread": unread,
           "drained": drained, "wakeups": 0, "stats": {**STATS, **stats}, "fill_queued": 4000, "pending": 0}
    return XskSnapshot.parse(doc)


def test_the_traffic_share_is_the_difference_of_two_snapshots():
    before = snapshot(read=7, delivered=7, rx_dropped=1)
    after = snapshot(read=2007, delivered=2007, rx_dropped=3)
    got = after.since(before)
    assert (got.read, got.delivered, got.bytes, got.unread) == (2000, 2000, 120_000, 0)
    assert got.stats["rx_dropped"] == 2 and got.stats["rx_ring_full"] == 0
    assert receiver_loss(got) is None


def test_frames_delivered_but_not_read_are_the_receivers_loss():
    # Issue 19's symptom: the kernel put every frame on the ring, the receiver read none.
    got = snapshot(read=0, delivered=2000, unread=2000).since(snapshot(0, 0))
    why = receiver_loss(got)
    assert why and "read 0 of the 2000 frames the kernel put on its rx ring" in why
    assert "2000 left unread" in why and "rx_ring_full 0" in why


def test_entries_left_on_the_ring_or_a_drain_that_never_settled_fail_the_receiver():
    assert receiver_loss(snapshot(read=2000, delivered=2000, unread=3).since(snapshot(0, 0)))
    assert "did not go quiet" in receiver_loss(snapshot(2000, 2000, drained=False).since(snapshot(0, 0)))


def test_a_kernel_that_did_not_deliver_is_not_the_receivers_loss():
    # Frames that never reached the socket (XDP_PASSed up the stack, or dropped by the
    # kernel) are the kernel's: the rules judge them, the receiver did not fail.
    assert receiver_loss(snapshot(read=0, delivered=0).since(snapshot(0, 0))) is None
    got = snapshot(read=10, delivered=10, rx_dropped=1990).since(snapshot(0, 0))
    assert receiver_loss(got) is None and got.stats["rx_dropped"] == 1990


def test_frames_undelivered_because_the_receivers_ring_was_full_are_its_loss():
    why = receiver_loss(snapshot(read=1500, delivered=1500, rx_ring_full=500).since(snapshot(0, 0)))
    assert why and "fell behind (rx_ring_full moved)" in why and "1500 read of 1500 delivered" in why


def test_a_fill_ring_run_dry_with_room_on_the_rx_ring_is_the_kernels():
    # Buffers the kernel never gave back (a zero-copy driver leaking umem frames): the
    # receiver had returned all it read, so the rules judge the frames that went missing.
    got = snapshot(read=1500, delivered=1500, rx_fill_ring_empty_descs=500).since(snapshot(0, 0))
    assert receiver_loss(got) is None and got.stats["rx_fill_ring_empty_descs"] == 500


def test_descriptors_outside_the_umem_are_counted_apart():
    before = XskSnapshot.parse({"read": 0, "bytes": 0, "delivered": 0, "unread": 0, "drained": True,
                                "wakeups": 0, "stats": STATS})  # a receiver from before bad_descs
    after = XskSnapshot.parse({"read": 2000, "bytes": 119940, "delivered": 2000, "unread": 0, "drained": True,
                               "wakeups": 0, "stats": STATS, "bad_descs": 1})
    got = after.since(before)
    assert got.bad_descs == 1 and got.to_json()["bad_descs"] == 1 and receiver_loss(got) is None


def test_the_report_shows_delivered_read_and_the_sockets_statistics():
    sock = {"driver": "igb", "zerocopy": True, "read": 2000, "bytes": 120000, "delivered": 2000, "unread": 0,
            "drained": True, "wakeups": 0, "stats": {**STATS, "rx_dropped": 5}}
    record = {"experiments": [{"name": "xsk-zc", "frames": 2000, "af_xdp": sock}, {"name": "rx", "frames": 2000}]}
    (row,) = af_xdp_rows(record)
    assert (row["mode"], row["delivered"], row["read"], row["rx_dropped"]) == ("zero-copy", 2000, 2000, 5)
    text = "\n".join(af_xdp_markdown(record))
    assert "| xsk-zc | zero-copy | 2000 | 2000 | 2000 | 0 | 5 | 0 | 0 | 0 | 0 |" in text
    assert "producer index" in text
    assert af_xdp_markdown({"experiments": [{"name": "rx", "frames": 1}]}) == []
