#!/usr/bin/env python3
"""The warm main job's time now against a base revision's, in one run: both
`harness run` (same arguments, same cache, same kernel) back to back, the base
from a git worktree of BASE, each after one unmeasured warming run of its own,
so both find every artifact built. Prints each wall time, the experiments'
share, and the ratio now / base.

    scripts/warm_time_ratio.py --base 016a5bb [--runs 2] [-- --claims all --kernel source-latest]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed_run(tree: Path, out: Path, args: list[str]) -> tuple[float, float]:
    """Wall seconds of one `harness run` from `tree`, and the seconds its experiments took."""
    started = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "harness.cli", "run", *args, "--out", str(out)], cwd=tree,
                         capture_output=True, text=True, check=False)
    wall = time.monotonic() - started
    if res.returncode not in (0, 1, 2):  # confirmed, refuted, inconclusive all count as a finished run
        sys.exit(f"harness run in {tree} exited {res.returncode}:\n{res.stderr[-3000:]}")
    timings = json.loads((out / "results.json").read_text())["timings"]
    return wall, sum(timings["experiments"].values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="the git revision to compare against")
    ap.add_argument("--runs", type=int, default=1, help="measured runs of each, alternating (median)")
    ap.add_argument("harness_args", nargs="*", help="arguments for harness run (after --)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="warm-ratio-") as tmp:
        base_tree = Path(tmp) / "base"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base_tree), a.base], check=True,
                       capture_output=True)
        try:
            trees = {"base": base_tree, "now": ROOT}
            for name, tree in trees.items():  # warming: artifacts either side may build
                print(f"warming {name} ...", file=sys.stderr, flush=True)
                timed_run(tree, Path(tmp) / f"warm-{name}", a.harness_args)
            walls: dict[str, list[tuple[float, float]]] = {"base": [], "now": []}
            for i in range(a.runs):
                for name, tree in trees.items():
                    walls[name].append(timed_run(tree, Path(tmp) / f"{name}-{i}", a.harness_args))
                    print(f"{name} run {i + 1}: {walls[name][-1][0]:.1f} s", file=sys.stderr, flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base_tree)], check=False)
    base = statistics.median(w for w, _ in walls["base"])
    now = statistics.median(w for w, _ in walls["now"])
    for name in ("base", "now"):
        wall = statistics.median(w for w, _ in walls[name])
        exps = statistics.median(e for _, e in walls[name])
        print(f"{name:4s} ({a.base if name == 'base' else 'HEAD + work tree'}): {wall:.1f} s wall, "
              f"{exps:.1f} s in experiments")
    print(f"ratio now/base: {now / base:.3f}")


if __name__ == "__main__":
    main()
