"""The lab of one `harness run`: kernel variants, guests and measurements,
each made once and shared by every claim that needs it."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..background import BackgroundJob
from ..cache import Cache
from ..errors import HarnessError
from ..image import GuestImage, build_image
from ..kernel import DEFAULT_FRAGMENTS, Kernel
from ..kernel_choice import KernelChoice
from ..measure import Measurement
from ..paths import PATCHES_DIR
from ..vm import Guest, GuestOptions


@dataclass(frozen=True)
class Variant:
    name: str
    fragments: tuple[str, ...]
    patches: tuple[str, ...] = ()
    purpose: str = ""

    @property
    def patch_paths(self) -> tuple[Path, ...]:
        return tuple(PATCHES_DIR / p for p in self.patches)


VARIANTS = {
    "stock": Variant("stock", DEFAULT_FRAGMENTS, purpose="the kernel under test"),
    "no-reuse": Variant("no-reuse", DEFAULT_FRAGMENTS, ("igb-no-page-reuse.patch",),
                        "igb_can_reuse_rx_page() always false: the A side of page-reuse"),
}
DMA_MODES = {
    "direct": {},
    "swiotlb": {"cmdline_extra": ("swiotlb=force",)},
    "iommu": {"iommu": True},
}


def log(msg: str) -> None:
    print(f"harness: {msg}", file=sys.stderr, flush=True)


class Lab:
    def __init__(self, cache: Cache, run_id: str, *, choice: KernelChoice | None = None,
                 accel: str = "auto") -> None:
        self.cache = cache
        self.run_id = run_id
        self.choice = choice or KernelChoice("source")
        self.accel = accel
        self._kernels: dict[str, Kernel] = {}
        self._kernel_errors: dict[str, str] = {}
        self._image: GuestImage | None = None
        self._image_job: BackgroundJob[GuestImage] | None = None
        self._guest: Guest | None = None
        self._guest_key: tuple[str, str] | None = None
        self._boot_errors: dict[tuple[str, str], str] = {}
        self.results: dict[str, Measurement] = {}
        self.failures: dict[str, str] = {}  # experiment -> why it could not be measured
        self.frames: list[pd.DataFrame] = []
        self.boots: list[dict] = []

    # ---- artifacts ---------------------------------------------------------
    def kernel(self, variant: str = "stock") -> Kernel:
        """The kernel of `variant`; raises HarnessError (kept for the claim's notes) if it cannot be had."""
        if variant in self._kernel_errors:
            raise HarnessError(self._kernel_errors[variant])
        if variant not in self._kernels:
            try:
                self._kernels[variant] = self._get_kernel(variant)
            except HarnessError as e:
                self._kernel_errors[variant] = f"kernel variant {variant!r} unavailable: {e}"
                raise HarnessError(self._kernel_errors[variant]) from e
        return self._kernels[variant]

    def _get_kernel(self, variant: str) -> Kernel:
        v = VARIANTS[variant]
        if not self.choice.prebuilt:
            log(f"kernel variant {variant}: {v.purpose}")
        return self.choice.get(self.cache, v.patch_paths, variant, v.fragments)

    def prefetch_image(self) -> None:
        """Start getting the guest image in the background: on a cold cache mmdebstrap
        (network, dpkg) then overlaps the kernel build (CPU)."""
        if self._image is None and self._image_job is None:
            self._image_job = BackgroundJob("guest image", lambda: build_image(cache=self.cache))

    def image(self) -> GuestImage:
        if self._image is None:
            self._image = self._image_job.result() if self._image_job else build_image(cache=self.cache)
        return self._image

    # ---- guests ------------------------------------------------------------
    def guest(self, variant: str = "stock", dma_mode: str = "direct") -> Guest:
        """A booted guest of (variant, DMA mode). One guest lives at a time (2 cores):
        asking for another stops the current one."""
        key = (variant, dma_mode)
        if self._guest is not None and self._guest_key == key and self._guest.alive():
            return self._guest
        if key in self._boot_errors:  # a guest that failed to boot is not booted again for every experiment
            raise HarnessError(self._boot_errors[key])
        self.stop_guest()
        kernel = self.kernel(variant)
        opts = GuestOptions(accel=self.accel, **DMA_MODES[dma_mode])
        log(f"booting {kernel.label} with DMA mode {dma_mode} ...")
        g = Guest(kernel, self.image(), opts, self.cache)
        try:
            g.__enter__()
        except HarnessError as e:
            self._boot_errors[key] = f"{variant} kernel, DMA mode {dma_mode}: boot failed: {str(e).splitlines()[0]}"
            raise
        self._guest, self._guest_key = g, key
        self.boots.append({"variant": variant, "dma_mode": dma_mode, "kernel": kernel.key,
                           "release": kernel.release, "accel": g.spec.accel, "times": g.times.summary(),
                           "qemu": g.command_line})
        log(f"guest ready ({g.times.summary()})")
        return g

    def stop_guest(self) -> None:
        if self._guest is not None:
            crashes = self._guest.console.crash_lines if self._guest.console else []
            self._guest.stop()
            self._guest = None
            if crashes:
                raise HarnessError("kernel reported on the guest console:\n  " + "\n  ".join(crashes[:10]))

    # ---- measurements --------------------------------------------------------
    def measurement(self, name: str, make: Callable[[], Measurement]) -> Measurement | None:
        """Measure once per run; the rows join the run's table under `name`. A
        failure is kept (with its reason) and the claims that needed it become
        inconclusive, or refuted if their other checks fail."""
        if name in self.results or name in self.failures:
            return self.results.get(name)
        started = time.monotonic()
        log(f"measuring {name} ...")
        try:
            m = make()
        except HarnessError as e:
            self.failures[name] = str(e).splitlines()[0]
            log(f"experiment {name} failed: {e}")
            self.stop_guest_quietly()
            return None
        m.frame = m.frame.assign(experiment=name)
        self.frames.append(m.frame)
        self.results[name] = m
        log(f"measured {name}: {m.traffic.received} frames in {time.monotonic() - started:.1f}s")
        return m

    def stop_guest_quietly(self) -> None:
        """After a failed experiment: the guest may be in any state; boot afresh next time."""
        if self._guest is not None:
            self._guest.stop()
            self._guest = None

    def table(self) -> pd.DataFrame:
        return pd.concat(self.frames, ignore_index=True) if self.frames else pd.DataFrame()

    def close(self) -> None:
        try:
            if self._image_job is not None and self._image is None:
                self._image_job.cancel()
            self.stop_guest()
        finally:
            self._guest = None
