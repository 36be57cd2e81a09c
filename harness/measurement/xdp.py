"""XDP programs (harness/bpf/*.c): built once with clang -target bpf into the
cache, copied into the guest, attached with iproute2, read back with bpftool."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from harness.cache import Cache, hash_parts
from harness.errors import GuestError, HarnessError
from harness.guest.vm import Guest
from harness.hostcmd import require_tool, run_checked
from harness.measurement.probes import T, teardown_tracer, tracefs_script

BPF_DIR = Path(__file__).resolve().parent / "bpf"
PROGRAMS = ("xdp_drop", "xdp_pass", "xdp_tx", "xdp_headroom")
# `ip -j -d link` "xdp.mode": enum XDP_ATTACHED_* in include/uapi/linux/if_link.h
ATTACH_MODES = {1: "native", 2: "generic", 3: "offload", 4: "multi"}
MODE_FLAGS = {"native": "xdpdrv", "generic": "xdpgeneric"}


def clang_flags() -> list[str]:
    multiarch = Path("/usr/include/x86_64-linux-gnu")
    return ["-O2", "-g", "-Wall", "-Werror", "-target", "bpf",
            *([f"-I{multiarch}"] if multiarch.is_dir() else [])]


def build_programs(cache: Cache | None = None) -> dict[str, Path]:
    """All XDP objects, compiled once per (sources, clang version)."""
    cache = cache or Cache()
    require_tool("clang", "to compile the XDP programs")
    if not Path("/usr/include/bpf/bpf_helpers.h").exists():
        raise HarnessError("/usr/include/bpf/bpf_helpers.h missing: apt-get install libbpf-dev")
    sources = sorted(BPF_DIR.glob("*.c"))
    key = hash_parts([("clang", run_checked(["clang", "--version"]).splitlines()[0]),
                      ("flags", " ".join(clang_flags()))] + [(p.name, p.read_bytes()) for p in sources])

    def build(out: Path) -> dict:
        for src in sources:
            run_checked(["clang", *clang_flags(), "-c", str(src), "-o", str(out / f"{src.stem}.o")],
                        what=f"clang -target bpf {src.name}")
        return {"programs": [s.stem for s in sources], "clang": run_checked(["clang", "--version"]).splitlines()[0]}

    art = cache.get_or_build("bpf", key, build)
    return {name: art.file(f"{name}.o") for name in art.meta["programs"]}


@dataclass(frozen=True)
class XdpAttachment:
    ifname: str
    program: str
    mode: str  # what the kernel reports as attached: native, generic, ...
    prog_id: int


def attach(guest: Guest, ifname: str, obj: Path, mode: str = "native") -> XdpAttachment:
    """Attach `obj` (section "xdp") to `ifname` in `mode` (native or generic) and
    report the mode the kernel actually attached."""
    if mode not in MODE_FLAGS:
        raise HarnessError(f"XDP mode {mode!r}: expected one of {sorted(MODE_FLAGS)}")
    remote = f"/tmp/{obj.name}"
    guest.write_file(remote, obj.read_bytes())
    detach(guest, ifname)
    res = guest.run(["ip", "link", "set", "dev", ifname, MODE_FLAGS[mode], "obj", remote, "sec", "xdp"],
                    check=False)
    if res.rc != 0:
        raise GuestError(f"attaching {obj.name} to {ifname} in {mode} mode failed: {res.stderr.strip()}")
    (doc,) = json.loads(guest.run(["ip", "-j", "-d", "link", "show", "dev", ifname]).stdout)
    xdp = doc.get("xdp") or {}
    prog = xdp.get("prog") or {}
    return XdpAttachment(ifname, obj.stem, ATTACH_MODES.get(xdp.get("mode", 0), f"mode {xdp.get('mode')}"),
                         int(prog.get("id", 0)))


def detach(guest: Guest, ifname: str) -> None:
    for flag in ("xdpdrv", "xdpgeneric"):
        guest.run(["ip", "link", "set", "dev", ifname, flag, "off"], check=False)


def enable_run_counts(guest: Guest) -> None:
    """bpftool reports run_cnt/run_time_ns only while kernel.bpf_stats_enabled=1."""
    guest.run(["sysctl", "-qw", "kernel.bpf_stats_enabled=1"])


def prog_stats(guest: Guest, prog_id: int) -> dict:
    doc = json.loads(guest.run(["bpftool", "-j", "prog", "show", "id", str(prog_id)]).stdout)
    return {"run_cnt": int(doc.get("run_cnt", 0)), "run_time_ns": int(doc.get("run_time_ns", 0)),
            "name": doc.get("name"), "type": doc.get("type"), "map_ids": doc.get("map_ids", [])}


def parse_map_dump(text: str) -> list[tuple[dict, int]]:
    """`bpftool -j map dump` of a map with BTF: [(key fields, value), ...]."""
    out = []
    for entry in json.loads(text):
        formatted = entry.get("formatted", entry)
        out.append((formatted["key"], int(formatted["value"])))
    return out


def map_entries(guest: Guest, map_name: str) -> list[tuple[dict, int]]:
    return parse_map_dump(guest.run(["bpftool", "-j", "map", "dump", "name", map_name]).stdout)




# ---- the driver's own view of the headroom -----------------------------------
# bpf_xdp_adjust_head(struct xdp_buff *xdp, int offset): xdp_buff starts with
# data, data_end, data_meta, data_hard_start (include/net/xdp.h), so +0 and +24
# of the first argument are data and data_hard_start. xdp_headroom.c calls it
# with offset 0 first, before touching anything: that call shows the driver's buffer.
HEADROOM_EVENT = "harness/xdp_adjust_head"
HEADROOM_KPROBE = f"p:{HEADROOM_EVENT} bpf_xdp_adjust_head data=+0(%di):x64 hard=+24(%di):x64 offset=%si:s32"


def arm_headroom_kprobe(guest: Guest) -> None:
    disarm_headroom_kprobe(guest)
    teardown_tracer(guest)  # the kprobe's events go to the trace buffer: nothing else in it
    tracefs_script(guest, f"""echo 0 > {T}/tracing_on
echo '{HEADROOM_KPROBE}' >> {T}/kprobe_events
echo 'offset == 0' > {T}/events/{HEADROOM_EVENT}/filter
echo 1 > {T}/events/{HEADROOM_EVENT}/enable
echo > {T}/trace
echo 1 > {T}/tracing_on""")


def read_headroom_kprobe(guest: Guest) -> list[int]:
    """data - data_hard_start of every xdp_buff seen (one per frame)."""
    guest.run(f"echo 0 > {T}/tracing_on")
    return parse_headroom_trace(guest.run(["cat", f"{T}/trace"]).stdout)


def parse_headroom_trace(text: str) -> list[int]:
    return [int(m.group(1), 16) - int(m.group(2), 16)
            for m in re.finditer(r"data=0x([0-9a-f]+) hard=0x([0-9a-f]+) offset=0\b", text)]


def disarm_headroom_kprobe(guest: Guest) -> None:
    guest.run(f"echo 0 > {T}/events/{HEADROOM_EVENT}/enable 2>/dev/null; "
              f"echo '-:{HEADROOM_EVENT}' >> {T}/kprobe_events 2>/dev/null; echo 1 > {T}/tracing_on; true",
              check=False)
