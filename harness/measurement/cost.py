"""Cost per frame in instructions: the guest's instructions counted by QEMU itself
(the TCG plugin harness_cost.so, built by harness.artifacts.qemu_plugin), not by a
tracer in the guest. Deterministic where wall-clock under TCG is noise, per
function, and attributed to the rx path by the code's dynamic extent:

  - rx: everything executed between the entry of the receiver's NAPI poll and the
    return to its caller, except its tx clean where the driver has one of its own
    (a region nested in it) and the interrupts taken meanwhile (from the IDT entry
    to the iret: counted apart); each closed poll by what it returned (the frames it
    received), so a one-frame poll's cost is a figure of its own; a poll during
    which the NAPI was scheduled again (napi_complete_done found it missed because
    the device interrupted while it ran, or the driver found more work after
    completing: timing, not work per frame) is counted apart;
  - tx: the sender's ndo_start_xmit, and its tx completion under its own poll;
  - probed functions (the slab's bulk API): their calls inside those regions, by
    return value and one argument, their instructions staying with the caller's;
  - guest: every instruction of the window, user space included.

Witness `tcg-plugin`: instructions, not cycles. Cache misses, stalls and the
latency of a fence are invisible to it; a counted instruction is a retired guest
instruction as TCG translated it."""

from __future__ import annotations

import bisect
import contextlib
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness.artifacts.kernel import Kernel
from harness.errors import GuestError, HarnessError, Unmeasurable
from harness.guest.vm import Guest
from harness.measurement.probes import Observation, resolve_functions
from harness.nics import NicModel, nic

WITNESS = "tcg-plugin"
METRIC = f"instructions/{WITNESS}"  # metric ids: instructions/tcg-plugin:rx, ...:rx:fn:igb_poll
# A function is listed on its own (a metric of its own, compared against baselines) from
# this share of its region's instructions up; the rest are in the families only.
FUNCTION_SHARE = 0.002


@dataclass(frozen=True)
class Role:
    """A region the cost is split by: whose code, and which catalogue function starts it."""

    name: str  # rx | rx_tx_clean | tx | tx_completion
    side: str  # receiver | sender
    functions: str  # the NicModel attribute naming its entry function(s)
    what: str


ROLES = (
    Role("rx", "receiver", "polls", "in the receiver's NAPI poll (entry to the caller's resume), not its tx clean"),
    Role("rx_tx_clean", "receiver", "tx_clean", "in the receiver's tx clean, under its poll"),
    Role("tx", "sender", "xmit", "in the sender's ndo_start_xmit"),
    Role("tx_completion", "sender", "polls", "in the sender's NAPI poll (its tx completions)"),
    # Interrupts taken inside any region above (timer ticks, another NIC's interrupt): not its work.
    Role("interrupts", "", "", "in interrupts taken inside the regions (from the IDT entry to the iret)"),
)
# Functions whose calls inside the regions are counted, by what they return and by one
# argument (its number: 1 rdi, 2 rsi, 3 rdx, 4 rcx); transparent: their instructions stay
# with the region that called them. The slab's bulk API (Brouer's kernel memory work): the
# NAPI skb cache refills with kmem_cache_alloc_bulk(s, flags, size, p) (6.12 returns the
# objects allocated, 7.x a bool: the count is `size`) and is flushed with
# kmem_cache_free_bulk(s, size, p).
# kmem_cache_free(s, x): an object given back to the slab one at a time; kmem_cache_alloc(s, flags)
# and kmem_cache_alloc_node(s, flags, node): one taken from it (__alloc_skb's head and small
# data outside the NAPI cache). Argument 0: none recorded (the first is a pointer).
# __napi_schedule(n): the NAPI scheduled again from inside a poll (napi_complete_done found
# NAPIF_STATE_MISSED: the device interrupted while the poll ran; virtio-net's race with a
# new buffer). Argument 0: none worth recording (a pointer).
PROBED = {"kmem_cache_alloc_bulk_noprof": 3, "kmem_cache_free_bulk": 2, "kmem_cache_free": 1,
          "kmem_cache_alloc_noprof": 0, "kmem_cache_alloc_node_noprof": 0, "__napi_schedule": 0}
