"""Counting that is attributed to one driver's receive path.

A global count of `dma_map_page_attrs` during traffic mixes the generator's TX
maps with the receiver's RX maps, so every probe here says whose work it counts:
  - GraphProbe: function_graph rooted at the drivers' poll functions
    (`set_graph_function`), each call attributed to the root open on its CPU;
  - DmaProbe (dma_probe.py): the DMA API per device, direction, size, attrs
    and calling function;
  - EventCountProbe: tracepoint hit counts (hist triggers).
Probes arm right before traffic and are read right after it; nothing else uses
the NICs under test in between."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Protocol

from harness.errors import GuestError
from harness.guest.vm import Guest
from harness.measurement.ftrace_parse import count_graph, parse_hist
from harness.nics import DEFAULT_NICS, nic

T = "/sys/kernel/tracing"


@dataclass(frozen=True)
class Observation:
    metric: str  # e.g. "calls:napi_build_skb", "dma_map_page_attrs", "dma_sync_for_cpu_bytes"
    value: float
    driver: str  # the driver the count is attributed to ("" when global)
    method: str  # how it was measured, in words a kernel engineer can redo
    detail: dict = field(default_factory=dict)


class Probe(Protocol):
    name: str

    def arm(self, guest: Guest) -> None: ...
    def disarm(self, guest: Guest) -> None: ...
    def collect(self, guest: Guest) -> list[Observation]: ...
    def cleanup(self, guest: Guest) -> None: ...


def tracefs_script(guest: Guest, script: str) -> None:
    """Run a tracefs set-up script; on failure the error carries tracefs's error_log."""
    try:
        guest.run("set -e\n" + script)
    except GuestError as e:
        log = guest.run(f"tail -n 12 {T}/error_log", check=False).stdout.strip()
        # The first line names what tracefs refused (its error_log's last entry).
        errors = [ln.strip() for ln in log.splitlines() if ": error: " in ln]
        refused = errors[-1].split("] ", 1)[-1] if errors else "see below"
        raise GuestError(f"tracefs set-up refused: {refused}\n{e.summary}\n  tracefs error_log:\n    "
                         + (log.replace("\n", "\n    ") or "(empty)"), e.console_tail) from e


# Older kernels name some of the functions differently (6.1: before memory
# allocation profiling and netmem, and before dma_sync_* became inline
# wrappers). Counts are reported under the current name; the method says
# which function was probed.
FUNCTION_ALIASES = {
    "__alloc_pages_noprof": ("__alloc_pages",),
    "napi_alloc_skb": ("__napi_alloc_skb",),  # 6.1: napi_alloc_skb() is an inline wrapper of it
    "skb_add_rx_frag_netmem": ("skb_add_rx_frag",),
    "__dma_sync_single_for_cpu": ("dma_sync_single_for_cpu",),
    "__dma_sync_single_for_device": ("dma_sync_single_for_device",),
    "kmem_cache_alloc_bulk_noprof": ("kmem_cache_alloc_bulk",),  # before memory allocation profiling
}


# Newer kernels route more through a function below the named one: from 6.14 every
# page allocation reaches __alloc_frozen_pages_noprof (__alloc_pages_noprof calls it,
# and slab allocates its pages frozen, past __alloc_pages_noprof), so it is probed
# where it exists and counted under the older name, comparable across kernels.
SUCCESSORS = {
    "__alloc_pages_noprof": ("__alloc_frozen_pages_noprof",),
}


def candidates(f: str) -> tuple[str, ...]:
    """What to probe for `f`, best first: a successor, itself, an older alias."""
    return (*SUCCESSORS.get(f, ()), f, *FUNCTION_ALIASES.get(f, ()))


def resolve_functions(functions: list[str], available: set[str]) -> dict[str, str]:
    """name -> the function to probe for it in this kernel (a successor, itself or
    an older alias); names with none available are left out."""
    found = {}
    for f in functions:
        for candidate in candidates(f):
            if candidate in available:
                found[f] = candidate
                break
    return found


def with_aliases(functions: list[str]) -> list[str]:
    return [name for f in functions for name in candidates(f)]


