"""A guest made ready for work by hand (`harness shell`, `harness run --keep`):
the XDP objects and ready-made scripts under /root/harness, and a short text on
how to use them. The scripts are the very ones the measurements run."""

from __future__ import annotations

import shlex

from harness.cache import Cache
from harness.guest.vm import Guest
from harness.measurement.dma_probe import DmaProbe
from harness.measurement.probes import POLL_ROOTS, RX_PATH_FUNCTIONS, GraphProbe, T
from harness.measurement.traffic import PktgenConfig, pktgen_script
from harness.measurement.xdp import build_programs

GUEST_DIR = "/root/harness"
BY_HAND_PKTGEN = PktgenConfig(count=10_000, rate_pps=5_000)


def prepare_guest(guest: Guest, cache: Cache) -> None:
    """Write the XDP objects and the scripts into the guest."""
    guest.run(["mkdir", "-p", f"{GUEST_DIR}/xdp"])
    for name, obj in build_programs(cache).items():
        guest.write_file(f"{GUEST_DIR}/xdp/{name}.o", obj.read_bytes())
    for name, text in scripts(guest).items():
        guest.write_file(f"{GUEST_DIR}/{name}", "#!/bin/sh\n" + text + "\n")
        guest.run(["chmod", "+x", f"{GUEST_DIR}/{name}"])


def scripts(guest: Guest) -> dict[str, str]:
    igb, e1000e = guest.nic("igb"), guest.nic("e1000e")
    mac = {n.name: n.mac for n in guest.nics}
    count = "${1:-" + str(BY_HAND_PKTGEN.count) + "}"
    # The frame count becomes the script's first argument (outside single quotes, so the shell expands it).
    fixed = f"echo 'count {BY_HAND_PKTGEN.count}'"
    pktgen = pktgen_script(e1000e, mac[igb], BY_HAND_PKTGEN)
    assert fixed in pktgen, "pktgen_script changed how it sets the count"
    pktgen = pktgen.replace(fixed, f'echo "count {count}"')
    graph = GraphProbe()
    dma = DmaProbe()
    dma.prepare(guest)
    hooks = list(POLL_ROOTS) + RX_PATH_FUNCTIONS
    return {
        "pktgen.sh": f"# {count} frames {e1000e} (e1000e) -> {igb} (igb) at {BY_HAND_PKTGEN.rate_pps}/s\n"
                     f"ip link set dev {e1000e} up; ip link set dev {igb} up\n"
                     # The emulated PHYs take a moment to report carrier; frames sent before are lost.
                     f"for i in $(seq 100); do [ $(cat /sys/class/net/{e1000e}/carrier) = 1 ] && "
                     f"[ $(cat /sys/class/net/{igb}/carrier) = 1 ] && break; sleep 0.1; done\n" + pktgen,
        # Functions that are not traceable in this kernel make the filter write
        # fail: the script keeps only the available ones.
        # Module functions are listed as `igb_poll [igb]`: the name is the first word.
        "graph-arm.sh": "hooks=$(grep -oE '^(" + "|".join(hooks) + f")( |$)' {T}/available_filter_functions | "
                        "sort -u | tr '\\n' ' ')\n"
                        + graph.arm_script(["$hooks"], list(POLL_ROOTS)).replace("'$hooks'", '"$hooks"'),
        "graph-read.sh": f"echo 0 > {T}/tracing_on\n"
                         f"# calls per function under each poll function\n"
                         f"grep -oE '[a-z_0-9]+\\(\\)' {T}/trace | sort | uniq -c | sort -rn",
        "dma-arm.sh": dma.arm_script(),
        "dma-read.sh": dma.read_script(),
        "probes-off.sh": f"echo 0 > {T}/tracing_on; echo nop > {T}/current_tracer\n" + dma.cleanup_script(),
    }


def usage(guest: Guest, how_to_stop: str) -> str:
    igb, e1000e = guest.nic("igb"), guest.nic("e1000e")
    ssh = shlex.join(guest.ssh_command())
    return f"""harness: guest up ({guest.kernel.label}); {how_to_stop}.
  reach it:     {ssh}
  NICs:         {', '.join(f'{n.name} ({n.driver}, {n.mac})' for n in guest.nics)}; the two NICs under test
                share a QEMU hub and nothing else
  console log:  {guest.console_log}
  in the guest, {GUEST_DIR}/ has:
    pktgen.sh [N]        N frames (default {BY_HAND_PKTGEN.count:,}) {e1000e} -> {igb} at {BY_HAND_PKTGEN.rate_pps}/s;
                         then: ethtool -S {igb} | grep rx_packets
    graph-arm.sh / graph-read.sh   function_graph under igb_poll/e1000e_poll: calls per function
    dma-arm.sh / dma-read.sh       the DMA API (dma:* tracepoints, else kprobes): hist triggers by
                                   device, dir, size, attrs and calling function
    probes-off.sh                  remove the probes
    xdp/*.o              ip link set dev {igb} xdpdrv obj {GUEST_DIR}/xdp/xdp_drop.o sec xdp
                         (off: ip link set dev {igb} xdpdrv off; counts: sysctl kernel.bpf_stats_enabled=1,
                         bpftool prog show)
    legacy-rx:           ethtool --set-priv-flags {igb} legacy-rx on"""
