"""The lab's one retry policy: a failure of the test bed (the measuring side, QEMU
itself) is measured once more and the first failure kept; the kernel's failures
never are. On guests that stand in for real ones (what Lab.measure reads of them)."""

from __future__ import annotations

import json
import threading
from typing import ClassVar

import pandas as pd
import pytest

from harness.cache import Cache
from harness.claims import lab as lab_module
from harness.claims.lab import ERROR, Lab
from harness.claims.recorded import RecordedResult, RecordedTraffic
from harness.errors import GuestError, GuestTimeout, HarnessError, MeasurementFailure
from harness.guest.qemu_abort import qemu_abort
from harness.measurement.dma_debug import DmaApiCount
from harness.measurement.measure import FramesLost, Measurement
from harness.measurement.traffic import PktgenConfig, PktgenResult, TrafficRun

# QEMU's assertion as it reached the console (its stderr shares the pty), from a TCG boot here.
ASSERTION = ("qemu-system-x86_64: system/physmem.c:2678: iotlb_to_section: Assertion "
             "`section_index < d->map.sections_nb' failed.")


class FakeConsole:
    def __init__(self, lines: list[str]) -> None:
        self.lines, self.eof = lines, threading.Event()
        self.eof.set()

    def line_count(self) -> int:
        return len(self.lines)

    def reports(self, line_no: int = 0) -> list:
        return []

    def last_lines(self, n: int = 30) -> list[str]:
        return self.lines[-n:]


class FakeGuest:
    """A guest whose kernel said nothing; `dead` with `status` once QEMU ended."""

    def __init__(self, console: list[str] | None = None, status: str = "running") -> None:
        self.console = FakeConsole(console or [])
        self.status = status
        self.kernel = type("Kernel", (), {"debug": False})()  # not the debug flavour: no leak checks
        self.options = type("Options", (), {"cmdline_extra": ()})()

    def alive(self) -> bool:
        return self.status == "running"

    def exit_status(self) -> str:
        return self.status

    def stop(self) -> None:
        if self.alive():
            self.status = "exit status 0"

    def console_tail(self) -> list[str]:
        return self.console.lines[-5:]


def measurement(frames: int = 2000) -> Measurement:
    return Measurement(RecordedTraffic(frames, RecordedResult(0)), pd.DataFrame(), 0.1)  # type: ignore[arg-type]


@pytest.fixture
def lab(tmp_path, monkeypatch):
    """A lab whose guests come from `lab.fakes` in turn (a fresh one per boot)."""
    lab = Lab(Cache(tmp_path), "unit")
    lab.fakes = [FakeGuest(), FakeGuest()]
    lab.booted = []

    def guest(variant, dma_mode, cost=False, nics=None):
        if not lab.booted or not lab.booted[-1].alive():
            lab.booted.append(lab.fakes[len(lab.booted)])
        lab._guest = lab.booted[-1]
        return lab.booted[-1]

    monkeypatch.setattr(lab, "guest", guest)
    monkeypatch.setattr(lab_module.dma_debug, "arm", lambda g: None)
    return lab


def test_a_measurement_failure_is_measured_once_more_on_the_same_guest(lab):
    attempts = []

    def run(g):
        attempts.append(g)
        if len(attempts) == 1:
            raise MeasurementFailure("the AF_XDP receiver read 0 of the 2000 frames")
        return measurement()

    lab.measure("xsk-copy", "stock", "direct", run)
    assert attempts == [lab.fakes[0], lab.fakes[0]] and "xsk-copy" in lab.results
    assert lab.results["xsk-copy"].retried == ["the AF_XDP receiver read 0 of the 2000 frames"]


def always_failing(error) -> tuple[list, object]:
    """A run that raises error(n) on its n-th attempt, and the guests it was given."""
    attempts: list = []

    def run(g):
        attempts.append(g)
        raise error(len(attempts))

    return attempts, run


def test_a_second_measurement_failure_is_an_error_with_both_messages(lab):
    attempts, run = always_failing(lambda n: MeasurementFailure(f"attempt {n}: read 0 of 2000"))
    lab.measure("xsk-zc", "stock", "direct", run)
    failure = lab.failures["xsk-zc"]
    assert len(attempts) == 2 and failure.kind == ERROR
    assert failure.message == "attempt 2: read 0 of 2000 (and before its one retry: attempt 1: read 0 of 2000)"


