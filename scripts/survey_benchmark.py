#!/usr/bin/env python3
"""Times a warm `harness survey` of the five catalogue NICs (goal: 5 minutes on a
2-core TCG host). One untimed run warms the caches (kernel, image, cross
objects), then --rounds timed runs; prints each and the median, with the
experiments' share, and checks that every cell is a number or says why not."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NICS = "igb,e1000e,e1000,virtio-net,vmxnet3"


def survey(out: Path, cache: str | None) -> tuple[int, float, dict]:
    cmd = [sys.executable, "-m", "harness.cli", "survey", "--nics", NICS, "--out", str(out)]
    if cache:
        cmd += ["--cache", cache]
    started = time.monotonic()
    rc = subprocess.run(cmd, check=False).returncode
    seconds = time.monotonic() - started
    doc = json.loads((out / "survey.json").read_text()) if (out / "survey.json").is_file() else {}
    return rc, seconds, doc


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--cache", help="harness cache (default ~/.cache/harness)")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="harness-survey-bench-"))
    print("warming the caches (one untimed survey) ...", file=sys.stderr, flush=True)
    survey(work / "warm", args.cache)
    times = []
    for i in range(args.rounds):
        rc, seconds, doc = survey(work / f"round-{i}", args.cache)
        cells = [c for d in doc.get("drivers", {}).values() for c in d["cells"].values()]
        silent = [c for c in cells if c["value"] is None and not c["why_not"]]
        unmeasured = sum(1 for c in cells if c["value"] is None)
        print(f"round {i + 1}: {seconds:.1f}s, exit {rc}, {len(cells)} cells, {unmeasured} not measured "
              f"(each with its reason{'' if not silent else f'; {len(silent)} WITHOUT one'})", flush=True)
        times.append(seconds)
        if silent:
            return 1
    print(f"warm survey of {NICS}: median {statistics.median(times):.1f}s over {len(times)} runs (goal <= 300s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
