"""A finished run as the claims see it: its measurements (measurements.json) and
failures (results.json) read back, so the rules can judge a recorded run again,
e.g. in unit tests that pin each rule on real numbers, without a guest."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from harness.errors import HarnessError
from harness.guest.crash import KernelReport
from harness.measurement.measure import Measurement

from .lab import ExperimentFailure


@dataclass(frozen=True)
class RecordedResult:
    pps: int


@dataclass(frozen=True)
class RecordedTraffic:
    """What the rules read of a traffic run: the frames the receiver counted."""

    received: int
    result: RecordedResult


@dataclass(frozen=True)
class RecordedKernel:
    release: str
    sources: Path | None  # a tree holding the kernel's kept sources (drivers/net/...) and its `config`
    module_files: dict
    vmlinux: None = None
    debug_objects: dict = field(default_factory=dict)

    @property
    def config(self) -> Path:
        if self.sources is None or not (self.sources / "config").is_file():
            raise HarnessError("the recorded run's kernel config is not kept")
        return self.sources / "config"

    def source_file(self, rel: str) -> Path:
        if self.sources is not None and (self.sources / rel).is_file():
            return self.sources / rel
        raise HarnessError(f"{rel}: not among the recorded run's sources")


class RecordedLab:
    """The parts of a Lab that claims read, from a run's out directory."""

    def __init__(self, out: Path, sources: Path | None = None) -> None:
        record = json.loads((out / "results.json").read_text())
        table = pd.DataFrame(json.loads((out / "measurements.json").read_text()))
        self.record = record
        self.results: dict[str, Measurement] = {}
        for e in record["experiments"]:
            rows = table[table.experiment == e["name"]].reset_index(drop=True)
            self.results[e["name"]] = Measurement(RecordedTraffic(e["frames"], RecordedResult(e.get("pps") or 0)),
                                                  rows, e.get("seconds", 0.0))  # type: ignore[arg-type]
        self.failures = {name: ExperimentFailure(
            name, f["kind"], f["message"],
            tuple(KernelReport(r["kind"], r["message"], r["function"], tuple(r["lines"])) for r in f["reports"]),
            f.get("qemu_exit", "")) for name, f in record.get("failures", {}).items()}
        self.stray_reports: list[KernelReport] = []
        self._kernel = RecordedKernel(record["kernel"]["release"], sources, {})
        self.cache = None

    def kernel(self, variant: str = "stock") -> RecordedKernel:
        return self._kernel


class EmptyLab(RecordedLab):
    """A lab where nothing was measured: every check comes out unmeasured (with its id)."""

    def __init__(self) -> None:
        self.record = {}
        self.results = {}
        self.failures = {}
        self.stray_reports = []
        self.cache = None

    def kernel(self, variant: str = "stock") -> RecordedKernel:
        raise HarnessError("no kernel: nothing was measured")
