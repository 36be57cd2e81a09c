#!/usr/bin/env python3
"""The driver engineer's inner loop, timed: edit one line of igb, get the verdict.

On a kernel tree (default: a copy of the harness's unpacked linux-source-6.12,
made once under the cache) with warm caches, each round
  1. applies a one-line igb edit (the page-reuse breaker: a page the stack still
     holds is never reused) and runs `harness run --kernel-tree T --claims
     page-reuse` (expected: refuted, exit 1),
  2. reverts it and runs the same again (expected: confirmed, exit 0),
(each round's edit carries a fresh nonce in a comment, so igb.ko is really rebuilt;
the revert finds the unedited module cached, as an engineer's revert would),
and prints the median edit -> verdict time over all runs, with the breakdown
results.json records (module build, boots, experiments, report). Also the warm
main job (all claims, default kernel), and with --cold the cold one: a fresh
cache and the bootstrap, as a bare machine runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TOP = Path(__file__).resolve().parents[1]
HARNESS = [sys.executable, "-m", "harness.cli"]
IGB_MAIN = "drivers/net/ethernet/intel/igb/igb_main.c"
EDIT_FROM = "if (unlikely((rx_buf_pgcnt - pagecnt_bias) > 1))"
# Each round's edit differs (a nonce in the comment), as an engineer's edits do:
# the module cache cannot answer it, igb.ko is compiled again.
EDIT_TO = "if (unlikely((rx_buf_pgcnt - pagecnt_bias) > 0)) /* inner-loop benchmark edit {nonce} */"


def run(args: list[str], env: dict | None = None) -> tuple[int, float, str]:
    started = time.monotonic()
    res = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
    return res.returncode, time.monotonic() - started, res.stderr


def default_tree(cache: Path) -> Path:
    """A tree of the harness's Debian source: hard links, igb's directory a real copy (it gets edited)."""
    tree = cache / "benchmark-tree" / "linux"
    if (tree / "Makefile").is_file():
        return tree
    sources = sorted((cache / "sources").glob("*/linux-source-*"))
    if not sources:
        sys.exit("no unpacked linux-source under the cache: run `harness kernel` first")
    tree.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-al", str(sources[-1]), str(tree)], check=True)
    igb = tree / Path(IGB_MAIN).parent
    copy = igb.with_name("igb.copy")
    shutil.copytree(igb, copy)
    shutil.rmtree(igb)
    copy.rename(igb)
    return tree


def claim_run(tree: Path, cache: Path, out: Path) -> dict:
    rc, seconds, err = run([*HARNESS, "run", "--cache", str(cache), "--kernel-tree", str(tree), "--claims",
                            "page-reuse", "--out", str(out)])
    record = json.loads((out / "results.json").read_text()) if (out / "results.json").is_file() else {}
    verdict = record.get("claims", [{}])[0].get("verdict", "none")
    return {"rc": rc, "seconds": seconds, "verdict": verdict, "timings": record.get("timings", {}),
            "stderr": err[-2000:] if rc not in (0, 1) else ""}


def breakdown(timings: dict) -> str:
    parts = [f"{k} {v:.1f}s" for k, v in timings.items() if isinstance(v, int | float)]
    exp = timings.get("experiments", {})
    if exp:
        parts.append("experiments " + ", ".join(f"{k} {v:.1f}s" for k, v in exp.items()))
    return "; ".join(parts)


def inner_loop(tree: Path, cache: Path, rounds: int, work: Path) -> list[dict]:
    source = tree / IGB_MAIN
    original = source.read_text()
    if EDIT_FROM not in original:
        sys.exit(f"{source} has no line `{EDIT_FROM}`: not the igb this benchmark edits")
    print("warming the caches (one unedited run) ...", file=sys.stderr, flush=True)
    warm = claim_run(tree, cache, work / "warm")
    if warm["verdict"] != "confirmed":
        sys.exit(f"the unedited tree is not confirmed ({warm['verdict']}, exit {warm['rc']}): {warm['stderr']}")
    samples = []
    try:
        for i in range(rounds):
            edited = original.replace(EDIT_FROM, EDIT_TO.format(nonce=f"{time.time_ns():x}"), 1)
            for label, text, want in (("edit", edited, "refuted"),
                                      ("revert", original, "confirmed")):
                source.write_text(text)
                r = claim_run(tree, cache, work / f"{label}-{i}")
                r["label"] = label
                ok = "ok" if r["verdict"] == want else f"WRONG (want {want})"
                print(f"round {i + 1} {label:6s} {r['seconds']:5.1f}s  {r['verdict']} {ok}  "
                      f"({breakdown(r['timings'])})", flush=True)
                samples.append(r)
    finally:
        source.write_text(original)
    return samples


def main_job(cache: Path, out: Path, env: dict | None = None) -> dict:
    rc, seconds, err = run([*HARNESS, "run", "--cache", str(cache), "--out", str(out)], env=env)
    record = json.loads((out / "results.json").read_text()) if (out / "results.json").is_file() else {}
    return {"rc": rc, "seconds": seconds, "tally": record.get("tally"), "timings": record.get("timings", {}),
            "stderr": err[-1500:] if rc else ""}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tree", type=Path, help="kernel tree to edit (default: a copy of the cached linux-source)")
    p.add_argument("--cache", type=Path, default=Path(os.environ.get("HARNESS_CACHE", Path.home() / ".cache/harness")))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--no-main", action="store_true", help="skip the warm main-job run")
    p.add_argument("--cold", action="store_true", help="also time a cold main job: empty cache, bootstrap included")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="harness-inner-loop-"))
    tree = args.tree or default_tree(args.cache)
    samples = inner_loop(tree, args.cache, args.rounds, work)
    times = [s["seconds"] for s in samples]
    wrong = [s for s in samples if s["verdict"] != ("refuted" if s["label"] == "edit" else "confirmed")]
    print(f"\nedit -> verdict (page-reuse, --kernel-tree {tree}): median {statistics.median(times):.1f}s over "
          f"{len(times)} runs (min {min(times):.1f}s, max {max(times):.1f}s); verdicts "
          f"{'all as expected' if not wrong else f'{len(wrong)} WRONG'}")
    if not args.no_main:
        warm = main_job(args.cache, work / "main-warm")
        print(f"main job, warm: {warm['seconds']:.1f}s, exit {warm['rc']}, {warm['tally']}\n  "
              f"{breakdown(warm['timings'])}" + (f"\n  {warm['stderr']}" if warm["stderr"] else ""))
    if args.cold:
        cold_cache = work / "cold-cache"
        env = {**os.environ, "HARNESS_CACHE": str(cold_cache)}
        started = time.monotonic()
        subprocess.run([str(TOP / "scripts/bootstrap-host.sh")], check=True, env=env)
        boot = time.monotonic() - started
        cold = main_job(cold_cache, work / "main-cold", env)
        print(f"main job, cold: {boot + cold['seconds']:.1f}s (bootstrap {boot:.1f}s + run {cold['seconds']:.1f}s), "
              f"exit {cold['rc']}, {cold['tally']}\n  {breakdown(cold['timings'])}")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
