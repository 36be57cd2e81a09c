"""gcov counts of the instrumented driver objects in the guest (a `--coverage`
kernel: CONFIG_GCOV_KERNEL, the driver's directory built with GCOV_PROFILE): zeroed
before an experiment, read after it, so each experiment's data holds its own
execution (set-up, traffic and tear-down of the experiment, nothing before)."""

from __future__ import annotations

import base64
import re

from harness.errors import Unmeasurable
from harness.guest.vm import Guest

GCOV = "/sys/kernel/debug/gcov"
GCDA_LINE = re.compile(r"^(\S+\.gcda) ([A-Za-z0-9+/=]+)$")


def reset(g: Guest) -> None:
    res = g.run(f"[ -e {GCOV}/reset ] && echo 1 > {GCOV}/reset", check=False)
    if res.rc != 0:
        raise Unmeasurable(f"no {GCOV}/reset in the guest: the kernel was not built for --coverage "
                           "(CONFIG_GCOV_KERNEL)")


def collect(g: Guest, objects: tuple[str, ...]) -> dict[str, bytes]:
    """{object stem: its .gcda} for each of `objects` (e.g. igb_main) the guest has
    counts for (a module's appear while it is loaded)."""
    names = " -o ".join(f"-name {o}.gcda" for o in objects)
    out = g.run(f"find {GCOV} \\( {names} \\) -print | while read -r f; do "
                "printf '%s %s\\n' \"$(basename \"$f\")\" \"$(base64 -w0 \"$f\")\"; done").stdout
    data = {}
    for line in out.splitlines():
        if m := GCDA_LINE.match(line.strip()):
            data[m.group(1).removesuffix(".gcda")] = base64.b64decode(m.group(2))
    return data