def test_the_kernels_failures_are_never_retried(lab):
    attempts, run = always_failing(lambda n: HarnessError("pktgen failed"))
    lab.measure("rx", "stock", "direct", run)
    assert len(attempts) == 1 and lab.failures["rx"].kind == ERROR


def test_qemu_aborting_mid_experiment_is_measured_again_on_a_fresh_guest(lab):
    def run(g):
        if g is lab.fakes[0]:
            g.console.lines.append(ASSERTION)
            g.status = "killed by signal 6"
            raise GuestError("ssh: connection closed", g.console_tail())
        return measurement()

    lab.measure("rx", "stock", "direct", run)
    assert lab.booted == lab.fakes and "rx" in lab.results
    (why,) = lab.results["rx"].retried
    assert why.startswith("QEMU aborted (QEMU abort@iotlb_to_section: ")
    (abort,) = lab.qemu_aborts
    assert (abort["during"], abort["function"], abort["exit_status"]) == ("rx", "iotlb_to_section",
                                                                         "killed by signal 6")


def test_qemu_aborting_twice_is_an_error_that_names_qemu(lab):
    def run(g):
        g.status = "killed by signal 6"
        raise GuestError("ssh: connection closed")

    lab.measure("rx", "stock", "direct", run)
    failure = lab.failures["rx"]
    assert failure.kind == ERROR and failure.qemu_exit == "killed by signal 6 (SIGABRT)"
    assert failure.headline.startswith("rx: QEMU killed by signal 6 (SIGABRT); QEMU aborted (")
    assert "the emulator's failure, not the kernel's" in failure.message


@pytest.mark.parametrize("lines, status, expect", [
    ([ASSERTION], "killed by signal 6", "iotlb_to_section"),
    ([ASSERTION], "exit status 1", "iotlb_to_section"),  # the assertion alone says it
    ([], "killed by signal 6", "?"),  # SIGABRT without a word
    (["qemu-system-x86_64: terminating on signal 15 from pid 4242"], "exit status 0", None),  # stopped by us
    (["Kernel panic - not syncing: Fatal exception"], "exit status 0", None),  # the guest's end
    ([], "killed by signal 9", None),
])
def test_what_counts_as_qemus_own_abort(lines, status, expect):
    found = qemu_abort(lines, status)
    assert (found.function if found else None) == expect


class Report:
    """A kernel report as Lab.measure reads it."""

    def __init__(self, kind: str = "WARNING") -> None:
        self.kind, self.is_dma_api = kind, kind == "DMA-API"
        self.fingerprint, self.lines = f"{kind}@igb_poll: something #0", (f"{kind}: something",)
        self.driver, self.message = "igb", f"{kind}: something"


def test_a_measurement_failure_with_a_kernel_warning_is_not_retried(lab):
    # A crash report during the failed attempt is evidence a second attempt would lose.
    lab.fakes[0].console.reports = lambda line_no=0: [Report("WARNING")]
    attempts, run = always_failing(lambda n: MeasurementFailure("the AF_XDP receiver read 0 of the 2000 frames"))
    lab.measure("xsk-copy", "stock", "direct", run)
    assert len(attempts) == 1 and lab.failures["xsk-copy"].kind == ERROR
    assert lab.failures["xsk-copy"].reports[0].kind == "WARNING"


def lost_before_nic(n: int) -> FramesLost:
    sent = PktgenResult(sent=2000, usec=3_200_000, pps=5000 >> (n + 1), errors=0, pkt_size=60, raw="")
    traffic = TrafficRun("eth2", "eth1", PktgenConfig(), sent, 1.0, rx_delta={"link.rx_packets": 1909})
    return FramesLost(traffic, [])


def test_frames_lost_at_every_pace_are_measured_again_on_a_fresh_guest_with_the_dma_evidence(lab, monkeypatch):
    # The checker's errors and reports of the failed attempt (a driver edited to sync
    # what it did not map prints them) join the retry's: the evidence is not lost.
    dma = report = Report("DMA-API")
    lab.fakes[0].console.reports = lambda line_no=0: [report]
    counts = iter([DmaApiCount(900, (dma,), False), DmaApiCount(1000, (), False)])
    monkeypatch.setattr(lab_module.dma_debug, "arm", lambda g: 0)
    monkeypatch.setattr(lab_module.dma_debug, "read", lambda g, before, reports: next(counts))
    attempts: list = []

    def run(g):
        attempts.append(g)
        if len(attempts) == 1:
            raise lost_before_nic(3)
        return measurement()

    lab.measure("rx-swiotlb", "stock", "swiotlb", run)
    assert attempts == lab.fakes and "rx-swiotlb" in lab.results
    (why,) = lab.results["rx-swiotlb"].retried
    assert "91 missing" in why and why.endswith("measured again on a fresh guest")
    (row,) = lab.results["rx-swiotlb"].frame.query("metric == 'dma_api_errors'").itertuples()
    assert row.value == 1900 and json.loads(row.detail)["by_driver"] == {"igb": 1}


