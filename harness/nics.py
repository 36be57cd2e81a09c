"""The NIC catalogue: the one place that knows the emulated NICs. Every other
module reads a NIC's facts from here (QEMU device, guest driver and module,
Kconfig symbols, source directory, rx poll and refill functions, XDP modes the
driver offers, PCI slot and MAC). What the running guest can tell (the driver
actually bound, XDP features over netlink, a page_pool) is probed there, not
written here.

Adding a NIC: one entry below, its Kconfig line in kernel-configs/nics.config,
and tests."""

from __future__ import annotations

from dataclasses import dataclass

from harness.errors import HarnessError


@dataclass(frozen=True)
class TailRegisters:
    """A descriptor ring's tail register (RDT/TDT) per queue, at the offsets QEMU's
    register-write trace event prints (its canonical index << 2, aliases resolved)."""

    base: int
    stride: int
    queues: int

    def offsets(self) -> frozenset[int]:
        return frozenset(self.base + q * self.stride for q in range(self.queues))


@dataclass(frozen=True)
class DeviceTrace:
    """What QEMU's own model of the NIC reports through its trace events: the second
    witness of what the driver did (harness.measurement.device_trace)."""

    register_write: str  # the event every MMIO register write emits (offset, size, value)
    rx_tail: TailRegisters  # RDT: the driver hands the device fresh rx buffers
    tx_tail: TailRegisters  # TDT: the driver hands the device frames to send
    rx_buffer_write: str  # the event the model emits per piece of a frame it writes into an rx buffer


@dataclass(frozen=True)
class NicModel:
    model: str  # the catalogue name users type (--nics igb,e1000e)
    qemu_device: str  # QEMU -device name
    driver: str  # the guest driver that binds it (/sys/.../driver, ethtool -i)
    module: str | None  # its kernel module, or None when the harness kernel builds the driver in
    kconfig: str  # the Kconfig symbol of that driver
    source_dir: str  # the driver's directory in the kernel tree
    rx_source: str  # the file (in source_dir) with the rx clean loop and the refill
    polls: tuple[str, ...]  # NAPI poll functions: the roots every rx-path count is attributed to
    rx_roots: tuple[str, ...]  # the rx clean loop and the refill: their lines (and helpers') are the rx path
    xdp_native: bool  # the driver offers native (driver-mode) XDP; generic XDP works on any
    slot: int  # PCI device number on the root bus (fixed, so enumeration is stable)
    title: str  # what the device is, for reports
    qemu_options: str = ""  # extra -device properties
    rx_ring: int | None = None  # rx descriptors the survey sets (ethtool -G) before measuring; None: the default
    device_trace: DeviceTrace | None = None  # QEMU's trace events for this model, where the harness reads them
    # QEMU's virtio core traces each descriptor chain it takes from a ring (virtqueue_pop, with
    # the chain's device-writable and device-readable descriptor counts): virtio-net's only
    # ring trace. The event does not say which device: read while this is the only virtio NIC.
    virtqueue_trace: bool = False
    xmit: str = ""  # its ndo_start_xmit (the cost probe's tx region)
    tx_clean: str = ""  # the tx reclaim its poll calls (split off the rx path's cost), "" where inlined
    # What the driver counts when an rx buffer allocation fails (an `ethtool -S` name, a
    # regex); "" where it keeps no such counter or one the harness does not read yet.
    rx_alloc_fail_counter: str = ""
    rx_pool_under_xdp: bool = False  # its rx buffers come from a page_pool only with an XDP program

    @property
    def mac(self) -> str:
        """52:54:00 (QEMU's OUI), then 12:34 and the PCI slot: one MAC per slot."""
        return f"52:54:00:12:34:{self.slot:02x}"

    @property
    def pci_address(self) -> str:
        return f"0000:00:{self.slot:02x}.0"

    @property
    def poll(self) -> str:
        return self.polls[0]

    @property
    def refill(self) -> str:
        """The rx refill function (rx_roots' last): where the driver allocates rx buffers."""
        return self.rx_roots[-1]


