"""CONFIG_DMA_API_DEBUG as evidence, counted per experiment.

The checker prints only the first `num_errors` reports of a boot (1 by default)
and counts every error in debugfs `dma-api/error_count`, whatever the driver
filter (`driver_filter` only limits what is printed; kernel/dma/debug.c,
err_printk). So each experiment reads the count before and after, and re-arms
`num_errors` so its own first reports are printed and can be attributed to a
driver (`DMA-API: igb 0000:00:04.0: ...`)."""

from __future__ import annotations

from dataclasses import dataclass

from harness.guest.crash import KernelReport
from harness.guest.vm import Guest

DIR = "/sys/kernel/debug/dma-api"
# Reports printed per experiment: enough to name the drivers, few enough that a
# per-frame error does not flood a TCG serial console with call traces.
SHOWN_PER_EXPERIMENT = 3


@dataclass(frozen=True)
class DmaApiCount:
    errors: int  # error_count delta over the experiment (every driver)
    reports: tuple[KernelReport, ...]  # the DMA-API reports printed meanwhile
    disabled: bool  # the checker switched itself off (out of entries): later errors are not counted

    def plus(self, other: DmaApiCount | None) -> DmaApiCount:
        """Both counts together (an attempt and the failed one before it)."""
        if other is None:
            return self
        return DmaApiCount(self.errors + other.errors, other.reports + self.reports, self.disabled or other.disabled)

    def by_driver(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.reports:
            out[r.driver or "?"] = out.get(r.driver or "?", 0) + 1
        return out

    @property
    def unattributed(self) -> int:
        """Errors counted but not printed (beyond SHOWN_PER_EXPERIMENT): whose they are is unknown."""
        return max(0, self.errors - len(self.reports))

    def against(self, driver: str) -> int:
        """Errors that may be `driver`'s: the ones naming it, and every unattributed one."""
        return self.by_driver().get(driver, 0) + self.unattributed

    def detail(self) -> dict:
        return {"by_driver": self.by_driver(), "unattributed": self.unattributed, "disabled": self.disabled,
                "reports": [{"fingerprint": r.fingerprint, "message": r.message} for r in self.reports]}


# The kernel parameter that keeps the checker off for a whole boot (the cost guest's).
OFF_AT_BOOT = "dma_debug=off"


def off_at_boot(guest: Guest) -> bool:
    return OFF_AT_BOOT in guest.options.cmdline_extra


def arm(guest: Guest) -> int | None:
    """Re-arm printing and return the current error_count; None when the kernel has
    no DMA-API debugging (CONFIG_DMA_API_DEBUG off, e.g. Debian's prebuilt kernels)."""
    res = guest.run(f"[ -r {DIR}/error_count ] || exit 3; echo {SHOWN_PER_EXPERIMENT} > {DIR}/num_errors; "
                    f"cat {DIR}/error_count", check=False)
    if res.rc == 3:
        return None
    if res.rc != 0:
        guest.run(f"cat {DIR}/error_count")  # raises with the guest's stderr
    return int(res.stdout.strip())


def read(guest: Guest, before: int, reports: list[KernelReport]) -> DmaApiCount:
    out = guest.run(f"cat {DIR}/error_count {DIR}/disabled").stdout.split()
    return DmaApiCount(int(out[0]) - before, tuple(r for r in reports if r.is_dma_api), out[1] not in ("0", "N"))