def test_frames_lost_twice_is_an_error_with_both_losses(lab):
    attempts, run = always_failing(lost_before_nic)
    lab.measure("rx-swiotlb", "stock", "swiotlb", run)
    assert attempts == lab.fakes
    message = lab.failures["rx-swiotlb"].message
    assert message.count("91 missing") == 2 and "(and before its one retry: " in message


def test_a_qemu_abort_after_a_kernel_warning_is_the_kernels_failure(lab):
    lab.fakes[0].console.reports = lambda line_no=0: [Report("WARNING")]

    def run(g):
        g.status = "killed by signal 6"
        raise GuestError("ssh: connection closed")

    lab.measure("rx", "stock", "direct", run)
    failure = lab.failures["rx"]
    assert lab.booted == lab.fakes[:1] and lab.qemu_aborts == []
    assert failure.headline == "rx: kernel WARNING@igb_poll: something #0"


class BootGuest(FakeGuest):
    """A Guest for Lab.guest's boot: the first QEMU aborts while booting."""

    started: ClassVar[list[BootGuest]] = []

    def __init__(self, kernel, image, options, cache) -> None:
        super().__init__()
        self.spec = type("Spec", (), {"accel": "tcg"})()
        self.times = type("Times", (), {"summary": lambda self: "booted", "ssh": 1.0})()
        self.nics, self.command_line = [], "qemu-system-x86_64 ..."
        BootGuest.started.append(self)

    def __enter__(self) -> BootGuest:
        if len(BootGuest.started) == 1:
            self.console.lines.append(ASSERTION)
            self.status = "killed by signal 6"
            raise GuestError("QEMU exited during boot")
        return self


def booting_lab(tmp_path, monkeypatch, guest_class: type) -> Lab:
    """A Lab whose boots make `guest_class` guests (BootGuest.started lists them)."""
    lab = Lab(Cache(tmp_path), "unit")
    kernel = type("K", (), {"key": "k", "base_key": None, "label": "6.12.95", "release": "6.12.95", "meta": {},
                             "debug": False})()
    monkeypatch.setattr(lab, "kernel", lambda variant="stock": kernel)
    monkeypatch.setattr(lab, "image", lambda: None)
    monkeypatch.setattr(lab_module, "Guest", guest_class)
    BootGuest.started = []
    return lab


def test_qemu_aborting_during_a_boot_boots_once_more(tmp_path, monkeypatch):
    lab = booting_lab(tmp_path, monkeypatch, BootGuest)
    g = lab.guest("stock", "direct")
    assert g is BootGuest.started[1] and len(BootGuest.started) == 2
    (abort,) = lab.qemu_aborts
    assert abort["during"] == "boot" and abort["function"] == "iotlb_to_section"
    assert len(lab.boots) == 1


class HangingGuest(BootGuest):
    """The first boot hangs with no kernel report (TCG's lost timer interrupts): alive, never ready."""

    def __enter__(self) -> HangingGuest:
        if len(BootGuest.started) == 1:
            self.console.lines.append("rcu: rcu_sched kthread timer wakeup didn't happen for 5252 jiffies!")
            raise GuestTimeout("guest not ready after 120s (boot timeout; no HARNESS-READY line)")
        return self

    def __exit__(self, *exc) -> None:
        self.stopped = True


def test_a_boot_that_hangs_quietly_boots_once_more(tmp_path, monkeypatch):
    lab = booting_lab(tmp_path, monkeypatch, HangingGuest)
    g = lab.guest("stock", "direct")
    assert g is BootGuest.started[1] and BootGuest.started[0].stopped
    (retry,) = lab.boot_retries
    assert retry["why"].startswith("guest not ready after 120s") and not lab.qemu_aborts