INTEL = "drivers/net/ethernet/intel"
# QEMU's igb model (hw/net/igb_core.c) reuses e1000e's trace event names except
# for its own rx buffer write. Offsets: the 82576 datasheet's RDT/TDT(n) (queues
# 0-3 also have legacy aliases at 0x2818/0x3818, which QEMU resolves to these);
# the 82574L's two queues at 0x2818/0x3818 + 0x100 n.
IGB_TRACE = DeviceTrace("e1000e_core_write", TailRegisters(0xC018, 0x40, 16), TailRegisters(0xE018, 0x40, 16),
                        "igb_rx_desc_buff_write")
E1000E_TRACE = DeviceTrace("e1000e_core_write", TailRegisters(0x2818, 0x100, 2), TailRegisters(0x3818, 0x100, 2),
                           "e1000e_rx_desc_buff_write")
CATALOGUE: dict[str, NicModel] = {n.model: n for n in (
    NicModel("igb", "igb", "igb", "igb", "CONFIG_IGB", f"{INTEL}/igb", "igb_main.c", ("igb_poll",),
             ("igb_clean_rx_irq", "igb_alloc_rx_buffers"), True, 0x4,
             "Intel 82576 (igb): page-based rx with page reuse", device_trace=IGB_TRACE, xmit="igb_xmit_frame",
             tx_clean="igb_clean_tx_irq", rx_alloc_fail_counter=r"rx_queue_\d+_alloc_failed"),
    NicModel("e1000e", "e1000e", "e1000e", "e1000e", "CONFIG_E1000E", f"{INTEL}/e1000e", "netdev.c",
             ("e1000e_poll",), ("e1000_clean_rx_irq", "e1000_alloc_rx_buffers"), False, 0x5,
             "Intel 82574L (e1000e): an skb and a map per frame", device_trace=E1000E_TRACE,
             xmit="e1000_xmit_frame", tx_clean="e1000_clean_tx_irq", rx_alloc_fail_counter="alloc_rx_buff_failed"),
    NicModel("e1000", "e1000", "e1000", "e1000", "CONFIG_E1000", f"{INTEL}/e1000", "e1000_main.c",
             ("e1000_clean",), ("e1000_clean_rx_irq", "e1000_alloc_rx_buffers"), False, 0x6,
             "Intel 82540EM (e1000): the oldest of the family",
             # With its default 256 descriptors, traced under TCG, it stopped receiving after 254 frames
             # in some runs (rx_no_buffer_count climbing, no further poll); 4096 hold a whole measurement.
             rx_ring=4096, xmit="e1000_xmit_frame", tx_clean="e1000_clean_tx_irq",
             rx_alloc_fail_counter="alloc_rx_buff_failed"),
    # iommu_platform: the device asks for VIRTIO_F_ACCESS_PLATFORM, so the driver maps
    # its buffers through the DMA API (without it virtio uses guest-physical addresses
    # and makes no DMA call at all), as it must behind an IOMMU or with SEV/TDX.
    NicModel("virtio-net", "virtio-net-pci", "virtio_net", None, "CONFIG_VIRTIO_NET", "drivers/net",
             "virtio_net.c", ("virtnet_poll",), ("virtnet_receive", "try_fill_recv"), True, 0x7,
             "virtio-net: mergeable rx buffers from page frags, native XDP",
             "disable-legacy=on,iommu_platform=on", xmit="start_xmit", virtqueue_trace=True),
    NicModel("vmxnet3", "vmxnet3", "vmxnet3", "vmxnet3", "CONFIG_VMXNET3", "drivers/net/vmxnet3",
             "vmxnet3_drv.c", ("vmxnet3_poll_rx_only", "vmxnet3_poll"),
             ("vmxnet3_rq_rx_complete", "vmxnet3_rq_alloc_rx_buf"), True, 0x8,
             "VMware vmxnet3: native XDP, rx from a page_pool while a program is attached",
             xmit="vmxnet3_xmit_frame", tx_clean="vmxnet3_tq_tx_complete",
             # its "rx buf alloc fail" is per queue, in an indented section ethtool -S parsing skips
             rx_pool_under_xdp=True),
)}
DEFAULT_NICS = ("igb", "e1000e")
# The management NIC (QEMU user networking, for SSH): found in the guest by this MAC,
# never by its driver, so a NIC under test of the same model is not it.
MGMT_MAC = "52:54:00:00:00:0a"
MGMT_SLOT = 0x2
# Its model: the first of these with no NIC of its driver under test. A driver that also
# carries the harness's ssh shares its text with it: faults injected into virtio_net's
# rx refill stalled ssh (a two-NIC guest, virtio-net under test). igb before the others:
# e1000e is the survey's usual peer, and e1000 stalled with its default ring under trace.
MGMT_MODELS = ("virtio-net", "igb", "e1000e", "vmxnet3", "e1000")


