"""`harness shard PLAN JOB --out DIR`: one job of a plan, run as the harness command
the plan gives it, its out directory made self-describing (shard.json: the plan,
the job, every job of the plan, the kernel key, what it covered, its exit status),
so `harness merge` can tell a missing or doubled shard from a complete nightly."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from harness.errors import HarnessError
from harness.outdir import write_text
from harness.scale.plan import find_job, load_plan

SHARD_FILE = "shard.json"


def run_shard(plan_path: Path, job_id: str, out: Path, passthrough: list[str],
              dispatch: Callable[[list[str]], int]) -> int:
    """Run the job's command (through `dispatch`, the CLI's parser and command) with
    `--out out` and the caller's `passthrough` options (cache, accel); write
    shard.json whatever the outcome, then return the command's exit status."""
    plan = load_plan(plan_path)
    job = find_job(plan, job_id)
    argv = [*job["argv"], "--out", str(out), *passthrough]
    started = time.monotonic()
    status, error = 2, ""
    try:
        status = dispatch(argv)
    except HarnessError as e:
        error = str(e).splitlines()[0]
        raise
    finally:
        out.mkdir(parents=True, exist_ok=True)
        write_text(out / SHARD_FILE, json.dumps({
            "plan": plan["plan"], "job": job_id, "jobs": [j["job"] for j in plan["jobs"]],
            "kernel": job["kernel"], "command": job["command"], "argv": ["harness", *argv],
            "covers": job["covers"], "kernel_key": kernel_key(out, job["command"]),
            "exit_status": status, **({"error": error} if error else {}),
            "wall_s": round(time.monotonic() - started, 1), "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        }, indent=1))
    return status


def kernel_key(out: Path, command: str) -> str | None:
    """The cache key of the kernel the job ran (from its own record), so merge can
    tell shards that built different kernels apart."""
    name = {"run": "results.json", "survey": "survey.json"}.get(command)
    if name is None or not (out / name).is_file():
        return None
    try:
        return json.loads((out / name).read_text())["kernel"].get("key")
    except (OSError, json.JSONDecodeError, KeyError, AttributeError):
        return None