def test_setup_runs_before_the_watch_starts(lab, monkeypatch):
    # A ring resized for the experiment (e1000's 4,096 buffers) is the guest's state:
    # its fill must come before the DMA-API count and the leak check are armed.
    order: list[str] = []
    monkeypatch.setattr(lab_module.dma_debug, "arm", lambda g: order.append("armed") or 0)
    monkeypatch.setattr(lab_module.dma_debug, "read", lambda g, before, reports: DmaApiCount(0, (), False))

    def run(g):
        order.append("run")
        return measurement()

    lab.measure("rx:e1000", "stock", "direct", run, setup=lambda g: order.append("setup"))
    assert order == ["setup", "armed", "run"]


def test_a_checker_that_switched_itself_off_is_no_count_and_the_guest_is_booted_again(lab, monkeypatch):
    monkeypatch.setattr(lab_module.dma_debug, "arm", lambda g: 0)
    counts = iter([DmaApiCount(0, (), True), DmaApiCount(0, (), False)])
    monkeypatch.setattr(lab_module.dma_debug, "read", lambda g, before, reports: next(counts))
    lab.measure("faults", "stock", "direct", lambda g: measurement())
    (row,) = lab.results["faults"].frame.query("metric == 'dma_api_errors'").itertuples()
    assert row.value != row.value and "switched itself off" in row.method  # NaN, not a blind 0
    assert not lab.booted[0].alive()
    lab.measure("rx", "stock", "direct", lambda g: measurement())
    assert lab.booted == lab.fakes
    (row,) = lab.results["rx"].frame.query("metric == 'dma_api_errors'").itertuples()
    assert row.value == 0



def test_the_cost_guests_checker_off_from_boot_is_not_armed_and_the_guest_is_kept(lab, monkeypatch):
    # dma_debug=off on the cost guest: debugfs says "disabled" from boot, which is not a
    # checker that switched itself off, and no reason to boot again before every experiment.
    monkeypatch.setattr(lab_module.dma_debug, "arm", lambda g: pytest.fail("armed on a guest booted without it"))
    lab.fakes[0].options.cmdline_extra = ("dma_debug=off",)
    lab.measure("rx-cost", "stock", "direct", lambda g: measurement())
    (row,) = lab.results["rx-cost"].frame.query("metric == 'dma_api_errors'").itertuples()
    assert row.value != row.value and "dma_debug=off" in row.method
    assert lab.booted[0].alive()

class QuietGuest(BootGuest):
    """Boots at once with no report; keeps the options it was booted with."""

    def __init__(self, kernel, image, options, cache) -> None:
        super().__init__(kernel, image, options, cache)
        self.kernel, self.options = kernel, options

    def __enter__(self) -> QuietGuest:
        return self


def test_a_guest_with_its_own_hub_is_booted_for_it_and_the_labs_again_after(tmp_path, monkeypatch):
    # The fault experiment on virtio-net among every model (nics.hub_apart): its guest
    # carries the pair only, so the management NIC is not a virtio-net too.
    lab = booting_lab(tmp_path, monkeypatch, QuietGuest)
    lab.nics = ("igb", "e1000e", "e1000", "virtio-net", "vmxnet3")
    assert lab.guest("stock", "direct").options.nics == lab.nics
    apart = lab.guest("stock", "direct", nics=("virtio-net", "e1000e"))
    assert apart.options.nics == ("virtio-net", "e1000e") and BootGuest.started[0].status != "running"
    assert lab.guest("stock", "direct", nics=("virtio-net", "e1000e")) is apart  # kept while asked for
    assert lab.guest("stock", "direct").options.nics == lab.nics and len(BootGuest.started) == 3


def test_the_cost_guests_experiments_leave_the_dma_api_error_count_to_the_others(lab):
    # A run with --cost: the cost guest's NaN (checker off on purpose) must not make
    # skip-cpu-sync inconclusive; a kernel with no checker at all still does.
    import json as _json

    from harness.claims.rules import dma_api_errors

    def with_errors(value: float, detail: dict) -> Measurement:
        m = measurement()
        m.frame = pd.DataFrame([{"metric": "dma_api_errors", "driver": "", "value": value,
                                 "detail": _json.dumps(detail)}])
        return m

    lab.results["rx"] = with_errors(0.0, {"by_driver": {}, "unattributed": 0})
    lab.results["rx-cost"] = with_errors(float("nan"), {"unavailable": True, "off_at_boot": True})
    assert dma_api_errors(lab, ("rx", "rx-cost"), "igb") == (0.0, [])
    lab.results["rx-cost"] = with_errors(float("nan"), {"unavailable": True, "off_at_boot": False})
    assert dma_api_errors(lab, ("rx", "rx-cost"), "igb") == (None, [])
