from pathlib import Path

import pytest

from harness.guest.qemu_cmd import GuestSpec, kernel_cmdline, qemu_argv


def spec(**kw) -> GuestSpec:
    base = dict(kernel_image=Path("/k/vmlinux"), rootfs=Path("/i/rootfs.ext4"), accel="tcg", ssh_port=40022,
                qmp_socket=Path("/w/qmp.sock"))
    return GuestSpec(**{**base, **kw})


def arg_after(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_tcg_uses_multithreaded_tcg_and_cpu_max():
    argv = qemu_argv(spec())
    assert "tcg,thread=multi" in arg_after(argv, "-accel")
    assert arg_after(argv, "-cpu") == ["max"]


def test_kvm_uses_host_cpu():
    argv = qemu_argv(spec(accel="kvm"))
    assert arg_after(argv, "-accel") == ["kvm"]
    assert arg_after(argv, "-cpu") == ["host"]


def test_unknown_accel_rejected():
    with pytest.raises(ValueError, match="unknown accel"):
        qemu_argv(spec(accel="hvf"))


def test_nics_under_test_share_one_hub_and_have_fixed_slots():
    devices = arg_after(qemu_argv(spec()), "-device")
    netdevs = arg_after(qemu_argv(spec()), "-netdev")
    assert "hubport,id=nut0,hubid=0" in netdevs and "hubport,id=nut1,hubid=0" in netdevs
    igb = next(d for d in devices if d.startswith("igb,"))
    e1000e = next(d for d in devices if d.startswith("e1000e,"))
    assert "netdev=nut0" in igb and "addr=0x4" in igb
    assert "netdev=nut1" in e1000e and "addr=0x5" in e1000e


def test_management_nic_is_restricted_and_bound_to_loopback_only():
    netdevs = arg_after(qemu_argv(spec(ssh_port=41234)), "-netdev")
    (user,) = [n for n in netdevs if n.startswith("user,")]
    assert "restrict=on" in user
    assert "hostfwd=tcp:127.0.0.1:41234-:22" in user
    # No other host-facing backend at all.
    assert all(n.startswith(("user,", "hubport,")) for n in netdevs)


def mgmt_device(argv: list[str]) -> str:
    (device,) = [d for d in arg_after(argv, "-device") if "netdev=mgmt" in d]
    return device


def test_the_management_nic_is_a_plain_virtio_net_unless_one_is_under_test():
    assert mgmt_device(qemu_argv(spec())) == "virtio-net-pci,netdev=mgmt,mac=52:54:00:00:00:0a,bus=pcie.0,addr=0x2"
    # virtio-net under test: ssh goes through another driver, none of the hub's.
    argv = qemu_argv(spec(nics=("virtio-net", "e1000e")))
    assert mgmt_device(argv) == "igb,netdev=mgmt,mac=52:54:00:00:00:0a,bus=pcie.0,addr=0x2"
    assert "virtio-net-pci,netdev=nut0,mac=52:54:00:12:34:07,bus=pcie.0,addr=0x7,disable-legacy=on," \
           "iommu_platform=on" in arg_after(argv, "-device")


def test_root_image_is_never_written():
    drives = arg_after(qemu_argv(spec()), "-drive")
    assert drives == ["file=/i/rootfs.ext4,if=none,id=root,format=raw,snapshot=on"]


def test_panic_makes_qemu_exit():
    argv = qemu_argv(spec())
    assert "-no-reboot" in argv
    assert "panic=-1" in kernel_cmdline(spec()).split()


def test_iommu_adds_device_before_nics_and_guest_params():
    argv = qemu_argv(spec(iommu=True))
    assert "q35,kernel-irqchip=split" in arg_after(argv, "-machine")
    devices = arg_after(argv, "-device")
    assert devices.index("intel-iommu,intremap=on") < next(i for i, d in enumerate(devices) if d.startswith("igb"))
    assert {"intel_iommu=on", "iommu=nopt"} <= set(kernel_cmdline(spec(iommu=True)).split())


def test_extra_cmdline_modules_and_initrd():
    s = spec(cmdline_extra=("swiotlb=force",), modules=("igb", "e1000e"), initrd=Path("/k/initrd.cpio"))
    line = kernel_cmdline(s).split()
    assert "swiotlb=force" in line and "harness.modules=igb,e1000e" in line
    assert arg_after(qemu_argv(s), "-initrd") == ["/k/initrd.cpio"]


def test_nics_come_from_the_catalogue_with_slot_macs():
    devices = arg_after(qemu_argv(spec(nics=("e1000e", "igb"))), "-device")
    igb = next(d for d in devices if d.startswith("igb,"))
    assert "mac=52:54:00:12:34:04" in igb and "addr=0x4" in igb
    with pytest.raises(Exception, match="unknown NIC 'rtl'"):
        qemu_argv(spec(nics=("igb", "rtl")))


def test_module_share_is_read_only_9p():
    argv = qemu_argv(spec(module_share=Path("/w/modroot/lib/modules")))
    (fsdev,) = arg_after(argv, "-fsdev")
    assert fsdev == "local,id=modules,path=/w/modroot/lib/modules,security_model=none,readonly=on"
    devices = arg_after(argv, "-device")
    assert any(d.startswith("virtio-9p-pci,fsdev=modules,mount_tag=harness-modules") for d in devices)
    assert arg_after(qemu_argv(spec()), "-fsdev") == []
