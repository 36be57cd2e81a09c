"""Two harness sessions at once: `pytest -n 2` (pytest-xdist), every worker with
its own guest. No port clash, no shared console log, no shared writable image,
no QEMU left afterwards."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.vm

TARGET = Path(__file__).with_name("parallel_target.py")


def test_two_xdist_workers_boot_their_own_guests(tmp_path, harness_cache):
    env = {**os.environ, "HARNESS_PARALLEL_OUT": str(tmp_path)}
    res = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "--dist", "each", "-p", "no:cacheprovider",
                          "-q", "-o", "python_files=parallel_target.py", "--harness-cache", str(harness_cache.root),
                          str(TARGET)], capture_output=True, text=True, env=env, timeout=600, check=False,
                         cwd=TARGET.parents[2])
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    records = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("*.json"))]
    assert sorted(r["worker"] for r in records) == ["gw0", "gw1"], records
    assert len({r["ssh_port"] for r in records}) == 2, records
    assert len({r["console_log"] for r in records}) == 2, records
    assert all(r["received"] == 200 for r in records), records
    for r in records:  # both QEMUs are gone (the inner session's own leak check ran too)
        status = Path(f"/proc/{r['qemu_pid']}/status")
        assert not status.exists() or "zombie" in status.read_text().lower(), r