# A call of these marks the region instance it was made in: a poll that rescheduled its
# NAPI ran the same per-frame work plus the reschedule, and skipped re-enabling the
# interrupt. Whether it happens is the emulated device's timing against the host's, which
# differs from guest to guest, so such polls are a kind of instance of their own.
MARKS = frozenset({"__napi_schedule"})
# Probed functions that return void: what RAX held at their return means nothing.
RETURNS_NOTHING = frozenset({"kmem_cache_free_bulk", "kmem_cache_free", "__napi_schedule"})
MAX_REGIONS = 16  # the plugin's; id 0 is "outside every region"
IRQ_REGION = MAX_REGIONS - 1  # the plugin's region of interrupts
# The kernel's interrupt entries (x86-64): the per-vector stubs of external interrupts and the
# system vectors (timer, IPIs). No error code on the stack: the CPU's frame starts at [sp].
IRQ_ENTRY_AREAS = ("irq_entries_start", "spurious_entries_start")
IRQ_ENTRY_PREFIX = "asm_sysvec_"


def entry_functions(model: NicModel, role: Role) -> tuple[str, ...]:
    if not role.functions:
        return ()
    value = getattr(model, role.functions)
    return tuple(value) if isinstance(value, tuple) else ((value,) if value else ())


# ---- the plugin's dump -------------------------------------------------------------
@dataclass
class Window:
    """One armed window: instructions per block and innermost region, region entries."""

    regions: dict[int, tuple[int, int]]  # id -> (start address, entries)
    blocks: list[tuple[int, int, list[int]]]  # (start address, instructions per run, per region id)
    lost: int = 0  # region entries whose return address could not be read
    # (id, the region it was called from) -> what closed instances returned (a NAPI poll: the
    # frames it received; 0..64, 65 for more) -> (instances, their own instructions; a probe's
    # inclusive)
    returned: dict[tuple[int, int], dict[int, tuple[int, int]]] = field(default_factory=dict)
    # (probe id, called from) -> second argument (0..64, 65 for more) -> calls
    arguments: dict[tuple[int, int], dict[int, int]] = field(default_factory=dict)
    # The same as `returned`, of the instances marked by a marking probe's call only.
    marked: dict[tuple[int, int], dict[int, tuple[int, int]]] = field(default_factory=dict)

    def total(self) -> int:
        return sum(sum(c) for _, _, c in self.blocks)


def parse_dump(text: str) -> Window:
    lines = text.splitlines()
    if not lines or not lines[0].startswith("harness-cost 3 "):
        raise HarnessError(f"cost plugin dump: unknown format {lines[0][:60] if lines else '(empty)'!r}")
    w = Window({}, [])
    for line in lines[1:]:
        parts = line.split()
        if parts[0] == "region":
            w.regions[int(parts[1])] = (int(parts[2], 16), int(parts[3]))
        elif parts[0] in ("returned", "marked"):
            r, parent, k, n, insns = (int(x) for x in parts[1:6])
            (w.returned if parts[0] == "returned" else w.marked).setdefault((r, parent), {})[k] = (n, insns)
        elif parts[0] == "argument":
            r, parent, k, n = (int(x) for x in parts[1:5])
            w.arguments.setdefault((r, parent), {})[k] = n
        elif parts[0] == "lost":
            w.lost = int(parts[1])
        elif parts[0] == "tb":
            w.blocks.append((int(parts[1], 16), int(parts[2]), [int(x) for x in parts[3:]]))
    return w