def traceable(guest: Guest, functions: list[str]) -> set[str]:
    """The subset of `functions` ftrace can hook (inlined or missing ones are absent)."""
    key = "traceable:" + " ".join(sorted(functions))
    if key not in guest.facts:
        pattern = "|".join(functions)
        out = guest.run(f"grep -oE '^({pattern})( |$)' {T}/available_filter_functions | sort -u",
                        check=False).stdout
        guest.facts[key] = {line.strip() for line in out.splitlines()}
    return set(guest.facts[key])  # type: ignore[arg-type]


def pci_drivers(guest: Guest) -> dict[str, str]:
    """PCI address -> bound driver (e.g. "0000:00:04.0" -> "igb")."""
    if "pci_drivers" not in guest.facts:
        out = guest.run("for d in /sys/bus/pci/devices/*; do [ -e $d/driver ] && "
                        "echo ${d##*/} $(basename $(readlink $d/driver)); done; true").stdout
        guest.facts["pci_drivers"] = dict(line.split() for line in out.splitlines() if len(line.split()) == 2)
    return dict(guest.facts["pci_drivers"])  # type: ignore[arg-type]


# ---- function_graph under the poll functions ---------------------------------
# The poll functions of the default NICs (igb, e1000e), each with its driver.
POLL_ROOTS = {p: nic(m).driver for m in DEFAULT_NICS for p in nic(m).polls}
RX_PATH_FUNCTIONS = [
    # skb construction
    "napi_build_skb", "build_skb", "napi_alloc_skb", "__netdev_alloc_skb",
    "skb_add_rx_frag_netmem", "napi_gro_receive", "netif_receive_skb",
    # page life cycle
    "__alloc_pages_noprof", "__page_frag_cache_drain", "__folio_put",
    # refill and DMA
    "igb_alloc_rx_buffers", "e1000_alloc_rx_buffers", "dma_map_page_attrs", "dma_unmap_page_attrs",
    "__dma_sync_single_for_cpu", "__dma_sync_single_for_device",
    # XDP
    "bpf_prog_run_xdp", "xdp_do_redirect", "igb_xdp_xmit_back",
]
# Out of line only with CONFIG_DEBUG_PAGE_REF, and only while the page_ref
# tracepoint of the same name is active: page_ref_add/inc -> __page_ref_mod,
# put_page -> __page_ref_mod_and_test.
PAGE_REF_FUNCTIONS = ["__page_ref_mod", "__page_ref_mod_and_test", "__page_ref_mod_and_return"]


GRAPH_FACT = "function_graph armed"


def teardown_tracer(guest: Guest) -> None:
    """function_graph off and its filters cleared (anything else that uses the trace
    buffer, or a guest handed to a person, starts from here)."""
    guest.facts.pop(GRAPH_FACT, None)
    guest.run(f"echo 0 > {T}/tracing_on; echo nop > {T}/current_tracer; echo > {T}/set_ftrace_filter; "
              f"echo > {T}/set_graph_function; echo > {T}/trace; echo 1408 > {T}/buffer_size_kb", check=False)


