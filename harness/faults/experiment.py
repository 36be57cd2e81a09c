"""The rx-alloc-failure experiment: a NIC's driver has its own page and slab
allocations failed on purpose while frames arrive, then gets a clean burst.

On the debug flavour (harness.measurement.leaks and the console watch do the rest
through the Lab: a leak from the driver or any kernel report makes the experiment
an error). What it measures, per NIC:
- failures injected (fail_page_alloc and failslab, each bounded by FAILURES,
  aimed at the driver's text by the stack filter), while a socket that never
  reads holds every frame (udp_sink): a driver that recycles its rx pages (igb)
  allocates only for a page the stack still holds, so with frames freed as they
  arrive it may allocate nothing at all, and nothing could fail,
- the driver's own count of them (its ethtool -S counter, where it has one),
- recovery: after injection stops and RECOVERY_WAIT has passed, every frame of a
  clean burst arrives (a driver that stops refilling after a failure keeps an
  empty ring and loses them).
Its guest's management NIC never shares the driver (nics.hub_apart, through
survey.techniques.measure_nic): injected into
the driver's text, the failures would also hit the harness's own ssh."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

from harness.claims.lab import Lab
from harness.errors import Unmeasurable
from harness.faults.inject import DEBUGFS, KINDS, Injection, TextRange, dma_debug_text, text_range, text_symbols
from harness.guest.vm import Guest
from harness.measurement import xdp
from harness.measurement.measure import Measurement, RunContext, to_frame
from harness.measurement.probes import Observation
from harness.measurement.traffic import PktgenConfig, TrafficRun, run_pktgen
from harness.measurement.udp_sink import udp_sink
from harness.nics import nic

# Failures per kind, and the share of the driver's allocations that fail until then.
# Half, not all: a driver retries a failed buffer on its next poll, so failing every
# call would hit the same buffer again and again (a leak per failed buffer, as
# faults--leak-on-alloc-fail.patch makes igb do, would then be one page in all).
FAILURES, PROBABILITY = 128, 50


FAULT_KINDS = ("page", "slab", "function")


def kinds_for(model: str) -> tuple[str, ...]:
    """What is failed in one NIC's driver: page and slab allocations always; page_pool's
    allocation too where the driver takes its rx buffers from a pool under XDP (the
    catalogue's rx_pool_under_xdp: the experiment then attaches XDP_PASS)."""
    return FAULT_KINDS if nic(model).rx_pool_under_xdp else FAULT_KINDS[:2]
# page_pool's allocation, ALLOW_ERROR_INJECTION(..., NULL): its 7.x name, then 6.12's
# (the kernel's drivers/net/hw/pp_alloc_fail.py fails the same function).
POOL_ALLOCS = ("page_pool_alloc_netmems", "page_pool_alloc_pages")
# fail_function's check runs in a kprobe handler: the driver's frame is deeper down.
FUNCTION_STACK_DEPTH = 16
# Frames while injecting, and the clean burst after: paced so that under TCG no
# frame is lost before the NIC model (a loss there would look like no recovery).
FAULT_PKTGEN = PktgenConfig(count=2000, pkt_size=60, rate_pps=1000)
CLEAN_PKTGEN = PktgenConfig(count=500, pkt_size=60, rate_pps=1000)
# igb's watchdog raises an rx interrupt every 2 s (igb_watchdog_task writes EICS),
# which restarts a ring whose refill failed while it was empty.
RECOVERY_WAIT_S = 3.0

@dataclass(frozen=True)
class FaultOutcome:
    injected: dict[str, int]  # kind -> failures injected
    counted: int | None  # the driver's count, None where it has none
    during: tuple[TrafficRun, ...]  # one run per kind injected
    clean: TrafficRun
    phases: dict[str, float]  # seconds


def driver_text(g: Guest, model: str) -> tuple[TextRange, TextRange | None]:
    """(the driver's text, the DMA-API checker's text) from the guest's kallsyms."""
    from harness.measurement.cost import driver_functions

    n = nic(model)
    symbols = text_symbols(g.run("grep -E ' [tT] ' /proc/kallsyms").stdout)
    text = (text_range(symbols, module=n.module) if n.module
            else text_range(symbols, functions=driver_functions(g.kernel, n)))
    return text, dma_debug_text(symbols)


def counted(model: str, *runs: TrafficRun) -> int | None:
    pattern = nic(model).rx_alloc_fail_counter
    if not pattern:
        return None
    return sum(v for r in runs for k, v in r.rx_delta.items() if re.fullmatch(pattern, k))


def pool_alloc(g: Guest) -> str:
    injectable = g.run(f"cat {DEBUGFS}/fail_function/injectable").stdout
    names = {line.split()[0] for line in injectable.splitlines() if line.strip()}
    found = next((f for f in POOL_ALLOCS if f in names), None)
    if found is None:
        raise Unmeasurable(f"none of {', '.join(POOL_ALLOCS)} is in fail_function/injectable")
    return found


def injections_for(g: Guest, model: str, text: TextRange, checker: TextRange | None) -> list[Injection]:
    """Each kind aimed at the driver's text, never through the DMA-API checker's."""
    return [Injection(kind, FAILURES, PROBABILITY, text, function=pool_alloc(g), stack_depth=FUNCTION_STACK_DEPTH,
                      reject=checker)
            if kind == "function" else Injection(kind, FAILURES, PROBABILITY, text, reject=checker)
            for kind in kinds_for(model)]


def inject_and_recover(g: Guest, model: str, peer: str, text: TextRange, checker: TextRange | None) -> FaultOutcome:
    injections = injections_for(g, model, text, checker)
    src, dst = g.nic(peer), g.nic(model)
    phases: dict[str, float] = {}
    during: list[TrafficRun] = []
    left: dict[str, str] = {}
    # One kind at a time, each over its own frames: failed page refills leave the ring
    # short, and failed skb heads on a short ring hit the same few buffers again and again
    # (both at once, igb with faults--leak-on-alloc-fail.patch leaked 3 pages, not 33).
    # Each kind's frames are held until its injection stops, then given back, so the
    # leak check after the experiment sees every page the stack had freed.
    for inj in injections:
        started = time.monotonic()
        with udp_sink(g, dst, "holds"):
            g.run(inj.arm_script())
            try:
                during.append(run_pktgen(g, src, dst, FAULT_PKTGEN, require_all=False))
            finally:
                left[inj.kind] = g.run(inj.disarm_script()).stdout
        phases[f"inject {inj.kind}"] = time.monotonic() - started
    injected = {inj.kind: inj.injected(left[inj.kind]) for inj in injections}
    time.sleep(RECOVERY_WAIT_S)
    started = time.monotonic()
    clean = run_pktgen(g, src, dst, CLEAN_PKTGEN, require_all=False)
    phases["clean burst"] = time.monotonic() - started
    return FaultOutcome(injected, counted(model, *during, clean), tuple(during), clean, phases)


def outcome_observations(o: FaultOutcome, model: str, text: str) -> list[Observation]:
    driver = nic(model).driver
    obs = [Observation(f"faults_injected:{kind}", n, driver, f"{KINDS[kind][0]} `times` before minus after, stack "
                       f"filter on {text}", {}) for kind, n in o.injected.items()]
    obs.append(Observation("faults_counted_by_driver", float("nan") if o.counted is None else o.counted, driver,
                           f"ethtool -S {nic(model).rx_alloc_fail_counter or '(no counter)'} delta over every burst",
                           {"unavailable": True} if o.counted is None else {}))
    obs.append(Observation("faults_frames_sent", sum(r.result.sent for r in o.during), driver,
                           "pktgen, while injecting (a run per kind)", {}))
    obs.append(Observation("faults_frames_received", sum(r.received for r in o.during), driver,
                           "receiver's rx_packets delta while injecting",
                           {"losses": [r.loss_report() for r in o.during]}))
    obs.append(Observation("recovery_frames_sent", o.clean.result.sent, driver,
                           f"pktgen, a clean burst {RECOVERY_WAIT_S:.0f} s after injection stopped", {}))
    obs.append(Observation("recovery_frames_received", o.clean.received, driver,
                           "receiver's rx_packets delta over the clean burst", {"losses": o.clean.loss_report()}))
    return obs


@contextlib.contextmanager
def xdp_pass(lab: Lab, g: Guest, model: str) -> Iterator[None]:
    """An XDP_PASS program on the NIC, in driver mode: the frames still reach the stack,
    and a driver like vmxnet3 takes its rx buffers from its page_pool only then."""
    ifname = g.nic(model)
    xdp.attach(g, ifname, xdp.build_programs(lab.cache)["xdp_pass"], "native")
    try:
        yield
    finally:
        xdp.detach(g, ifname)


def exp_name(model: str) -> str:
    return f"rx-alloc-failure:{model}"


def fault_experiment(lab: Lab, model: str, peer: str) -> None:
    from harness.survey.techniques import measure_nic

    def run(g: Guest) -> Measurement:
        started = time.monotonic()
        text, checker = driver_text(g, model)
        found = time.monotonic() - started
        with xdp_pass(lab, g, model) if nic(model).rx_pool_under_xdp else contextlib.nullcontext():
            o = inject_and_recover(g, model, peer, text, checker)
        ctx = RunContext(lab.run_id, g.kernel.key, "stock", "direct", "")
        aim = text.what + ("; stacks through the DMA-API checker's text rejected" if checker else "")
        frame = to_frame(ctx, outcome_observations(o, model, aim), o.clean, g.nic(model), g.nic(peer),
                         nic(model).driver)
        phases = {"driver text": found, **o.phases}
        return Measurement(o.clean, frame, time.monotonic() - started, {k: round(v, 1) for k, v in phases.items()})

    measure_nic(lab, exp_name(model), model, lab.nics, "direct", run)
