"""Every NIC model of the catalogue on a guest of its own: QEMU's device bound to
the catalogue's driver, found by its MAC, receiving frames from a peer NIC on the
hub, with the counts attributed to its own poll function and PCI device."""

import pytest

from harness.measurement.dma_probe import DmaProbe
from harness.measurement.measure import RunContext, measure_rx
from harness.measurement.probes import GraphProbe
from harness.measurement.traffic import PktgenConfig
from harness.nics import CATALOGUE, nic
from harness.survey.techniques import peer_of

pytestmark = pytest.mark.vm
FRAMES = PktgenConfig(count=500, rate_pps=2_500)


@pytest.mark.parametrize("model", list(CATALOGUE))
def test_nic_model_receives_on_its_own_driver(model, fresh_guest):
    models = (model, "e1000e") if model != "e1000e" else ("e1000e", "igb")
    g = fresh_guest(nics=models)
    n, peer = nic(model), peer_of(model, models)
    ifname = g.nic(model)  # raises unless the MAC's interface is bound to the catalogue's driver
    info = g.run(["ethtool", "-i", ifname]).stdout
    assert f"driver: {n.driver}" in info and f"bus-info: {n.pci_address}" in info, info
    roots = {p: nic(m).driver for m in models for p in nic(m).polls}
    m = measure_rx(g, RunContext.for_guest(g, "nic-models"), [GraphProbe(roots=roots),
                                                               DmaProbe(drivers=tuple(nic(x).driver for x in models))],
                   src=peer, dst=model, pktgen=FRAMES, max_loss=0.01)
    assert m.traffic.received >= 495, m.traffic.loss_report()
    polls = sum(m.value(f"calls:{p}", n.driver) for p in n.polls if not m.rows(f"calls:{p}", n.driver).empty)
    assert polls > 0, f"{n.polls} never entered while {model} received"
    # every frame became an skb one way or the other, under this driver's own poll function
    skbs = sum(m.value(f"calls:{f}", n.driver) for f in ("napi_build_skb", "build_skb", "napi_alloc_skb",
                                                           "__netdev_alloc_skb", "__napi_alloc_skb")
               if not m.rows(f"calls:{f}", n.driver).empty)
    assert skbs >= 0.99 * m.traffic.received, skbs
    # the sender's DMA is the sender's: the receiver's device never shows the sender's tx maps
    tx_dirs = [r["dir"] for r in __import__("json").loads(m.rows("dma_map_page_attrs", n.driver).iloc[0].detail or
                                                          '{"by_dir_len": []}')["by_dir_len"]]
    assert "to_device" not in tx_dirs, tx_dirs
