"""Run by test_parallel.py under `pytest -n 2 --dist each` (not collected by the
main session): each xdist worker boots its own guest and records what it used."""

import json
import os
from pathlib import Path

from harness.measurement.netcheck import bring_up, rx_delta_after_send


def test_worker_guest_carries_frames(guest):
    igb, e1000e = guest.nic("igb"), guest.nic("e1000e")
    bring_up(guest, [igb, e1000e])
    received = rx_delta_after_send(guest, e1000e, igb, 200)
    record = {"worker": os.environ.get("PYTEST_XDIST_WORKER", "main"), "ssh_port": guest.spec.ssh_port,
              "console_log": str(guest.console_log), "qemu_pid": guest.child.pid, "received": received}
    out = Path(os.environ["HARNESS_PARALLEL_OUT"]) / f"{record['worker']}.json"
    out.write_text(json.dumps(record))