# ---- symbols -------------------------------------------------------------------------
@dataclass(frozen=True)
class Symbols:
    """The guest's text symbols by address (/proc/kallsyms)."""

    starts: list[int]
    names: list[tuple[str, str]]  # (name, module or "")

    def at(self, addr: int) -> tuple[str, str]:
        i = bisect.bisect_right(self.starts, addr) - 1
        return self.names[i] if i >= 0 else (f"{addr:#x}", "")

    def address(self, name: str, module: str = "") -> int | None:
        for a, (n, m) in zip(self.starts, self.names, strict=True):
            if n == name and (not module or m == module):
                return a
        return None

    def text_names(self) -> list[str]:
        return [n for n, m in self.names if not m]

    def irq_entries(self, stub_stride: int) -> list[tuple[int, int, int]]:
        """(start, end, stride) of the kernel's interrupt entries: each system vector's
        symbol (stride 0: its start only) and the areas of per-vector stubs, one every
        `stub_stride` bytes up to the next symbol."""
        return [(a, self.starts[i + 1], stub_stride if n in IRQ_ENTRY_AREAS else 0)
                for i, (a, (n, m)) in enumerate(zip(self.starts, self.names, strict=True))
                if not m and i + 1 < len(self.starts) and (n in IRQ_ENTRY_AREAS or n.startswith(IRQ_ENTRY_PREFIX))]


def irq_stub_stride(config: str) -> int:
    """IDT_ALIGN (arch/x86/include/asm/idtentry.h): 8 bytes a stub, 16 with kernel IBT (ENDBR)."""
    return 16 if "CONFIG_X86_KERNEL_IBT=y" in config.splitlines() else 8


KALLSYMS_LINE = re.compile(r"^([0-9a-f]+) ([tTwW]) (\S+)(?:\s+\[(\S+)\])?")


def parse_kallsyms(text: str) -> Symbols:
    entries = sorted({(int(m.group(1), 16), m.group(3), m.group(4) or "")
                      for line in text.splitlines() if (m := KALLSYMS_LINE.match(line))})
    entries = [e for e in entries if e[0]]
    if not entries:
        raise HarnessError("/proc/kallsyms shows no text addresses (kptr_restrict?)")
    return Symbols([a for a, _, _ in entries], [(n, m) for _, n, m in entries])


def guest_symbols(g: Guest) -> Symbols:
    """Text symbols of the running kernel and its modules (asked once per guest and
    module load: Guest.facts is cleared when a driver module is reloaded)."""
    if "kallsyms" not in g.facts:
        out = g.run("sysctl -qw kernel.kptr_restrict=0; grep -E '^[0-9a-f]+ [tTwW] ' /proc/kallsyms").stdout
        g.facts["kallsyms"] = parse_kallsyms(out)
    return g.facts["kallsyms"]  # type: ignore[return-value]


# ---- families: where the instructions go, for people ---------------------------------
# By module first (the drivers under test), then by name; a name not listed is "kernel".
# Grouping is for reading only: no verdict depends on a family's name.
FAMILIES: tuple[tuple[str, str], ...] = (
    ("page_pool", r"page_pool"),
    ("xdp/bpf", r"xdp|bpf"),
    ("dma api", r"^(__)?dma_|swiotlb|iommu|^intel_|debug_dma|check_sync|check_unmap"),
    # skb construction and freeing (not the stack functions that take an skb: netif_receive_skb is "stack")
    ("skb", r"^_*(napi_|netdev_)?(build|alloc|consume|free|kfree)_skb|^_*kfree_skb|^_*skb_|^napi_skb|"
            r"^napi_consume|finalize_skb|^eth_type_trans|^kfree_skbmem|^_*napi_build_skb|^_*alloc_skb"),
    ("page allocator", r"alloc_pages|free_pages|free_unref|get_page_from_freelist|rmqueue|free_pcppages|"
                       r"free_one_page|page_frag|prep_new_page|post_alloc_hook|zone_watermark|fail_alloc|"
                       r"put_page|folio_put|free_frozen|alloc_frozen|page_ref|__page_cache_release"),
    ("slab", r"kmem_cache|kmalloc|kfree|slab|memcg|objcg|obj_cgroup"),
    ("stack", r"gro|netif|^ip_|^ipv6|udp|icmp|inet|^sk_|sock|^__dev_|^dev_|net_rx|^napi_|^__napi|backlog|"
              r"^eth_|arp|neigh|^nf_|^rt_|fib|xmit|qdisc|^tcp|^raw"),
    ("irq/timer/sched", r"irq|timer|tick|sched|rcu|clock|apic|sysvec|^asm_|ktime|account|enqueue|dequeue|wake|"
                        r"idle|softirq|hrtimer|update_|cpuacct|preempt"),
)
_FAMILY_RES = [(name, re.compile(rx)) for name, rx in FAMILIES]


