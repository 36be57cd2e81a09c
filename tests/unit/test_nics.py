"""The NIC catalogue: one entry per emulated NIC, the facts every other module reads."""

import itertools

import pytest

from harness.errors import HarnessError
from harness.guest.qemu_cmd import MODULES_SLOT, ROOT_DISK_SLOT, nic_args
from harness.nics import (
    CATALOGUE,
    DEFAULT_NICS,
    MGMT_MAC,
    MGMT_MODELS,
    MGMT_SLOT,
    boot_modules,
    hub_apart,
    management_model,
    module_dirs,
    nic,
    parse_nics,
)


def test_five_nics_whose_drivers_matter():
    assert set(CATALOGUE) == {"igb", "e1000e", "e1000", "virtio-net", "vmxnet3"}
    assert DEFAULT_NICS == ("igb", "e1000e")


def test_slots_and_macs_are_unique_and_clear_of_the_harness_own_devices():
    slots = [n.slot for n in CATALOGUE.values()]
    assert len(set(slots)) == len(slots)
    assert not {MGMT_SLOT, ROOT_DISK_SLOT, MODULES_SLOT} & set(slots)
    macs = [n.mac for n in CATALOGUE.values()]
    assert len(set(macs)) == len(macs) and MGMT_MAC not in macs
    assert nic("igb").mac == "52:54:00:12:34:04" and nic("igb").pci_address == "0000:00:04.0"


def test_every_entry_names_its_rx_path():
    for n in CATALOGUE.values():
        assert n.polls and len(n.rx_roots) == 2, n.model
        assert n.kconfig.startswith("CONFIG_") and n.rx_source.endswith(".c")
        assert n.source_dir.startswith("drivers/net")


def test_virtio_net_is_built_in_and_the_rest_are_modules():
    # virtio-net is also the management NIC's driver, and its directory is all of drivers/net
    assert "virtio_net" not in module_dirs() and nic("virtio-net").module is None
    assert module_dirs()["vmxnet3"] == "drivers/net/vmxnet3"


def test_nic_args_come_from_the_catalogue():
    args = nic_args(("virtio-net", "vmxnet3"))
    assert "virtio-net-pci,netdev=nut0,mac=52:54:00:12:34:07,bus=pcie.0,addr=0x7,disable-legacy=on," \
           "iommu_platform=on" in args
    assert "vmxnet3,netdev=nut1,mac=52:54:00:12:34:08,bus=pcie.0,addr=0x8" in args


def test_topology_is_parsed_and_checked():
    assert parse_nics("igb, e1000e,igb") == ("igb", "e1000e")
    with pytest.raises(HarnessError, match="unknown NIC 'ixgbe'; known: igb, e1000e, e1000, virtio-net, vmxnet3"):
        parse_nics("igb,ixgbe")
    with pytest.raises(HarnessError, match="at least two NICs"):
        parse_nics("igb")


def test_the_kconfig_fragment_builds_every_catalogue_module():
    from harness.paths import CONFIGS_DIR

    text = (CONFIGS_DIR / "nics.config").read_text()
    for n in CATALOGUE.values():
        if n.module:
            assert f"{n.kconfig}=m" in text.splitlines(), n.model


def test_boot_modules_keep_the_management_nic_and_pktgen_of_a_distro_kernel():
    distro = ("virtio_net", "pktgen", "e1000", "e1000e", "igb", "vmxnet3")
    assert boot_modules(distro, ("igb", "e1000e")) == ("virtio_net", "pktgen", "e1000e", "igb")
    assert boot_modules(distro, ("vmxnet3", "e1000")) == ("virtio_net", "pktgen", "e1000", "vmxnet3")
    # A self-built kernel's modules are NIC drivers only (virtio_net is built in).
    assert boot_modules(("e1000", "e1000e", "igb", "vmxnet3"), ("igb", "e1000")) == ("e1000", "igb")
    # With virtio-net under test the management NIC is another model, whose driver loads too.
    assert boot_modules(("e1000", "e1000e", "igb", "vmxnet3"), ("igb", "virtio-net")) == ("e1000e", "igb")


def test_the_management_nic_shares_no_driver_with_a_nic_under_test_while_a_model_is_left():
    assert management_model(("igb", "e1000e")) == "virtio-net"
    assert management_model(("virtio-net", "e1000e")) == "igb"
    assert management_model(("virtio-net", "igb", "e1000e", "vmxnet3")) == "e1000"
    assert set(MGMT_MODELS) == set(CATALOGUE)
    for pair in itertools.permutations(CATALOGUE, 2):
        assert management_model(pair) not in pair
    # Every model under test: nothing is left, virtio-net carries ssh beside its NIC under test.
    assert management_model(tuple(CATALOGUE)) == "virtio-net"


def test_a_measurement_that_must_not_share_its_driver_with_ssh_gets_the_pair_alone():
    every = tuple(CATALOGUE)
    assert hub_apart(every, "igb", "e1000e") == every  # the management NIC is virtio-net, not igb's driver
    assert hub_apart(every, "virtio-net", "e1000e") == ("virtio-net", "e1000e")
    assert management_model(hub_apart(every, "virtio-net", "e1000e")) == "igb"
    assert hub_apart(("virtio-net", "e1000e"), "virtio-net", "e1000e") == ("virtio-net", "e1000e")


def test_tail_registers_of_models_sharing_a_trace_event_never_overlap():
    # QEMU's igb reports its register writes through e1000e's event: a write is told
    # apart only by its offset (aliases already resolved by QEMU to the canonical one).
    from harness.nics import CATALOGUE

    traced = [n for n in CATALOGUE.values() if n.device_trace is not None]
    assert {n.model for n in traced} >= {"igb", "e1000e"}
    seen: dict[int, str] = {}
    for n in traced:
        for regs in (n.device_trace.rx_tail, n.device_trace.tx_tail):
            for offset in regs.offsets():
                assert seen.setdefault(offset, n.model) == n.model, f"{offset:#x}: {seen[offset]} and {n.model}"


def test_the_nics_that_need_a_guest_of_their_own_are_measured_last():
    from harness.survey.techniques import apart_last, guest_hub

    every = ("igb", "e1000e", "e1000", "virtio-net", "vmxnet3")
    assert apart_last(every, every) == ["igb", "e1000e", "e1000", "vmxnet3", "virtio-net"]
    assert apart_last(("virtio-net", "e1000e"), ("virtio-net", "e1000e")) == ["virtio-net", "e1000e"]
    # A survey shard's NICs, of the whole hub: virtio-net still needs its own guest.
    assert apart_last(("virtio-net", "igb"), every) == ["igb", "virtio-net"]
    assert apart_last(("virtio-net",), every) == ["virtio-net"]
    assert guest_hub("virtio-net", every) == ("virtio-net", "e1000e") and guest_hub("igb", every) == every


def test_a_shard_runs_only_nics_of_its_hub():
    from harness.nics import parse_only

    assert parse_only(None, DEFAULT_NICS) is None
    assert parse_only(" e1000e, e1000e", DEFAULT_NICS) == ("e1000e",)
    with pytest.raises(HarnessError, match=r"--only igb,vmxnet3: vmxnet3 not on the hub \(--nics igb,e1000e\)"):
        parse_only("igb,vmxnet3", DEFAULT_NICS)
