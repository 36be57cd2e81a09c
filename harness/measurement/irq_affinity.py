"""The sender's and the receiver's interrupts pinned to CPUs of their own for an
experiment, and back to every CPU after.

Where they run changes what a frame costs: the per-CPU NAPI skb cache and the
slab's per-CPU slabs are shared by whatever runs on a CPU. From 7.x
napi_consume_skb() hands an skb completed on another CPU than its allocator's
back to that CPU (skb_attempt_defer_free), and __alloc_skb() in process context
(pktgen's thread, a sending socket) takes heads from the NAPI cache; on one CPU
the receiver's rx then takes heads from the very cache the sender drains or the
completions fill. Measured (scripts/cost_determinism.py, igb's rx cost in five
guests): with the interrupts left where the kernel put them, one guest in five
read 3 % less on 6.12.95, the slab's refill slow path (`__slab_alloc_node`)
about 60 instructions a frame apart, and 7.3.4's spread was 2.9 % (`___slab_alloc`,
76); pinned, 0.24-0.35 % on 6.12.95 in four series (`__slab_alloc_node` within 0.7)
and 0.61-1.26 % on 7.3.4 (`___slab_alloc` within 4)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from harness.guest.vm import Guest

# pktgen runs on this CPU's thread (traffic.pktgen_script: kpktgend_0); a sending socket's
# process is pinned to SOCKET_SENDER_CPU (socket_tx). The receiver's interrupts go to the next
# CPU (the harness guest has two: GuestOptions.cpus).
PKTGEN_CPU = 0
SOCKET_SENDER_CPU = 1


def irqs_script(pci: str, mask: str) -> str:
    """Shell that sets every interrupt of the PCI device to `mask`: its MSI/MSI-X vectors
    (sysfs msi_irqs), else its INTx line (sysfs irq; a shared line moves its other users
    too); no interrupt at all fails, rather than leaving the regime unpinned unsaid."""
    dev = f"/sys/bus/pci/devices/{pci}"
    # `|| true`: a device without MSI has no msi_irqs, and `set -e` would end the script there.
    return (f"irqs=$(ls {dev}/msi_irqs 2>/dev/null || true); [ -n \"$irqs\" ] || irqs=$(cat {dev}/irq); "
            f"[ -n \"$irqs\" ] && [ \"$irqs\" != 0 ] || {{ echo 'no interrupt for {pci}' >&2; exit 1; }}; "
            f"for irq in $irqs; do echo {mask} > /proc/irq/$irq/smp_affinity; done")


@contextlib.contextmanager
def interrupts_apart(guest: Guest, sender_pci: str, receiver_pci: str, sender_cpu: int) -> Iterator[None]:
    """The sender's interrupts on sender_cpu (where it sends from), the receiver's on the next CPU."""
    cpus = guest.options.cpus
    every = f"{(1 << cpus) - 1:x}"
    guest.run(f"set -e\n{irqs_script(sender_pci, f'{1 << sender_cpu:x}')}\n"
              f"{irqs_script(receiver_pci, f'{1 << (sender_cpu + 1) % cpus:x}')}")
    try:
        yield
    finally:
        guest.run(f"{irqs_script(sender_pci, every)}; {irqs_script(receiver_pci, every)}; true", check=False)