def family_of(name: str, module: str, drivers: dict[str, str], builtin: dict[str, str] | None = None) -> str:
    """drivers: module -> label ("driver igb"); builtin: a built-in driver's function -> its label."""
    if module in drivers:
        return drivers[module]
    if not module and builtin and name in builtin:
        return builtin[name]
    if name == "user space":
        return "user space"
    return next((fam for fam, rx in _FAMILY_RES if rx.search(name)), "kernel")


# A function definition's first line in kernel style: the name and "(" at line start, or
# after the return type on the same line, never ending with ";".
DEFINITION = re.compile(r"^(?:[A-Za-z_][\w \t\*]*?[ \t\*])?(\w+)\([^;]*$", re.M)


def defined_functions(source: str) -> set[str]:
    """The functions a C file defines (a built-in driver's, e.g. virtio_net.c): its code
    is the kernel's in kallsyms, without a module to tell it by."""
    return {m.group(1) for m in DEFINITION.finditer(source)
            if m.group(1) not in ("if", "for", "while", "switch", "return", "sizeof")}


def driver_functions(kernel: Kernel, n: NicModel) -> set[str]:
    """The functions of a driver built into the kernel (virtio-net): its rx source's."""
    return defined_functions(kernel.source_file(f"{n.source_dir}/{n.rx_source}").read_text())


# ---- attribution ---------------------------------------------------------------------
@dataclass
class RoleCost:
    role: Role
    instructions: int = 0
    entries: int = 0
    functions: dict[str, int] = field(default_factory=dict)  # "name" or "name [module]" -> instructions
    families: dict[str, int] = field(default_factory=dict)
    # Closed instances by their return value (a poll: frames received): (instances, own instructions).
    returned: dict[int, tuple[int, int]] = field(default_factory=dict)
    marked: dict[int, tuple[int, int]] = field(default_factory=dict)  # those of them a MARKS call marked

    def instances(self, pick: Callable[[int], bool], marked: bool | None = None) -> tuple[int, int]:
        """(instances, their own instructions) of those whose return value `pick` accepts;
        marked: only the marked ones (True), only the others (False), all (None)."""
        def total(rows: dict[int, tuple[int, int]]) -> tuple[int, int]:
            picked = [v for k, v in rows.items() if pick(k)]
            return sum(n for n, _ in picked), sum(i for _, i in picked)
        if marked:
            return total(self.marked)
        n, insns = total(self.returned)
        if marked is False:
            mn, minsns = total(self.marked)
            return n - mn, insns - minsns
        return n, insns


@dataclass
class Breakdown:
    roles: dict[str, RoleCost]
    guest_total: int
    outside: int  # instructions in no region (the rest of the guest)
    lost: int


def attribute(window: Window, symbols: Symbols, region_roles: dict[int, str], drivers: dict[str, str],
              builtin: dict[str, str] | None = None) -> Breakdown:
    """Instructions per role, function and family; region_roles: region id -> role name."""
    by_role = {r.name: RoleCost(r) for r in ROLES if r.name in region_roles.values()}
    for rid, (_, entries) in window.regions.items():
        if rid in region_roles:
            by_role[region_roles[rid]].entries += entries
    for source, into in ((window.returned, "returned"), (window.marked, "marked")):
        for (rid, _parent), by_value in source.items():
            if rid in region_roles:
                rows = getattr(by_role[region_roles[rid]], into)
                for k, (n, insns) in by_value.items():
                    old = rows.get(k, (0, 0))
                    rows[k] = (old[0] + n, old[1] + insns)
    outside = 0
    for addr, _n, counts in window.blocks:
        name, module = symbols.at(addr) if addr else ("user space", "")
        label = f"{name} [{module}]" if module else name
        for rid, count in enumerate(counts):
            if not count:
                continue
            role = region_roles.get(rid)
            if role is None:
                outside += count
                continue
            rc = by_role[role]
            rc.instructions += count
            rc.functions[label] = rc.functions.get(label, 0) + count
            fam = family_of(name, module, drivers, builtin)
            rc.families[fam] = rc.families.get(fam, 0) + count
    return Breakdown(by_role, window.total(), outside, window.lost)


