"""The lab of one `harness run`: kernel variants, guests and measurements,
each made once and shared by every claim that needs it."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from harness.artifacts.image import GuestImage, build_image
from harness.artifacts.kernel import DEFAULT_FRAGMENTS, Kernel
from harness.artifacts.kernel_choice import KernelChoice
from harness.background import BackgroundJob
from harness.cache import Cache
from harness.errors import (
    GuestCommandError,
    GuestTimeout,
    HarnessError,
    KernelUnavailable,
    MeasurementFailure,
    Unmeasurable,
)
from harness.guest.crash import KernelReport
from harness.guest.qemu_abort import QemuAbort, qemu_abort
from harness.guest.vm import Guest, GuestOptions
from harness.measurement import dma_debug, leaks
from harness.measurement.measure import FramesLost, Measurement
from harness.nics import DEFAULT_NICS
from harness.paths import PATCHES_DIR


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


ERROR, UNMEASURABLE = "error", "unmeasurable"


def cost_guest(opts: GuestOptions, cache: Cache) -> GuestOptions:
    """The cost probe's guest: QEMU with the harness_cost plugin (TCG), and the DMA-API
    checker off (dma_debug=off), whose bookkeeping on every map and sync would be
    counted as the driver's cost."""
    from harness.artifacts.qemu_plugin import cost_plugin

    return replace(opts, cost_plugin=cost_plugin(cache),
                   cmdline_extra=(*opts.cmdline_extra, dma_debug.OFF_AT_BOOT))


@dataclass(frozen=True)
class ExperimentFailure:
    """Why an experiment has no measurement. `unmeasurable`: the kernel or host
    lacks something it needs (the claims are inconclusive). `error`: it went wrong
    (a kernel report, QEMU gone, a command failed): the claims get `error`."""

    experiment: str
    kind: str  # ERROR | UNMEASURABLE
    message: str
    reports: tuple[KernelReport, ...] = field(default=())
    qemu_exit: str = ""  # how QEMU ended, when it did

    @property
    def headline(self) -> str:
        """The cause first: the kernel's report, else QEMU's end, else the failure. A
        DMA-API report is evidence, not a crash: the failure leads, the report follows."""
        # A report whose start scrolled out of the console tail is a fragment ("report"):
        # a named one leads when there is one.
        crashes = [r for r in self.reports if not r.is_dma_api]
        crash = next((r for r in crashes if r.kind != "report"), crashes[0] if crashes else None)
        if crash is not None:
            return f"{self.experiment}: kernel {crash.fingerprint}"
        if self.reports and not self.qemu_exit:
            return f"{self.experiment}: {self.message} (DMA-API report during it: {self.reports[0].fingerprint})"
        if self.qemu_exit:
            return f"{self.experiment}: QEMU {self.qemu_exit}; {self.message}"
        return f"{self.experiment}: {self.message}"

    def to_json(self) -> dict:
        return {"experiment": self.experiment, "kind": self.kind, "headline": self.headline,
                "message": self.message, "qemu_exit": self.qemu_exit,
                "reports": [r.to_json() for r in self.reports]}


def failure_message(e: HarnessError) -> str:
    """One line that says what broke: for a guest command, the command (past its
    `set -e`) and the last lines of its stderr, not only the first line of a script."""
    if isinstance(e, GuestCommandError):
        lines = [ln.strip() for ln in e.cmd.splitlines() if ln.strip()]
        cmd = next((ln for ln in lines if not ln.startswith("set -")), lines[0] if lines else "")
        err = [ln.strip() for ln in e.stderr.splitlines() if ln.strip()][-3:]
        return (f"guest command failed (exit {e.rc}): {cmd[:160]}{' ...' if len(lines) > 1 else ''}"
                + (f"; stderr: {' | '.join(err)}" if err else ""))
    return getattr(e, "summary", str(e)).splitlines()[0]


def describe_exit(status: str) -> str:
    """`killed by signal 9` -> `killed by signal 9 (SIGKILL)`."""
    head, _, num = status.rpartition(" ")
    if head.endswith("signal") and num.isdigit():
        try:
            return f"{status} ({signal.Signals(int(num)).name})"
        except ValueError:
            return status
    return status


