"""DMA API calls counted per device, direction, size and attrs, and per calling
function, so a receiver's rx maps are never mixed with the sender's tx maps and
every unmap says which path of the driver made it.

Two sources give the same observations:
  - the kernel's own `dma:*` tracepoints (6.10 and later: dma_map_page,
    dma_unmap_page, dma_sync_single_for_cpu/_device, with the device name,
    size, direction and attrs in the event; since the 6.17 phys_addr rework the
    map/unmap events are dma_map_phys/dma_unmap_phys, with the same fields:
    the names this kernel has are found in tracefs);
  - kprobes on the DMA API functions that fetch the same values from their
    arguments (older kernels, e.g. 6.1).
Hist triggers aggregate in the kernel. A trigger takes at most three keys
(TRACING_MAP_KEYS_MAX), so the device string goes with two numbers at a time,
and the calling function comes from a per-device trigger keyed on the stack
trace (`common_stacktrace`)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from harness.errors import GuestError
from harness.guest.vm import Guest
from harness.measurement.ftrace_parse import LEGACY_STACK_KEY, STACK_KEY, HistTable, parse_hist_file, subtract
from harness.measurement.probes import (
    Observation,
    T,
    pci_drivers,
    resolve_functions,
    traceable,
    tracefs_script,
    with_aliases,
)
from harness.nics import DEFAULT_NICS, nic

DMA_DIRECTIONS = {"0": "bidirectional", "1": "to_device", "2": "from_device", "3": "none"}
# Frames of a stack trace that belong to the DMA API or to tracing, not to the driver.
INTERNAL_FRAMES = ("dma_", "__dma_", "debug_dma_", "iommu_dma_", "swiotlb_", "trace_", "__trace", "ftrace",
                   "__ftrace", "kprobe", "__kprobe", "arch_ftrace", "perf_", "event_", "rethook", "fprobe",
                   "__traceiter", "bpf_trace", "stack_trace", "save_stack")


@dataclass(frozen=True)
class DmaCall:
    metric: str  # what rules read: the DMA API function's name
    tracepoints: tuple[str, ...]  # its tracepoint (events/<group>/<name>), by the names kernels gave it
    kprobe_args: str  # fetch args for a kprobe on `metric` (x86-64: di, si, dx, cx, r8, r9), device aside
    has_attrs: bool


DMA_CALLS = (
    DmaCall("dma_map_page_attrs", ("dma/dma_map_page", "dma/dma_map_phys"),
            "size=%cx:u64 dir=%r8:u32 attrs=%r9:u64", True),
    DmaCall("dma_unmap_page_attrs", ("dma/dma_unmap_page", "dma/dma_unmap_phys"),
            "size=%dx:u64 dir=%cx:u32 attrs=%r8:u64", True),
    DmaCall("__dma_sync_single_for_cpu", ("dma/dma_sync_single_for_cpu",), "size=%dx:u64 dir=%cx:u32", False),
    DmaCall("__dma_sync_single_for_device", ("dma/dma_sync_single_for_device",), "size=%dx:u64 dir=%cx:u32",
            False),
)
# `struct device` starts with its kobject, whose first member is the name:
# +0(+0(%di)) is dev_name(dev) (the kprobe source names it as the tracepoint does).
KPROBE_DEVICE = "device=+0(+0(%di)):string"
SIZE_KEYS, ATTR_KEYS, CALLER_KEYS = "device,dir,size", "device,dir,attrs", f"dir,attrs,{STACK_KEY}"
HIST_OPTS = "sort=hitcount"  # 2048 entries: the stack-trace tables gather rows over a guest's measurements
KPROBE_GROUP = "harness_dma"
TABLE_REFRESH = 1024  # of a table's 2048 entries
DMA_FACT = "dma triggers armed"


def device_drivers(guest: Guest) -> dict[str, str]:
    """DMA device name -> the driver its DMA is the work of. A NIC of the catalogue
    by its PCI slot (a virtio NIC's DMA device is its PCI function, bound to
    virtio-pci, while its network driver is virtio_net); anything else by the PCI
    driver bound to it."""
    return {**pci_drivers(guest), **{nic(m).pci_address: nic(m).driver for m in guest.options.nics}}


def caller_of(stack: str) -> str:
    """The first function of a `common_stacktrace` value (`a < b < c`, innermost
    first) outside the DMA API and tracing: the driver function that called it."""
    return next((f for f in stack.split(" < ") if f and not f.startswith(INTERNAL_FRAMES)), "?")


class DmaProbe:
    name = "dma_api"

    def __init__(self, calls: tuple[DmaCall, ...] = DMA_CALLS,
                 drivers: tuple[str, ...] = tuple(nic(m).driver for m in DEFAULT_NICS)) -> None:
        self.calls = calls
        self.drivers = drivers  # whose devices get a per-caller table, and a 0 when nothing was seen
        self.source = ""  # "tracepoints" or "kprobes", chosen at arm()
        self.stack_key = STACK_KEY  # or LEGACY_STACK_KEY on a kernel before 6.5, chosen at arm()
        self.kprobed: dict[str, str] = {}  # metric -> the function its kprobe sits on (kprobes only)
        self.events: dict[str, str] = {}  # metric -> the tracepoint this kernel has for it
        self.armed: list[DmaCall] = []
        self.devices: dict[str, str] = {}  # PCI address -> driver, of the drivers above
        self.baseline: dict[str, dict[str, HistTable]] = {}  # the tables as read before the traffic

    # ---- where each call's events live ----------------------------------------
    def _event_dir(self, call: DmaCall) -> str:
        if self.source == "tracepoints":
            return f"{T}/events/{self.events[call.metric]}"
        return f"{T}/events/{KPROBE_GROUP}/{call.metric}"

    def triggers(self, call: DmaCall) -> list[str]:
        out = [f"hist:keys={SIZE_KEYS}:{HIST_OPTS}"]
        if call.has_attrs:
            out.append(f"hist:keys={ATTR_KEYS}:{HIST_OPTS}")
            callers = CALLER_KEYS.replace(STACK_KEY, self.stack_key)
            out += [f'hist:keys={callers}:{HIST_OPTS} if device == "{dev}"' for dev in sorted(self.devices)]
        return out

    def arm(self, guest: Guest) -> None:
        """The hist triggers stay in a guest from one measurement to the next (under
        TCG removing one costs ~90 ms, clearing ~40 ms): each measurement reads them
        before and after its traffic and counts the difference."""
        self.prepare(guest)
        setup = (self.source, tuple(sorted(self.devices.items())), tuple(c.metric for c in self.armed))
        if guest.facts.get(DMA_FACT) == setup:
            self.baseline = self._read(guest)
            intact = all(len(self.baseline[c.metric]) == len(self.triggers(c)) for c in self.armed)
            # A stack-trace table gathers rows over a guest's measurements (every
            # interrupted context is a new key): made anew before it can overflow.
            roomy = all(t.entries < TABLE_REFRESH and not t.dropped for tables in self.baseline.values()
                        for t in tables.values())
            if intact and roomy:
                return
            self.prepare(guest)
        guest.facts.pop(DMA_FACT, None)
        tracefs_script(guest, self.cleanup_script() + "\n" + self.arm_script())
        guest.facts[DMA_FACT] = setup
        self.baseline = {}

    def prepare(self, guest: Guest) -> None:
        """Choose the source (tracepoints where the kernel has them, under whichever name
        it gave them) and the devices. Kprobes only on kernels without DMA tracepoints:
        on 7.3 a kprobe and function_graph on one function crash it (README, known issues)."""
        if "dma_tracepoints" not in guest.facts:
            candidates = [t for c in self.calls for t in c.tracepoints]
            have = set(guest.run("cd " + T + "/events && ls -d " + " ".join(candidates) + " 2>/dev/null; true"
                                 ).stdout.split())
            found = {c.metric: next((t for t in c.tracepoints if t in have), "") for c in self.calls}
            # map and unmap decide: without their events the kernel predates the DMA tracepoints
            guest.facts["dma_tracepoints"] = found if found[DMA_CALLS[0].metric] and found[DMA_CALLS[1].metric] else {}
        if "hist_stack_key" not in guest.facts:  # the stack-trace key's name in this kernel (6.5 renamed it)
            named = guest.run(f"grep -q common_stacktrace {T}/README", check=False).rc == 0
            guest.facts["hist_stack_key"] = STACK_KEY if named else LEGACY_STACK_KEY
        self.stack_key = str(guest.facts["hist_stack_key"])
        self.events = dict(guest.facts["dma_tracepoints"])  # type: ignore[arg-type]
        self.source = "tracepoints" if self.events else "kprobes"
        self.devices = {dev: drv for dev, drv in device_drivers(guest).items() if drv in self.drivers}
        if self.source == "kprobes":
            # A metric's function under its older name where the kernel has that one
            # (6.1: dma_sync_single_for_cpu itself, before the __dma_sync_* split).
            metrics = [c.metric for c in self.calls]
            self.kprobed = resolve_functions(metrics, traceable(guest, with_aliases(metrics)))
            self.armed = [c for c in self.calls if c.metric in self.kprobed]
        else:
            self.armed = [c for c in self.calls if self.events.get(c.metric)]

    def arm_script(self) -> str:
        lines, triggers = [], []
        for call in self.armed:
            if self.source == "kprobes":
                probe = f"p:{KPROBE_GROUP}/{call.metric} {self.kprobed[call.metric]} {KPROBE_DEVICE} {call.kprobe_args}"
                lines.append(f"echo {shlex.quote(probe)} >> {T}/kprobe_events")
            triggers += [f"echo {shlex.quote(t)} >> {self._event_dir(call)}/trigger" for t in self.triggers(call)]
        return "\n".join(lines + triggers)

    def disarm(self, guest: Guest) -> None:
        """Nothing: the counts are the difference of two reads."""

    def _read(self, guest: Guest) -> dict[str, dict[str, HistTable]]:
        """Every armed call's hist tables, in one guest command."""
        marker = "==harness-hist=="
        files = " ".join(f"{self._event_dir(c)}/hist" for c in self.armed)
        out = guest.run(f"for f in {files}; do echo {marker}; cat $f; done").stdout
        return {c.metric: parse_hist_file(text) for c, text in zip(self.armed, out.split(marker + "\n")[1:],
                                                                   strict=True)}

    def collect(self, guest: Guest) -> list[Observation]:
        drivers = device_drivers(guest)
        now = self._read(guest)
        obs = []
        for call in self.armed:
            before = self.baseline.get(call.metric, {})
            tables = {k: subtract(t, before.get(k)) for k, t in now[call.metric].items()}
            for table in tables.values():
                if table.dropped:
                    raise GuestError(f"hist trigger on {call.metric} dropped {table.dropped} entries")
            obs += self._size_observations(call, tables[SIZE_KEYS], drivers)
            if call.has_attrs:
                obs += self._attr_observations(call, tables[ATTR_KEYS], drivers)
                obs += self._caller_observations(call, tables)
        return obs

    def _method(self, call: DmaCall, keys: str) -> str:
        src = (f"tracepoint {self.events[call.metric].replace('/', ':')}" if self.source == "tracepoints"
               else f"kprobe on {self.kprobed.get(call.metric, call.metric)} (device from its struct device argument)")
        return f"{src}, hist trigger keyed by {keys}"

    def _size_observations(self, call: DmaCall, table: HistTable, drivers: dict[str, str]) -> list[Observation]:
        per: dict[str, dict] = {d: {"count": 0, "bytes": 0, "by": []} for d in self.drivers}
        for keys, vals in table.rows:
            d = per.setdefault(drivers.get(keys["device"], keys["device"]), {"count": 0, "bytes": 0, "by": []})
            d["count"] += vals["hitcount"]
            d["bytes"] += vals["hitcount"] * int(keys["size"])
            d["by"].append({"dir": DMA_DIRECTIONS.get(keys["dir"], keys["dir"]), "len": int(keys["size"]),
                            "count": vals["hitcount"]})
        method = self._method(call, SIZE_KEYS)
        return [o for driver, d in per.items() for o in (
            Observation(call.metric, d["count"], driver, method, {"by_dir_len": d["by"]}),
            Observation(f"{call.metric}:bytes", d["bytes"], driver, method))]

    def _attr_observations(self, call: DmaCall, table: HistTable, drivers: dict[str, str]) -> list[Observation]:
        """attrs per driver, overall and by direction (a driver's rx maps are
        DMA_FROM_DEVICE; its tx maps are not)."""
        per: dict[str, dict[str, dict[int, int]]] = {d: {} for d in self.drivers}
        for keys, vals in table.rows:
            by_dir = per.setdefault(drivers.get(keys["device"], keys["device"]), {})
            attrs = by_dir.setdefault(DMA_DIRECTIONS.get(keys["dir"], keys["dir"]), {})
            attrs[int(keys["attrs"])] = attrs.get(int(keys["attrs"]), 0) + vals["hitcount"]
        obs = []
        for driver, by_dir in per.items():
            total: dict[int, int] = {}
            for attrs in by_dir.values():
                for k, v in attrs.items():
                    total[k] = total.get(k, 0) + v
            obs.append(Observation(f"{call.metric}:attrs", sum(total.values()), driver,
                                   self._method(call, ATTR_KEYS), {
                "by_attrs": {hex(k): v for k, v in sorted(total.items())},
                "by_dir_attrs": {d: {hex(k): v for k, v in sorted(a.items())} for d, a in sorted(by_dir.items())}}))
        return obs

    def _caller_observations(self, call: DmaCall, tables: dict[str, HistTable]) -> list[Observation]:
        """Per driver: which function made each call, with its direction and attrs."""
        obs = []
        for dev, driver in sorted(self.devices.items()):
            table = tables.get(f'{CALLER_KEYS} if device == "{dev}"')
            if table is None:
                continue
            rows: dict[tuple[str, str, str], int] = {}
            stacks: dict[str, str] = {}
            for keys, vals in table.rows:
                caller = caller_of(keys[STACK_KEY])
                k = (caller, DMA_DIRECTIONS.get(keys["dir"], keys["dir"]), hex(int(keys["attrs"])))
                rows[k] = rows.get(k, 0) + vals["hitcount"]
                stacks.setdefault(caller, " < ".join(keys[STACK_KEY].split(" < ")[:6]))
            by_caller = [{"caller": c, "dir": d, "attrs": a, "count": n, "stack": stacks[c]}
                         for (c, d, a), n in sorted(rows.items(), key=lambda kv: -kv[1])]
            obs.append(Observation(f"{call.metric}:callers", sum(rows.values()), driver,
                                   self._method(call, f"{CALLER_KEYS} for device {dev}"), {"by_caller": by_caller}))
        return obs

    def read_script(self) -> str:
        """The histograms as a person reads them (harness shell's dma-read.sh)."""
        return "\n".join(f"echo '== {c.metric} ({self.source})'; grep -v '^#' {self._event_dir(c)}/hist"
                         for c in self.armed)

    def cleanup_script(self) -> str:
        # Triggers must go before a kprobe event can be removed.
        dirs = " ".join(f"{T}/events/{t}" for c in self.calls for t in c.tracepoints) + f" {T}/events/{KPROBE_GROUP}/*"
        return "\n".join([f"for e in {dirs}; do t=$e/trigger; [ -e $t ] || continue; "
                          "grep -v '^#' $t | while read -r l; do echo \"!${l%% \\[*}\" >> $t || true; done; done",
                          f"for c in {' '.join(c.metric for c in self.calls)}; do "
                          f"echo \"-:{KPROBE_GROUP}/$c\" >> {T}/kprobe_events 2>/dev/null || true; done", "true"])

    def cleanup(self, guest: Guest) -> None:
        """Nothing now: the paused triggers go when the next measurement arms (teardown ends them)."""

    def teardown(self, guest: Guest) -> None:
        guest.facts.pop(DMA_FACT, None)
        guest.run(self.cleanup_script(), check=False)
        self.armed = []