# ---- the plugin's control socket -----------------------------------------------------
class PluginControl:
    """Line commands to the plugin in the guest's QEMU (see harness_cost.c)."""

    def __init__(self, path: Path, timeout: float = 30.0) -> None:
        self.path = path
        self.timeout = timeout

    def send(self, *commands: str) -> list[str]:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(self.timeout)
                s.connect(str(self.path))
                f = s.makefile("rw")
                replies = []
                for c in commands:
                    f.write(c + "\n")
                    f.flush()
                    reply = f.readline().strip()
                    if not reply.startswith("ok"):
                        raise GuestError(f"cost plugin: {c!r} -> {reply or 'no reply'}")
                    replies.append(reply)
                return replies
        except OSError as e:
            raise GuestError(f"cost plugin control socket {self.path}: {e}") from e


class CostProbe:
    """Counts the instructions of the traffic's window per region (Probe protocol)."""

    name = "cost"

    def __init__(self, receiver: str, sender: str, probes: dict[str, int] | None = None) -> None:
        self.receiver, self.sender = nic(receiver), nic(sender)
        self.probes = PROBED if probes is None else probes  # function -> the argument recorded
        self.probe_ids: dict[int, str] = {}  # probe region id -> the function (its name in this kernel)
        self.probes_absent: list[str] = []  # probed functions this kernel does not have (not counted: NaN)
        self.region_roles: dict[int, str] = {}
        self.dump_path: Path | None = None
        self.absent: list[str] = []  # entry functions the kernel does not have on their own (inlined)

    def _control(self, g: Guest) -> PluginControl:
        if g.options.cost_plugin is None:
            raise Unmeasurable("instruction counts need the cost guest (QEMU with the harness_cost plugin)")
        return PluginControl(g.cost_socket)

    def regions(self, g: Guest) -> list[str]:
        """Region commands for this receiver and sender; functions not in kallsyms are inlined."""
        syms = guest_symbols(g)
        commands, self.region_roles, self.absent = [], {}, []
        rid = 1
        for role in ROLES:
            model = self.receiver if role.side == "receiver" else self.sender
            for fn in entry_functions(model, role):
                addr = syms.address(fn, model.module or "")
                if addr is None:
                    self.absent.append(f"{fn} ({model.model} {role.name})")
                    continue
                if rid >= IRQ_REGION:
                    raise HarnessError(f"cost probe: more than {IRQ_REGION - 1} regions")
                commands.append(f"region {rid} {addr:x}")
                self.region_roles[rid] = role.name
                rid += 1
        self.probe_ids = {}
        found_names = resolve_functions(list(self.probes), set(syms.text_names()))
        self.probes_absent = [n for n in self.probes if n not in found_names]
        for name, found in found_names.items():
            if rid >= IRQ_REGION:
                raise HarnessError(f"cost probe: more than {IRQ_REGION - 1} regions and probes")
            mark = " mark" if name in MARKS else ""
            commands.append(f"probe {rid} {syms.address(found):x} {max(self.probes[name], 1)}{mark}")
            self.probe_ids[rid] = name
            rid += 1
        commands += [f"region {i} 0" for i in range(rid, IRQ_REGION)]
        entries = syms.irq_entries(irq_stub_stride(g.kernel.config.read_text()))
        if not entries:
            raise Unmeasurable("no interrupt entry symbols (irq_entries_start, asm_sysvec_*) in kallsyms: "
                               "interrupts inside the rx path could not be told apart")
        commands += ["irqentry clear", *(f"irqentry {a:x} {e:x} {stride}" for a, e, stride in entries)]
        self.region_roles[IRQ_REGION] = "interrupts"
        return commands

    def arm(self, g: Guest) -> None:
        ctl = self._control(g)
        ctl.send(*self.regions(g), "arm")

    def disarm(self, g: Guest) -> None:
        assert g.workdir is not None
        self.dump_path = g.workdir / "cost-window.txt"
        self._control(g).send("disarm", f"dump {self.dump_path}")

    def cleanup(self, g: Guest) -> None:
        if g.options.cost_plugin is not None and g.alive():
            with contextlib.suppress(GuestError):
                self._control(g).send("disarm")

    def collect(self, g: Guest) -> list[Observation]:
        assert self.dump_path is not None
        window = parse_dump(self.dump_path.read_text())
        drivers = {m.module: f"driver {m.model}" for m in (self.receiver, self.sender) if m.module}
        builtin = {fn: f"driver {m.model}" for m in (self.receiver, self.sender) if not m.module
                   for fn in driver_functions(g.kernel, m)}
        b = attribute(window, guest_symbols(g), self.region_roles, drivers, builtin)
        unmarked = [fn for fn in self.probes_absent if fn in MARKS]
        return (observations(b, self.receiver, self.sender, self.absent, unmarked)
                + probe_observations(window, self.probe_ids, self.region_roles, self.receiver, self.sender,
                                     self.probes)
                + [Observation(f"calls/{WITNESS}:{fn}:under:{role.name}", float("nan"),
                               (self.receiver if role.side == "receiver" else self.sender).driver,
                               f"{fn} is not in this kernel's kallsyms (inlined or another name): not counted",
                               {"unavailable": True})
                   for fn in self.probes_absent for role in ROLES if role.side])