class GraphProbe:
    name = "function_graph"

    def __init__(self, roots: dict[str, str] | None = None, functions: list[str] | None = None,
                 buffer_kb: int = 32768) -> None:
        self.roots = roots or POLL_ROOTS
        # One set for every measurement (the page_ref helpers are called only while
        # their tracepoints are on): a guest's tracer is then set up once.
        self.functions = functions or RX_PATH_FUNCTIONS + PAGE_REF_FUNCTIONS
        self.buffer_kb = buffer_kb
        self.probed: dict[str, str] = {}  # name -> function probed for it

    def arm(self, guest: Guest) -> None:
        """function_graph under the roots. Setting the filters patches every hooked
        call site (about 1.4 s under TCG), so a guest keeps the tracer between
        measurements and the next one that asks for the same set only clears the
        buffer (tracing stays off between them)."""
        wanted = list(self.roots) + self.functions
        self.probed = resolve_functions(wanted, traceable(guest, with_aliases(wanted)))
        roots = [r for r in self.roots if r in self.probed]
        if not roots:
            raise GuestError(f"none of the poll functions {list(self.roots)} is traceable", guest.console_tail())
        setup = (tuple(sorted(self.probed.values())), tuple(roots), self.buffer_kb)
        if guest.facts.get(GRAPH_FACT) == setup:
            # Still ours? (a person in `harness shell`, or another tool, may have changed it)
            res = guest.run(f"[ \"$(cat {T}/current_tracer)\" = function_graph ] || exit 3; "
                            f"echo 0 > {T}/tracing_on; echo > {T}/trace; echo 1 > {T}/tracing_on", check=False)
            if res.rc == 0:
                return
        guest.facts.pop(GRAPH_FACT, None)
        tracefs_script(guest, self.arm_script(list(self.probed.values()), roots))
        guest.facts[GRAPH_FACT] = setup

    def arm_script(self, hooks: list[str], roots: list[str]) -> str:
        return f"""echo 0 > {T}/tracing_on
echo nop > {T}/current_tracer
echo {self.buffer_kb} > {T}/buffer_size_kb
echo 0 > {T}/options/funcgraph-irqs
echo {shlex.quote(" ".join(hooks))} > {T}/set_ftrace_filter
echo {shlex.quote(" ".join(roots))} > {T}/set_graph_function
echo function_graph > {T}/current_tracer
echo > {T}/trace
echo 1 > {T}/tracing_on"""

    def disarm(self, guest: Guest) -> None:
        guest.run(f"echo 0 > {T}/tracing_on")

    def collect(self, guest: Guest) -> list[Observation]:
        mark = "==harness-trace=="
        out = guest.run(f"cat {T}/per_cpu/cpu*/stats; echo {mark}; cat {T}/trace", timeout=300).stdout
        stats, _, text = out.partition(mark + "\n")
        lost = sum(int(line.split(":")[1]) for line in stats.splitlines()
                   if line.startswith(("overrun:", "dropped events:")))
        if lost:
            raise GuestError(f"function_graph lost {lost} events to ring-buffer overrun: counts would be short "
                             f"(raise buffer_size_kb above {self.buffer_kb} or send fewer frames)")
        graph = count_graph(text, set(self.roots))
        method = (f"function_graph, set_graph_function={','.join(r for r in self.roots if r in self.probed)}, "
                  "calls counted inside the root on the same CPU (irqs excluded)")
        obs = []
        for root, driver in self.roots.items():
            if root not in self.probed:
                continue
            obs.append(Observation(f"calls:{root}", graph.roots_entered[root], driver, method))
            for func in self.functions:
                if (probed := self.probed.get(func)) is not None:
                    how = method if probed == func else f"{method}; {probed}() in this kernel"
                    by_caller = dict(graph.callers[root].get(probed, {}))
                    obs.append(Observation(f"calls:{func}", graph.counts[root][probed], driver, how,
                                           {"by_caller": by_caller} if by_caller else {}))
        missing = sorted(set(self.functions) - set(self.probed))
        if missing:
            obs.append(Observation("untraceable_functions", len(missing), "", "available_filter_functions",
                                   {"functions": missing}))
        return obs

    def cleanup(self, guest: Guest) -> None:
        """Tracing off; the tracer stays set up for the next measurement (teardown_tracer ends it)."""
        guest.run(f"echo 0 > {T}/tracing_on", check=False)


