"""A variant's driver modules loaded into a running guest (Guest.use_kernel_modules):
the commands it gives, on a guest that records them instead of running them."""

from types import SimpleNamespace

from harness.guest.console import NicInfo
from harness.guest.vm import Guest
from harness.nics import MGMT_MAC, nic


def test_the_reloaded_driver_opens_its_nics_before_any_experiment(tmp_path):
    stock, variant = tmp_path / "stock-igb.ko", tmp_path / "no-reuse-igb.ko"
    stock.write_text("stock")
    variant.write_text("variant")
    g = Guest.__new__(Guest)
    g.kernel = SimpleNamespace(base_key="base", label="6.12 stock", module_files={"igb": stock})
    g.spec = SimpleNamespace(module_share=tmp_path / "share", modules=("igb", "e1000e"), nics=("igb", "e1000e"))
    g._loaded = {"igb": stock, "e1000e": tmp_path / "e1000e.ko"}
    g.console = SimpleNamespace(nics=None)
    g.facts = {}
    commands: list[str] = []
    listing = (f"eth0:virtio_net:{MGMT_MAC}\neth1:igb:{nic('igb').mac}\neth2:e1000e:{nic('e1000e').mac}\n")

    def run(cmd, **kw):
        commands.append(cmd)
        return SimpleNamespace(stdout=listing if "/sys/class/net" in cmd else "", rc=0)

    g.run = run
    no_reuse = SimpleNamespace(base_key="base", label="6.12 no-reuse", key="nr", module_files={"igb": variant})
    assert g.use_kernel_modules(no_reuse) == ["igb"]
    assert commands[0] == "rmmod igb && insmod /lib/modules/variants/nr/igb.ko"
    # Opened at once, as init does at boot: igb_open's ring fill is not inside the
    # first experiment's leak window. Only the reloaded NIC: never eth0 (management).
    assert commands[-1] == "ip link set dev eth1 up"
    assert g.nics == [NicInfo("eth0", "virtio_net", MGMT_MAC), NicInfo("eth1", "igb", nic("igb").mac),
                      NicInfo("eth2", "e1000e", nic("e1000e").mac)]