class _Retry(Exception):
    """An attempt failed for the test bed's reason: the lab tries once more."""

    def __init__(self, why: str, dma: dma_debug.DmaApiCount | None = None) -> None:
        super().__init__(why)
        self.why = why
        self.dma = dma  # the DMA-API checker's count over the failed attempt, carried to the next


def qemu_abort_of(g: Guest) -> QemuAbort | None:
    """QEMU's own abort, if that is how this guest's QEMU ended."""
    if g.alive():
        return None
    if g.console is not None:
        g.console.eof.wait(3)  # QEMU's last words
    return qemu_abort(g.console.last_lines(60) if g.console else [], g.exit_status())


def log(msg: str) -> None:
    print(f"harness: {msg}", file=sys.stderr, flush=True)


class Lab:
    def __init__(self, cache: Cache, run_id: str, *, choice: KernelChoice | None = None,
                 accel: str = "auto", nics: tuple[str, ...] = DEFAULT_NICS, coverage: bool = False) -> None:
        self.cache = cache
        # --coverage: the kernel is a gcov build; each experiment's counts, by object stem
        self.coverage = coverage
        self.gcov: dict[str, dict[str, bytes]] = {}
        self.nics = nics  # catalogue models on the guests' private hub
        self.run_id = run_id
        self.choice = choice or KernelChoice("source")
        self.accel = accel
        self._kernels: dict[str, Kernel] = {}
        self._kernel_errors: dict[str, KernelUnavailable] = {}
        self._image: GuestImage | None = None
        self._image_job: BackgroundJob[GuestImage] | None = None
        self._kernel_jobs: dict[str, BackgroundJob[Kernel]] = {}
        self._guest: Guest | None = None
        # (base kernel key, DMA mode, cost plugin, the NICs on its hub)
        self._guest_key: tuple[str, str, bool, tuple[str, ...]] | None = None
        self._boot_errors: dict[tuple[str, str, bool, tuple[str, ...]], str] = {}
        self.results: dict[str, Measurement] = {}
        self.failures: dict[str, ExperimentFailure] = {}  # experiment -> why it has no measurement
        self.stray_reports: list[KernelReport] = []  # kernel reports outside any experiment (boot, teardown)
        self.qemu_aborts: list[dict] = []  # QEMU's own aborts, each followed by one more boot or attempt
        self.boot_retries: list[dict] = []  # boots that hung with no kernel report, each booted once more
        self._accounted = 0  # console line up to which the current guest's reports are accounted
        self.frames: list[pd.DataFrame] = []
        self.boots: list[dict] = []
        self.timings: dict[str, float] = {}  # where the run's time went: "kernel:<variant>", "image wait", ...

    # ---- artifacts ---------------------------------------------------------
    def kernel(self, variant: str = "stock") -> Kernel:
        """The kernel of `variant`; raises HarnessError (kept for the claim's notes) if it cannot be had."""
        if variant in self._kernel_errors:
            raise self._kernel_errors[variant]
        if variant not in self._kernels:
            started = time.monotonic()
            job = self._kernel_jobs.pop(variant, None)
            try:
                self._kernels[variant] = job.result() if job else self._get_kernel(variant)
                self.timings[f"kernel:{variant}"] = round(time.monotonic() - started, 1)
            except HarnessError as e:
                # Its type stays with it (KernelUnavailable.cause): a build that failed is
                # the kernel's (bisect skips it), anything else is the set-up's.
                self._kernel_errors[variant] = KernelUnavailable(variant, e)
                raise self._kernel_errors[variant] from e
        return self._kernels[variant]

    def has_kernel(self, variant: str) -> bool:
        """Whether the kernel of `variant` has been had already (without getting it)."""
        return variant in self._kernels

    def has_variant(self, variant: str) -> bool:
        """Whether this kernel choice can have `variant` (a prebuilt image has none but stock)."""
        return variant == "stock" or not self.choice.prebuilt

    def _get_kernel(self, variant: str) -> Kernel:
        v = VARIANTS[variant]
        if not self.choice.prebuilt:
            log(f"kernel variant {variant}: {v.purpose}")
        return self.choice.get(self.cache, v.patch_paths, variant, v.fragments)

    def prefetch_kernels(self, variants: set[str]) -> None:
        """Get the variants the experiments will need in the background, beside the
        stock kernel: a variant that differs by a driver module builds that module
        while the stock kernel is had. (Builds of one base kernel serialize on its
        cache lock, so two kernel builds never run at once.)"""
        for v in sorted(variants - {"stock"} - set(self._kernels) - set(self._kernel_jobs)):
            if self.has_variant(v):
                self._kernel_jobs[v] = BackgroundJob(f"kernel variant {v}", lambda v=v: self._get_kernel(v))

    def prefetch_image(self) -> None:
        """Start getting the guest image in the background: on a cold cache mmdebstrap
        (network, dpkg) then overlaps the kernel build (CPU)."""
        if self._image is None and self._image_job is None:
            self._image_job = BackgroundJob("guest image", lambda: build_image(cache=self.cache))

    def image(self) -> GuestImage:
        if self._image is None:
            started = time.monotonic()
            self._image = self._image_job.result() if self._image_job else build_image(cache=self.cache)
            self.timings["image (wait)"] = round(time.monotonic() - started, 1)
        return self._image

    # ---- guests ------------------------------------------------------------
    def guest(self, variant: str = "stock", dma_mode: str = "direct", cost: bool = False,
              nics: tuple[str, ...] | None = None) -> Guest:
        """A booted guest of (variant, DMA mode), with the cost probe's plugin loaded when
        `cost`, and `nics` on its hub (the lab's by default; nics.hub_apart). One guest
        lives at a time (2 cores): asking for another stops the current one, except that
        a variant that differs only by its driver modules is loaded into the running
        guest of its base kernel."""
        hub = nics or self.nics
        failed = (variant, dma_mode, cost, hub)
        if failed in self._boot_errors:  # a failed guest is not booted again for every experiment
            raise HarnessError(self._boot_errors[failed])
        kernel = self.kernel(variant)
        g = self._guest
        if g is not None and g.alive() and self._guest_key == (kernel.base_key or kernel.key, dma_mode, cost, hub):
            if g.kernel.key != kernel.key:
                self._swap_modules(g, kernel, variant, dma_mode)
            return g
        self.stop_guest()
        opts = GuestOptions(accel=self.accel, nics=hub, **DMA_MODES[dma_mode])
        if cost:
            opts = cost_guest(opts, self.cache)
        for attempt in (1, 2):
            log(f"booting {kernel.label} with DMA mode {dma_mode}"
                f"{' and the cost plugin (TCG, DMA-API checker off)' if cost else ''} ...")
            g = Guest(kernel, self.image(), opts, self.cache)
            try:
                g.__enter__()
                break
            except HarnessError as e:
                abort = qemu_abort_of(g)
                quiet = not (g.console.reports(0) if g.console else [])
                if abort is not None and attempt == 1 and quiet:  # the test bed's failure: one more boot
                    self._note_abort(abort, "boot", f"{variant} kernel, DMA mode {dma_mode}: booted again")
                    continue
                if abort is None and attempt == 1 and quiet and isinstance(e, GuestTimeout):
                    # Under TCG a guest now and then hangs early with its timer interrupts lost
                    # (6.12.95 once in CI: rcu_sched "timer wakeup didn't happen", no kernel report):
                    # one more boot; a kernel that hangs again fails the boot.
                    self.boot_retries.append({"variant": variant, "dma_mode": dma_mode,
                                              "why": str(e).splitlines()[0],
                                              "console": g.console.last_lines(12) if g.console else []})
                    log(f"boot hung with no kernel report ({str(e).splitlines()[0]}); booting once more")
                    g.__exit__(None, None, None)
                    continue
                why = f"QEMU aborted twice ({abort.fingerprint})" if abort else str(e).splitlines()[0]
                self._boot_errors[failed] = f"{variant} kernel, DMA mode {dma_mode}: boot failed: {why}"
                raise
        self._guest, self._guest_key = g, (kernel.base_key or kernel.key, dma_mode, cost, hub)
        self._accounted = 0
        self._check_quiet(g, variant, dma_mode, "during boot")
        self.boots.append({"variant": variant, "dma_mode": dma_mode, "cost": cost, "debug": kernel.debug,
                           "kernel": kernel.key,
                           "release": kernel.release, "accel": g.spec.accel, "times": g.times.summary(),
                           "nics": [{"name": n.name, "driver": n.driver, "mac": n.mac} for n in g.nics],
                           "boot_s": round(g.times.ssh, 2), "modules": kernel.meta.get("module_builds", {}),
                           "qemu": g.command_line})
        log(f"guest ready ({g.times.summary()})")
        return g

    def _swap_modules(self, g: Guest, kernel: Kernel, variant: str, dma_mode: str) -> None:
        started = time.monotonic()
        swapped = g.use_kernel_modules(kernel)
        log(f"{variant}: loaded its {', '.join(m + '.ko' for m in swapped) or 'modules'} into the running guest "
            f"({time.monotonic() - started:.1f}s, no reboot)")
        self._check_quiet(g, variant, dma_mode, "while its driver modules were loaded")
        self.boots.append({"variant": variant, "dma_mode": dma_mode, "kernel": kernel.key, "release": kernel.release,
                           "accel": g.spec.accel, "times": f"modules reloaded in the running guest: {swapped}",
                           "boot_s": round(time.monotonic() - started, 2),
                           "modules": kernel.meta.get("module_builds", {}), "qemu": g.command_line})

    def _check_quiet(self, g: Guest, variant: str, dma_mode: str, when: str) -> None:
        """Kernel reports before any experiment (boot, module load) fail that guest."""
        reports = g.console.reports(self._accounted) if g.console else []
        self._accounted = g.console.line_count() if g.console else 0
        if reports:
            self.stray_reports += reports
            self.stop_guest()
            key = (variant, dma_mode, g.options.cost_plugin is not None, g.options.nics)
            self._boot_errors[key] = (f"{variant} kernel, DMA mode {dma_mode}: the kernel reported "
                                      f"{when}: {reports[0].fingerprint}")
            raise HarnessError(self._boot_errors[key])

    def stop_guest(self) -> None:
        """Stop the current guest; kernel reports after the last experiment (its
        teardown) are kept as stray reports, which fail the run."""
        g, self._guest = self._guest, None
        if g is None:
            return
        if g.console is not None:
            self.stray_reports += g.console.reports(self._accounted)
        g.stop()

    # ---- measurements --------------------------------------------------------
    def measure(self, name: str, variant: str, dma_mode: str, run: Callable[[Guest], Measurement],
                cost: bool = False, setup: Callable[[Guest], None] | None = None,
                nics: tuple[str, ...] | None = None) -> None:
        """Measure `name` once per run on a guest of (variant, DMA mode); the rows
        join the run's table under `name`. Each experiment is watched: a kernel
        report on the console (other than a DMA-API report, which is evidence and
        counted), QEMU ending, or any failure makes it an `error`; a missing
        capability (Unmeasurable) makes it unmeasurable. Either is kept with its cause.

        One retry policy: a failure of the test bed, not of the kernel under test, is
        measured once more and the first failure stays with the measurement
        (`retried`): the measuring side failing (MeasurementFailure: a receiver that
        did not read what the kernel delivered) on the same guest; QEMU aborting, and
        frames lost before the NIC model at every pace measure_rx tried (it sends them
        again slower first), on a fresh guest. A second failure is the experiment's error.

        `setup` prepares the guest before the experiment's watch starts (a ring resized
        with ethtool -G): what it allocates is the guest's state, not the experiment's,
        for the DMA-API count and the debug flavour's leak check. `nics`: the guest's hub
        when not the lab's (nics.hub_apart)."""
        if name in self.results or name in self.failures:
            return
        started = time.monotonic()
        if not self.has_variant(variant):
            self._fail(name, UNMEASURABLE, f"needs the {variant!r} kernel variant, which "
                       f"--kernel {self.choice.kind} (a prebuilt image) cannot have")
            return
        retried: list[str] = []
        carried: dma_debug.DmaApiCount | None = None
        while True:
            try:
                m = self._attempt(name, variant, dma_mode, run, retried, cost, carried, setup, nics)
                break
            except _Retry as r:
                retried.append(r.why)
                carried = r.dma
                log(f"{name}: {r.why}; measuring it once more")
        if m is None:
            return
        m.retried = retried
        m.frame = m.frame.assign(experiment=name)
        self.frames.append(m.frame)
        self.results[name] = m
        log(f"measured {name}: {m.traffic.received} frames in {time.monotonic() - started:.1f}s")

    def _attempt(self, name: str, variant: str, dma_mode: str, run: Callable[[Guest], Measurement],
                 retried: list[str], cost: bool = False, carried: dma_debug.DmaApiCount | None = None,
                 setup: Callable[[Guest], None] | None = None,
                 nics: tuple[str, ...] | None = None) -> Measurement | None:
        """One attempt at `name`: its measurement, or None with the failure recorded;
        raises _Retry for a failure of the test bed when no attempt was retried yet.
        `carried`: the DMA-API errors and reports of the attempt before, which count too."""
        try:
            g = self.guest(variant, dma_mode, cost=cost, nics=nics)
        except Unmeasurable as e:
            self._fail(name, UNMEASURABLE, str(e).splitlines()[0])
            return None
        except HarnessError as e:
            self._fail(name, ERROR, str(e).splitlines()[0])
            return None
        log(f"measuring {name} ...")
        mark = g.console.line_count() if g.console else 0
        earlier = f" (and before its one retry: {retried[0]})" if retried else ""
        dma_before: int | None = None
        try:
            if setup is not None:
                setup(g)
            # The cost guest's checker is off from boot (debugfs says "disabled" all along): not
            # a checker that switched itself off mid-run, and no reason to boot again.
            checker_off = dma_debug.off_at_boot(g)
            dma_before = None if checker_off else dma_debug.arm(g)
            pages_before = leaks.arm(g)
            m = run(g)
            reports = g.console.reports(mark) if g.console else []
            crashes = [r for r in reports if not r.is_dma_api]
            if not crashes and pages_before is not None:
                leaked = self._leak_reports(name, g, pages_before, m)
                if leaked:
                    self._fail(name, ERROR, f"leaked from a driver under test: "
                               f"{'; '.join(r.message for r in leaked)}", leaked)
                    self._accounted = g.console.line_count() if g.console else 0
                    return None
            if not crashes and dma_before is not None:
                dma = dma_debug.read(g, dma_before, reports).plus(carried)
                if dma.disabled:
                    # The checker stopped counting (out of entries, or its own allocation failed):
                    # a 0 would be blind, and it stays off for the rest of this boot.
                    m.add("dma_api_errors", float("nan"), "", "debugfs dma-api: the checker switched itself off "
                          "(dma-api/disabled; the console says why): errors after that were not counted",
                          dma.detail())
                    log(f"{name}: the DMA-API checker switched itself off; the next experiment boots a fresh guest")
                    self._accounted = g.console.line_count() if g.console else 0
                    self.stop_guest()
                else:
                    m.add("dma_api_errors", dma.errors, "", "debugfs dma-api/error_count delta over the experiment "
                          "(every driver; CONFIG_DMA_API_DEBUG)", dma.detail())
            elif not crashes:
                m.add("dma_api_errors", float("nan"), "",
                      f"{dma_debug.OFF_AT_BOOT} on the cost guest's command line: the checker not run"
                      if checker_off else "no debugfs dma-api: kernel without CONFIG_DMA_API_DEBUG",
                      {"unavailable": True, "off_at_boot": checker_off})
        except Unmeasurable as e:
            self._fail(name, UNMEASURABLE, str(e).splitlines()[0])
            self._accounted = g.console.line_count() if g.console else 0
            return None
        except HarnessError as e:  # MeasurementFailure among them
            reports = g.console.reports(mark) if g.console else []
            abort = qemu_abort_of(g)
            # Once more only for the test bed's failure while the kernel reported no crash:
            # a crash is evidence that a second attempt would lose. A DMA-API report is not
            # lost: dma_debug.arm re-arms printing for the next attempt, which counts again.
            if not retried and not any(not r.is_dma_api for r in reports):
                so_far = self._dma_so_far(g, dma_before, reports)
                if abort is not None:
                    self._note_abort(abort, name, "measured again on a fresh guest")
                    raise _Retry(f"QEMU aborted ({abort.fingerprint})") from e
                if isinstance(e, MeasurementFailure) and g.alive():
                    self._accounted = g.console.line_count() if g.console else 0
                    raise _Retry(failure_message(e), so_far) from e
                if isinstance(e, FramesLost) and e.before_nic and g.alive():
                    # Lost before the NIC model at every pace measure_rx tried: the host
                    # fell behind (a stall, not the driver's rate): a fresh guest, once.
                    self._accounted = g.console.line_count() if g.console else 0
                    self.stop_guest()
                    raise _Retry(f"{failure_message(e)}; measured again on a fresh guest", so_far) from e
            what = f"QEMU aborted ({abort.fingerprint}): the emulator's failure, not the kernel's; " if abort else ""
            self._fail_on_guest(name, g, mark, what + failure_message(e) + earlier)
            return None
        if crashes:
            self._fail_on_guest(name, g, mark, f"the kernel reported {len(crashes)} time(s) during the experiment")
            return None
        self._accounted = g.console.line_count() if g.console else 0
        return m

    @staticmethod
    def _dma_so_far(g: Guest, before: int | None, reports: list[KernelReport]) -> dma_debug.DmaApiCount | None:
        """The DMA-API checker's count over a failed attempt on a live guest, so a retry
        keeps the evidence (None: no checker, or the guest cannot be asked)."""
        if before is None or not g.alive():
            return None
        try:
            return dma_debug.read(g, before, reports)
        except HarnessError:
            return None

    def _leak_reports(self, name: str, g: Guest, pages_before: dict, m: Measurement) -> tuple[KernelReport, ...]:
        """The debug flavour's leak check after `name` (harness.measurement.leaks): its
        figures join the measurement; what a driver under test leaked comes back as reports."""
        drivers = leaks.drivers_of(g)
        check = leaks.read(g, pages_before, drivers)
        m.add("leaked_driver_objects", len(check.objects), "", "kmemleak: unreferenced slab objects allocated "
              "under a driver under test, two scans after the experiment", check.to_json())
        m.add("leaked_driver_pages", check.leaked_pages, "", "page_owner: base pages live from the drivers' "
              "allocation stacks after the experiment minus before (past the floor: after the NICs under test "
              "were set down and up, which frees and refills their rings)",
              {"floor": leaks.PAGE_LEAK_FLOOR, "before_ring_cycle": check.grown_before_cycle})
        cycled = (f" ({check.grown_before_cycle:+d} before the rings were cycled)"
                  if check.grown_before_cycle is not None else "")
        log(f"{name}: leak check in {check.scans_s:.0f}s: {len(check.objects)} driver object(s) unreferenced "
            f"({len(check.other_objects)} elsewhere), driver pages {check.leaked_pages:+d}{cycled}")
        return check.reports(drivers)

    def _note_abort(self, abort: QemuAbort, during: str, then: str) -> None:
        """QEMU aborted (the first time, during a boot or an experiment): kept for the
        record, the dead guest dropped without counting its console again."""
        self.qemu_aborts.append({"during": during, "then": then, **abort.to_json()})
        log(f"QEMU aborted during {during}: {abort.message} ({abort.exit_status}); {then}")
        if self._guest is not None and self._guest.console is not None:
            self._accounted = self._guest.console.line_count()
        self.stop_guest()

    def _fail_on_guest(self, name: str, g: Guest, mark: int, message: str) -> None:
        """An experiment that went wrong on its guest: its kernel reports, how QEMU
        ended, and a fresh guest for the next experiment."""
        if g.console is not None and not g.alive():
            g.console.eof.wait(3)  # QEMU's last words
        reports = tuple(r for r in (g.console.reports(mark) if g.console else []) if not r.is_dma_api) or tuple(
            g.console.reports(mark) if g.console else [])
        qemu_exit = "" if g.alive() else describe_exit(g.exit_status())
        self._fail(name, ERROR, message, reports, qemu_exit)
        self._accounted = g.console.line_count() if g.console else 0
        self.stop_guest()

    def _fail(self, name: str, kind: str, message: str, reports: tuple[KernelReport, ...] = (),
              qemu_exit: str = "") -> None:
        failure = ExperimentFailure(name, kind, message, reports, qemu_exit)
        self.failures[name] = failure
        log(f"experiment {name} {'not measurable' if kind == UNMEASURABLE else 'failed'}: {failure.headline}")
        for r in reports[:1]:
            print("  | " + "\n  | ".join(r.lines[:40]), file=sys.stderr, flush=True)

    def table(self) -> pd.DataFrame:
        return pd.concat(self.frames, ignore_index=True) if self.frames else pd.DataFrame()

    def close(self) -> None:
        try:
            for job in self._kernel_jobs.values():
                job.cancel()
            self._kernel_jobs.clear()
            if self._image_job is not None and self._image is None:
                self._image_job.cancel()
            self.stop_guest()
        finally:
            self._guest = None
