"""The cost probe's TCG plugin (harness/measurement/plugin/harness_cost.c), built
for the QEMU on this host.

Debian's QEMU is built with plugin support but ships neither plugins nor
`qemu-plugin.h`; the header is in Debian's `qemu` source package. Its upstream
tarball is found through a private apt with `deb-src` lines (the host's apt is
not touched) for the very version the host runs, downloaded once, checked
against the sha256 of the signed Sources index, and only the header is kept.
The plugin is compiled with the host's gcc against it and glib; QEMU checks the
plugin API version when it loads it. Cached by the plugin source, the QEMU
version and the compiler."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

from harness.artifacts.debian_suites import KEYRING, MIRROR, PrivateApt, apt_of
from harness.cache import Cache, hash_parts
from harness.errors import HarnessError
from harness.hostcmd import require_tool, run_checked

PLUGIN_SOURCE = Path(__file__).resolve().parent.parent / "measurement" / "plugin" / "harness_cost.c"
PLUGIN_NAME = "harness_cost.so"
HEADER = "qemu-plugin.h"
# The suites a host's QEMU comes from: bookworm-backports (the bootstrap's), and the newer ones.
SOURCE_SUITES = ("bookworm-backports", "bookworm", "trixie", "trixie-backports", "sid")


def host_qemu_version() -> str:
    """The Debian version of the installed qemu-system-x86 (e.g. 1:10.0.2+ds-2+deb13u1~bpo12+1)."""
    res = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "qemu-system-x86"], capture_output=True, text=True,
                         check=False)
    if res.returncode or not res.stdout.strip():
        raise HarnessError("the cost probe's plugin is built for Debian's qemu-system-x86, which dpkg does not "
                           "know here (apt-get install -t bookworm-backports qemu-system-x86)")
    return res.stdout.strip()


def upstream_of(version: str) -> str:
    """1:10.0.2+ds-2+deb13u1~bpo12+1 -> 10.0.2 (epoch, Debian repacking and revision off)."""
    return re.sub(r"\+ds.*|-[^-]*$", "", version.split(":", 1)[-1])


def source_apt(cache: Cache) -> PrivateApt:
    """A private apt with only deb-src lines, lists at most a day old."""
    return apt_of(cache, "apt-qemu-src", "".join(f"deb-src [signed-by={KEYRING}] {MIRROR} {s} main\n"
                                                 for s in SOURCE_SUITES), "apt-get update of Debian's source indexes")


def orig_tarball(apt: PrivateApt, version: str) -> tuple[str, str, str]:
    """(URL, file name, sha256) of the upstream tarball of Debian's qemu `version`, or of
    another Debian revision of the same upstream release."""
    upstream = upstream_of(version)
    out = run_checked(["apt-cache", *apt.options(), "showsrc", "qemu"], what="apt-cache showsrc qemu")
    records = [r for r in out.split("\n\n") if r.strip()]
    ranked = sorted(records, key=lambda r: (field(r, "Version") != version,))
    for rec in ranked:
        if upstream_of(field(rec, "Version")) != upstream:
            continue
        directory = field(rec, "Directory")
        for line in rec.split("Checksums-Sha256:", 1)[-1].splitlines()[1:]:
            parts = line.split()
            if len(parts) == 3 and ".orig.tar." in parts[2]:
                return f"{MIRROR}/{directory}/{parts[2]}", parts[2], parts[0]
            if not line.startswith(" "):
                break
    raise HarnessError(f"Debian's source indexes ({', '.join(SOURCE_SUITES)}) have no qemu source of upstream "
                       f"release {upstream} (the host runs qemu-system-x86 {version}): the plugin header cannot be had")


def field(record: str, name: str) -> str:
    m = re.search(rf"^{name}: (.+)$", record, re.M)
    return m.group(1).strip() if m else ""


def fetch_header(apt: PrivateApt, version: str, dest: Path) -> str:
    """qemu-plugin.h of the host's QEMU into dest; returns where it came from."""
    url, name, sha = orig_tarball(apt, version)
    tarball = dest / name
    print(f"harness: fetching {name} (Debian's qemu source, for {HEADER} only) ...", file=sys.stderr, flush=True)
    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=600) as resp, tarball.open("wb") as f:
        while chunk := resp.read(1 << 20):
            digest.update(chunk)
            f.write(chunk)
    if digest.hexdigest() != sha:
        raise HarnessError(f"{url}: sha256 {digest.hexdigest()} is not the {sha} of Debian's signed Sources index")
    member = f"qemu-{upstream_of(version)}/include/qemu/{HEADER}"
    res = subprocess.run(["tar", "-xJf", str(tarball), "-C", str(dest), "--strip-components=3", member],
                         capture_output=True, text=True, check=False)
    tarball.unlink()
    if res.returncode or not (dest / HEADER).is_file():
        raise HarnessError(f"{name} has no {member}: {res.stderr.strip()[-300:]}")
    return f"{name} (sha256 {sha[:16]}...)"


def compiler_identity() -> str:
    require_tool("gcc")
    return run_checked(["gcc", "--version"]).splitlines()[0]


def glib_cflags() -> list[str]:
    require_tool("pkg-config")
    res = subprocess.run(["pkg-config", "--cflags", "glib-2.0"], capture_output=True, text=True, check=False)
    if res.returncode:
        raise HarnessError("glib's headers are missing for the cost probe's plugin: apt-get install libglib2.0-dev")
    return res.stdout.split()


def cost_plugin(cache: Cache) -> Path:
    """The built plugin (cached)."""
    version = host_qemu_version()
    source = PLUGIN_SOURCE.read_bytes()
    key = hash_parts([("source", hashlib.sha256(source).hexdigest()), ("qemu", version),
                      ("gcc", compiler_identity())])

    def build(out: Path) -> dict:
        origin = fetch_header(source_apt(cache), version, out)
        run_checked(["gcc", "-shared", "-fPIC", "-O2", "-Wall", *glib_cflags(), f"-I{out}", str(PLUGIN_SOURCE),
                     "-o", str(out / PLUGIN_NAME), "-lpthread"], what=f"gcc {PLUGIN_SOURCE.name}")
        return {"qemu": version, "header": origin}

    return cache.get_or_build("qemu-plugin", key, build).file(PLUGIN_NAME)