def observations(b: Breakdown, receiver: NicModel, sender: NicModel, absent: list[str],
                 unmarked: list[str] | None = None) -> list[Observation]:
    """unmarked: marking functions (MARKS) this kernel lacks: rescheduled polls could not be
    told apart, so the one-frame kinds say so (NaN for the rescheduled ones)."""
    how = (f"QEMU TCG plugin harness_cost.so (witness {WITNESS}): guest instructions of the translation blocks "
           "executed while armed around the traffic")
    obs = [Observation(f"{METRIC}:guest", b.guest_total, "", f"{how}: every vCPU, user space included",
                       {"outside_regions": b.outside, "lost_region_entries": b.lost})]
    for rc in b.roles.values():
        model = receiver if rc.role.side == "receiver" else sender
        entry = "/".join(entry_functions(model, rc.role)) or "the IDT's interrupt entries"
        driver = model.driver if rc.role.side else ""
        top = sorted(rc.functions.items(), key=lambda kv: -kv[1])
        obs.append(Observation(f"{METRIC}:{rc.role.name}", rc.instructions, driver,
                               f"{how}: {rc.role.what} ({entry}; entered {rc.entries} times)",
                               {"entries": rc.entries, "families": rc.families, "top": top[:25],
                                "inlined": absent}))
        obs.append(Observation(f"entries:{rc.role.name}", rc.entries, driver,
                               f"{how}: times {entry} was entered"))
        if rc.role.functions:
            obs += instance_observations(rc, driver, f"{how}: {rc.role.what}, in the instances of {entry} that "
                                         "returned", unmarked or [])
        for fam, count in sorted(rc.families.items()):
            obs.append(Observation(f"{METRIC}:{rc.role.name}:family:{fam}", count, driver,
                                   f"{how}: {rc.role.what}, in functions of the family {fam!r}"))
        for fn, count in top:
            if count >= FUNCTION_SHARE * rc.instructions:
                obs.append(Observation(f"{METRIC}:{rc.role.name}:fn:{fn}", count, driver,
                                       f"{how}: {rc.role.what}, in {fn}"))
    return obs