def nic(model: str) -> NicModel:
    try:
        return CATALOGUE[model]
    except KeyError:
        raise HarnessError(f"unknown NIC {model!r}; known: {', '.join(CATALOGUE)}") from None


def parse_nics(text: str) -> tuple[str, ...]:
    """`--nics igb,e1000e` -> ("igb", "e1000e"): known models, each once, at least two
    (every NIC under test receives from a peer on the same hub)."""
    models = model_list(text)
    for m in models:
        nic(m)
    if len(models) < 2:
        raise HarnessError(f"--nics {text!r}: give at least two NICs (each receives from a peer NIC on the hub)")
    return models


def model_list(text: str) -> tuple[str, ...]:
    """"igb, e1000e,igb" -> ("igb", "e1000e"): a comma list, each once, in order."""
    return tuple(dict.fromkeys(m.strip() for m in text.split(",") if m.strip()))


def parse_only(text: str | None, models: tuple[str, ...]) -> tuple[str, ...] | None:
    """`--only igb,e1000`: the NICs of the hub `models` a shard runs (None: all)."""
    if not text:
        return None
    only = model_list(text)
    if stray := [m for m in only if m not in models]:
        raise HarnessError(f"--only {text}: {', '.join(stray)} not on the hub (--nics {','.join(models)})")
    return only


def by_driver(driver: str) -> NicModel | None:
    return next((n for n in CATALOGUE.values() if n.driver == driver), None)


def module_dirs() -> dict[str, str]:
    """module name -> its source directory, for every NIC the harness builds as a module."""
    return {n.module: n.source_dir for n in CATALOGUE.values() if n.module}


def management_model(models: tuple[str, ...]) -> str:
    """The management NIC's model in a guest with `models` under test: one whose driver
    none of them uses, or, with every model under test, virtio-net (the driver is then
    shared: an experiment that must not share it asks for a smaller hub, hub_apart)."""
    return next((m for m in MGMT_MODELS if m not in models), MGMT_MODELS[0])


def hub_apart(models: tuple[str, ...], model: str, peer: str) -> tuple[str, ...]:
    """The NICs of a guest that measures `model` receiving from `peer` with no ssh
    traffic through `model`'s driver: the whole hub, unless its management NIC would be a
    `model` too; then only the pair, which leaves the management NIC another driver."""
    return models if management_model(models) != model else (model, peer)


def boot_modules(kernel_modules: tuple[str, ...], models: tuple[str, ...]) -> tuple[str, ...]:
    """Which of a kernel's modules the guest's init loads with `models` on its hub: the
    drivers of those NICs and of the management NIC, and every module that is no
    catalogue NIC's driver (pktgen, a distro kernel's virtio_net and others)."""
    drivers = set(module_dirs())
    wanted = {nic(m).module for m in (*models, management_model(models)) if nic(m).module}
    return tuple(m for m in kernel_modules if m in wanted or m not in drivers)