# ---- tracepoint counts -------------------------------------------------------
class EventCountProbe:
    """Hit counts of tracepoints (e.g. xdp:xdp_exception, page_ref:page_ref_mod), and
    their breakdown by `keys` (a field of the event, e.g. `val` of page_ref_mod).
    A hist trigger also makes the tracepoint active, which some callers test for."""

    name = "tracepoints"

    def __init__(self, events: list[str], keys: str = "common_cpu") -> None:
        self.events = events
        self.keys = keys
        self.armed: list[str] = []

    @staticmethod
    def _dir(event: str) -> str:
        return f"{T}/events/{event.replace(':', '/')}"

    def arm(self, guest: Guest) -> None:
        have = guest.run(["cat", f"{T}/available_events"]).stdout.split()
        self.armed = [e for e in self.events if e in have]
        cmds = [f"echo 'hist:keys={self.keys}' > {self._dir(e)}/trigger" for e in self.armed]
        if cmds:
            tracefs_script(guest, "\n".join(cmds))

    def disarm(self, guest: Guest) -> None:
        for e in self.armed:
            guest.run(f"echo 'hist:keys={self.keys}:pause' >> {self._dir(e)}/trigger",
                      check=False)

    def collect(self, guest: Guest) -> list[Observation]:
        obs = []
        for e in self.events:
            if e not in self.armed:
                obs.append(Observation(f"event:{e}", float("nan"), "", "tracepoint not in this kernel",
                                       {"unavailable": True}))
                continue
            table = parse_hist(guest.run(["cat", f"{self._dir(e)}/hist"]).stdout)
            by = [{**k, "count": v["hitcount"]} for k, v in table.rows]
            obs.append(Observation(f"event:{e}", table.hits, "",
                                   f"hist trigger on {e} keyed by {self.keys} (all CPUs, not attributed)",
                                   {"by": by[:50]}))
        return obs

    def cleanup(self, guest: Guest) -> None:
        for e in self.armed:
            guest.run(f"echo '!hist:keys={self.keys}' > {self._dir(e)}/trigger", check=False)
        self.armed = []


# ---- perf stat ---------------------------------------------------------------
PERF_EVENTS = ("cycles", "instructions", "task-clock", "context-switches")


def parse_perf_stat_csv(text: str) -> dict[str, float | None]:
    """`perf stat -x,` lines (`value,unit,event,...`): value per event, None for
    `<not supported>` / `<not counted>` (e.g. hardware counters under TCG)."""
    out: dict[str, float | None] = {}
    for line in text.splitlines():
        fields = line.split(",")
        if len(fields) < 3 or line.startswith("#"):
            continue
        value, event = fields[0].strip(), fields[2].strip()
        try:
            out[event] = float(value)
        except ValueError:
            out[event] = None
    return out


class PerfStatProbe:
    """System-wide `perf stat` around the traffic (not attributed to a driver:
    a whole-guest cost, useful as a ratio between runs of one kernel)."""

    name = "perf_stat"
    out = "/tmp/harness-perf-stat.csv"
    # perf counts while this workload runs; ending it ends the count. (Signalling
    # perf itself does not work: a background job of a non-interactive shell
    # starts with SIGINT ignored.)
    workload = "sleep 3599"

    def __init__(self, events: tuple[str, ...] = PERF_EVENTS) -> None:
        self.events = events

    def arm(self, guest: Guest) -> None:
        guest.run(f"rm -f {self.out}; (perf stat -a -x, -o {self.out} -e {','.join(self.events)} "
                  f"-- {self.workload} >/dev/null 2>&1 &) ; sleep 0.5")

    def disarm(self, guest: Guest) -> None:
        guest.run(f"pkill -x -f '{self.workload}'; for i in $(seq 50); do "
                  "pgrep -f '^perf stat -a -x,' >/dev/null || break; sleep 0.1; done", check=False)

    def collect(self, guest: Guest) -> list[Observation]:
        values = parse_perf_stat_csv(guest.run(["cat", self.out], check=False).stdout)
        obs = []
        for event in self.events:
            v = values.get(event)
            how = "perf stat -a (whole guest, while the traffic ran)"
            if v is None:
                obs.append(Observation(f"perf:{event}", float("nan"), "", how + ": not supported here "
                                       "(no hardware counters under TCG)" if event in ("cycles", "instructions")
                                       else how + ": not counted", {"unsupported": True}))
            else:
                obs.append(Observation(f"perf:{event}", v, "", how))
        return obs

    def cleanup(self, guest: Guest) -> None:
        guest.run(f"pkill -KILL -f '^perf stat -a -x,'; pkill -x -f '{self.workload}'; rm -f {self.out}; true",
                  check=False)