def probe_observations(window: Window, probe_ids: dict[int, str], region_roles: dict[int, str],
                       receiver: NicModel, sender: NicModel, probes: dict[str, int] = PROBED) -> list[Observation]:
    """Per probed function and the role it was called from: calls, the sum of what they
    returned and of the argument recorded (each with its histogram), their instructions."""
    obs = []
    how = f"QEMU TCG plugin harness_cost.so (witness {WITNESS}): calls made inside the region"
    for (rid, parent), by_value in window.returned.items():
        fn, role = probe_ids.get(rid), region_roles.get(parent)
        if fn is None or role is None or role == "interrupts":
            continue
        side = next(r.side for r in ROLES if r.name == role)
        driver = (receiver if side == "receiver" else sender).driver
        calls = sum(n for n, _ in by_value.values())
        insns = sum(i for _, i in by_value.values())
        returned = sum(k * n for k, (n, _) in by_value.items())
        args = window.arguments.get((rid, parent), {})
        where = f"{how} {role}"
        arg = probes.get(fn, 1)
        obs += [
            Observation(f"calls/{WITNESS}:{fn}:under:{role}", calls, driver, f"{where}: calls of {fn}"),
            Observation(f"{METRIC}:{fn}:under:{role}", insns, driver, f"{where}: {fn}'s instructions, inclusive"),
        ]
        if fn not in RETURNS_NOTHING:
            obs.append(Observation(f"returned/{WITNESS}:{fn}:under:{role}", returned, driver,
                                   f"{where}: the sum of what {fn} returned (65 stands for more than 64)",
                                   {"by_value": {str(k): n for k, (n, _) in sorted(by_value.items())}}))
        if arg:
            obs.append(Observation(f"argument/{WITNESS}:{fn}:under:{role}", sum(k * n for k, n in args.items()),
                                   driver, f"{where}: the sum of {fn}'s argument {arg} at entry (65 stands for more)",
                                   {"by_value": {str(k): n for k, n in sorted(args.items())}}))
    return obs


# How a function region's closed instances are split by what they returned (a NAPI poll
# returns the frames it received): one frame, several, none; and one-frame polls by
# whether they scheduled their NAPI again (marked: see MARKS). The compared figure is a
# one-frame poll that completed: the same work per frame in every guest.
INSTANCE_KINDS: tuple[tuple[str, str, Callable[[int], bool], bool | None], ...] = (
    ("one", "1 (a poll of one frame that completed: its NAPI not scheduled again)", lambda k: k == 1, False),
    ("one-rescheduled", "1 (a poll of one frame that scheduled its NAPI again: NAPIF_STATE_MISSED, or the driver "
     "found more work after completing)", lambda k: k == 1, True),
    ("several", "2 or more (a poll of several frames)", lambda k: k >= 2, None),
    ("none", "0 (a poll that found nothing)", lambda k: k == 0, None),
)


def instance_observations(rc: RoleCost, driver: str, returns: str, unmarked: list[str]) -> list[Observation]:
    """Per kind of instance: how many, and their own instructions (nested regions and
    interrupts apart); for one-frame polls that is the cost of one frame, whatever the batching."""
    obs = []
    for kind, words, pick, marked in INSTANCE_KINDS:
        n, insns = rc.instances(pick, marked)
        if unmarked and marked is not None:  # nothing marked: rescheduled polls are among the others
            words += f" ({', '.join(unmarked)} not in this kernel's kallsyms: rescheduled polls not told apart)"
            n, insns = (float("nan"), float("nan")) if marked else (n, insns)
        obs.append(Observation(f"instances:{rc.role.name}:{kind}", n, driver, f"{returns} {words}"))
        obs.append(Observation(f"{METRIC}:{rc.role.name}:{kind}", insns, driver,
                               f"{returns} {words}, their own instructions", {"instances": n}))
    frames = sum(k * n for k, (n, _) in rc.returned.items())
    obs.append(Observation(f"returned:{rc.role.name}", frames, driver, f"{returns}: the sum (a poll: frames received)",
                           {"by_value": {str(k): n for k, (n, _) in sorted(rc.returned.items())}}))
    return obs
