"""The QEMU command line for one guest: a pure function of a GuestSpec, so it
can be unit-tested and printed in every error."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from harness.nics import DEFAULT_NICS, MGMT_MAC, MGMT_SLOT, management_model, nic

# The NICs under test sit on QEMU hub 0: they see each other's frames and
# nothing else (no host network). Their fixed PCI slots (the catalogue's) keep
# guest enumeration stable.
ROOT_DISK_SLOT = 0x3
# The kernel's NIC driver modules reach a self-built kernel's guest over 9p
# (read-only): the init mounts the share on /lib/modules and loads them.
MODULES_SLOT, MODULES_TAG = 0x10, "harness-modules"


@dataclass(frozen=True)
class GuestSpec:
    kernel_image: Path  # vmlinux (PVH entry) or bzImage
    rootfs: Path
    accel: str  # "kvm" or "tcg"
    ssh_port: int
    qmp_socket: Path
    initrd: Path | None = None
    init: str = "/sbin/harness-init"
    memory_mb: int = 1024
    cpus: int = 2
    nics: tuple[str, ...] = DEFAULT_NICS  # catalogue models (harness.nics)
    cmdline_extra: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()  # modules the init loads (modprobe -a)
    module_share: Path | None = None  # host directory mounted on the guest's /lib/modules
    iommu: bool = False
    qemu_extra: tuple[str, ...] = field(default=())
    name: str = "harness-guest"
    # QEMU's log file: trace events switched on over QMP print there (log backend).
    trace_log: Path | None = None
    # The cost probe's TCG plugin and its control socket (harness.measurement.cost).
    plugin: Path | None = None
    plugin_socket: Path | None = None


def kernel_cmdline(spec: GuestSpec) -> str:
    args = [
        "console=ttyS0,115200",
        "root=/dev/vda", "rw", "rootfstype=ext4",
        f"init={spec.init}",
        # A panic reboots at once and -no-reboot turns that into QEMU exiting,
        # so a dead guest is noticed immediately instead of by a timeout.
        "panic=-1", "oops=panic",
        "net.ifnames=0", "tsc=reliable", "no_timer_check",
    ]
    if spec.iommu:
        args += ["intel_iommu=on", "iommu=nopt"]
    if spec.modules:
        args.append("harness.modules=" + ",".join(spec.modules))
    args += list(spec.cmdline_extra)
    return " ".join(args)


def accel_args(accel: str) -> list[str]:
    if accel == "kvm":
        return ["-accel", "kvm", "-cpu", "host"]
    if accel == "tcg":
        return ["-accel", "tcg,thread=multi", "-cpu", "max"]
    raise ValueError(f"unknown accel {accel!r} (kvm or tcg)")


def nic_args(models: tuple[str, ...]) -> list[str]:
    args: list[str] = []
    for i, model in enumerate(models):
        n = nic(model)
        args += [
            "-netdev", f"hubport,id=nut{i},hubid=0",
            "-device", f"{n.qemu_device},netdev=nut{i},mac={n.mac},bus=pcie.0,addr={n.slot:#x}"
            + (f",{n.qemu_options}" if n.qemu_options else ""),
        ]
    return args


def plugin_args(spec: GuestSpec) -> list[str]:
    if spec.plugin is None:
        return []
    if spec.accel != "tcg" or spec.plugin_socket is None:
        raise ValueError("a TCG plugin needs accel tcg and a control socket")
    return ["-plugin", f"{spec.plugin},sock={spec.plugin_socket}"]


def module_share_args(share: Path | None) -> list[str]:
    if share is None:
        return []
    return ["-fsdev", f"local,id=modules,path={share},security_model=none,readonly=on",
            "-device", f"virtio-9p-pci,fsdev=modules,mount_tag={MODULES_TAG},bus=pcie.0,addr={MODULES_SLOT:#x}"]


def qemu_argv(spec: GuestSpec, qemu: str = "qemu-system-x86_64") -> list[str]:
    machine = "q35,kernel-irqchip=split" if spec.iommu else "q35"
    # The management NIC's model shares no driver with a NIC under test (where one is
    # left); a plain device, with none of the options a NIC under test gets.
    mgmt_device = nic(management_model(spec.nics)).qemu_device
    argv = [
        qemu, "-name", spec.name,
        "-machine", machine, *accel_args(spec.accel),
        "-m", str(spec.memory_mb), "-smp", str(spec.cpus),
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-kernel", str(spec.kernel_image), "-append", kernel_cmdline(spec),
    ]
    if spec.initrd is not None:
        argv += ["-initrd", str(spec.initrd)]
    if spec.iommu:
        # Must come before the devices it translates for.
        argv += ["-device", "intel-iommu,intremap=on"]
    argv += [
        # snapshot=on: the cached image is never written; writes go to a temp overlay.
        "-drive", f"file={spec.rootfs},if=none,id=root,format=raw,snapshot=on",
        "-device", f"virtio-blk-pci,drive=root,bus=pcie.0,addr={ROOT_DISK_SLOT:#x}",
        # Serial console on QEMU's stdio (a pty held by the harness); signal=off so
        # a Ctrl-C typed there reaches the guest, not QEMU.
        "-chardev", "stdio,id=console,signal=off", "-serial", "chardev:console",
        "-qmp", f"unix:{spec.qmp_socket},server=on,wait=off",
        # Management NIC: user networking, restricted (no way out), one port
        # forwarded from 127.0.0.1 only, to the guest's sshd.
        "-netdev", f"user,id=mgmt,restrict=on,hostfwd=tcp:127.0.0.1:{spec.ssh_port}-:22",
        "-device", f"{mgmt_device},netdev=mgmt,mac={MGMT_MAC},bus=pcie.0,addr={MGMT_SLOT:#x}",
        *nic_args(spec.nics),
        *module_share_args(spec.module_share),
        *(["-D", str(spec.trace_log)] if spec.trace_log is not None else []),
        *plugin_args(spec),
        *spec.qemu_extra,
    ]
    return argv
