"""The lines and branches of a driver's functions that experiments executed: the
gcov counts the guest kept (measurement/gcov.py) read on the host against the
notes file the build wrote (.gcno, kept with the module's sources), with the
host's gcov (the compiler that built the kernel) in JSON form."""

from __future__ import annotations

import gzip
import json
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from harness.hostcmd import run_checked


@dataclass
class Counts:
    """Execution counts of one source file: per line, and per branch (line, index)."""

    lines: Counter[int] = field(default_factory=Counter)
    branches: Counter[tuple[int, int]] = field(default_factory=Counter)

    def __iadd__(self, other: Counts) -> Counts:
        self.lines.update({n: 0 for n in other.lines})  # a line seen at all is instrumented
        self.lines.update(other.lines)
        self.branches.update({b: 0 for b in other.branches})
        self.branches.update(other.branches)
        return self


def parse_gcov_json(doc: dict, source_name: str) -> Counts:
    """`gcov --json-format` output -> the counts of the file named `source_name`
    (inline functions from headers are listed under their own files and left out)."""
    counts = Counts()
    for f in doc.get("files", []):
        if Path(f["file"]).name != source_name:
            continue
        for line in f.get("lines", []):
            n = int(line["line_number"])
            counts.lines[n] += int(line["count"])
            for i, br in enumerate(line.get("branches", [])):
                counts.branches[(n, i)] += int(br["count"])
    return counts


def gcov_counts(gcno: Path, gcda: bytes) -> Counts:
    """Run the host's gcov on one object's notes (`gcno`) and counts (`gcda`)."""
    stem = gcno.stem
    with tempfile.TemporaryDirectory(prefix="harness-gcov-") as tmp:
        work = Path(tmp)
        shutil.copy2(gcno, work / f"{stem}.gcno")
        (work / f"{stem}.gcda").write_bytes(gcda)
        run_checked(["gcov", "--json-format", "--branch-probabilities", "--object-directory", str(work),
                     f"{stem}.c"], cwd=work, what=f"gcov of {stem}")
        doc = json.loads(gzip.decompress((work / f"{stem}.gcov.json.gz").read_bytes()))
    return parse_gcov_json(doc, f"{stem}.c")


def coverage_in(counts: Counts, ranges: dict[str, tuple[int, int]], missed: int = 40) -> dict:
    """Lines and branches of the functions in `ranges` (source lines) the counts
    executed; the first `missed` instrumented lines never executed."""
    def inside(n: int) -> bool:
        return any(a <= n <= b for a, b in ranges.values())

    lines = sorted(n for n in counts.lines if inside(n))
    branches = [b for b in counts.branches if inside(b[0])]
    never = [n for n in lines if counts.lines[n] == 0]
    return {"functions": sorted(ranges), "lines": len(lines) - len(never), "of_lines": len(lines),
            "branches": sum(1 for b in branches if counts.branches[b] > 0), "of_branches": len(branches),
            "never_run": never[:missed], "never_run_total": len(never)}
