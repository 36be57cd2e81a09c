"""The AF_XDP receiver on the real kernel (issue 19): it reads every frame the kernel
delivers however long the traffic takes to start, answers snapshots with the kernel's
own count beside its own, and leaves nothing behind."""

import pytest

from harness.errors import Unmeasurable
from harness.measurement.netcheck import bring_up
from harness.measurement.traffic import PktgenConfig, run_pktgen
from harness.measurement.xsk import OUT, one_channel, receiver_loss, xsk_receiver

pytestmark = pytest.mark.vm

FRAMES = 500
# Longer than the old receiver's idle timeout (5 s from its bind), which a slow host
# spent on link bring-up and the first arming of function_graph: it then read nothing
# while the kernel delivered every frame, and a stock kernel came out refuted.
LATE_START_S = 8


@pytest.mark.parametrize("mode", ["copy", "zerocopy"])
def test_receiver_reads_every_frame_of_traffic_that_starts_late(guest, harness_cache, mode):
    igb, e1000e = guest.nic("igb"), guest.nic("e1000e")
    try:
        # one channel: pktgen's one flow lands on queue 0, the socket's
        with one_channel(guest, igb), xsk_receiver(guest, igb, "igb", mode, harness_cache) as rx:
            guest.run(["sleep", str(LATE_START_S)])
            bring_up(guest, [e1000e, igb])
            before = rx.snapshot()
            traffic = run_pktgen(guest, e1000e, igb, PktgenConfig(count=FRAMES, rate_pps=5_000))
            got = rx.snapshot().since(before)
    except Unmeasurable as e:  # a kernel whose igb has no AF_XDP zero-copy (before 6.14)
        pytest.skip(str(e))
    print(f"\n{mode} (zero-copy in effect: {rx.zerocopy}): {got.to_json()}")
    assert receiver_loss(got) is None
    assert got.delivered == got.read == traffic.received == FRAMES
    assert got.bytes == FRAMES * 60 and got.unread == 0
    assert rx.zerocopy == (mode == "zerocopy")
    # Stopped: no receiver left in the guest, no program left on igb.
    assert guest.run(["pgrep", "-x", "xsk_rx"], check=False).rc == 1
    assert '"xdp"' not in guest.run(["ip", "-j", "link", "show", "dev", igb]).stdout
    assert '"snapshot": 2,' in guest.run(["cat", OUT]).stdout
