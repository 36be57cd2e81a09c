"""`harness shell` / `run --keep`: the scripts put into the guest for work by
hand really send frames and read the probes (run in the shared guest)."""

import re

import pytest

from harness.investigate import GUEST_DIR, prepare_guest, usage

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module")
def prepared(guest, harness_cache):
    prepare_guest(guest, harness_cache)
    yield guest
    guest.run(f"{GUEST_DIR}/probes-off.sh", check=False)


def test_usage_names_the_ssh_line_and_the_nics(prepared):
    text = usage(prepared, "press Ctrl-C")
    assert "ssh -i " in text and "root@127.0.0.1" in text
    assert f"{prepared.nic('igb')} (igb," in text and "xdp/*.o" in text


def test_by_hand_pktgen_and_graph_probe_count_the_frames(prepared):
    igb = prepared.nic("igb")
    prepared.run(f"{GUEST_DIR}/graph-arm.sh")
    out = prepared.run(f"{GUEST_DIR}/pktgen.sh 300").stdout
    assert re.search(r"Result: OK: .*\n.*300 \(", out) or "pkts-sofar: 300" in out, out
    counts = prepared.run(f"{GUEST_DIR}/graph-read.sh").stdout
    per_func = {m.group(2): int(m.group(1)) for m in re.finditer(r"^\s*(\d+) (\w+)\(\)", counts, re.M)}
    # One napi_build_skb per frame igb received (the rx path the claims measure).
    assert per_func.get("napi_build_skb", 0) >= 300, counts
    assert igb


def test_by_hand_dma_probe_reads_hist_by_device(prepared):
    prepared.run(f"{GUEST_DIR}/probes-off.sh")
    prepared.run(f"{GUEST_DIR}/dma-arm.sh")
    prepared.run(f"{GUEST_DIR}/pktgen.sh 200")
    hist = prepared.run(f"{GUEST_DIR}/dma-read.sh").stdout
    assert "== dma_map_page_attrs (tracepoints)" in hist
    # The e1000e maps each frame it sends: its PCI address shows up as a key.
    assert re.search(r"device:\s*0000:00:05\.0", hist), hist
    prepared.run(f"{GUEST_DIR}/probes-off.sh")


def test_xdp_objects_attach_by_hand(prepared):
    igb = prepared.nic("igb")
    prepared.run(["ip", "link", "set", "dev", igb, "xdpdrv", "obj", f"{GUEST_DIR}/xdp/xdp_drop.o", "sec", "xdp"])
    try:
        assert "xdp" in prepared.run(["ip", "link", "show", "dev", igb]).stdout
    finally:
        prepared.run(["ip", "link", "set", "dev", igb, "xdpdrv", "off"])
