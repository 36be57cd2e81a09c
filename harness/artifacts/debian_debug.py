"""What a Debian prebuilt kernel ships apart: the DWARF of its NIC driver modules
(the `linux-image-<release>-dbg` package, over a gigabyte) and the source of the
same version (`linux-source-X.Y`). Only the NIC drivers' debug objects are kept
from the -dbg package, cached by its name and version, so the barriers claim and
the source-derived checks can judge a distro kernel too."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from harness.artifacts.debian_suites import PrivateApt, download, package_version
from harness.cache import Cache, hash_parts
from harness.errors import HarnessError
from harness.hostcmd import require_tool
from harness.nics import CATALOGUE


def debug_modules(cache: Cache, apt: PrivateApt, image_package: str, release: str) -> dict[str, Path]:
    """module name -> the module with its DWARF, from `<image_package>-dbg`."""
    dbg = f"{image_package}-dbg"
    version = package_version(apt, dbg)
    wanted = {n.module: n.source_dir for n in CATALOGUE.values() if n.module}
    key = hash_parts([("package", dbg), ("version", version), ("modules", ",".join(sorted(wanted)))])

    def build(out: Path) -> dict:
        require_tool("dpkg-deb")
        with tempfile.TemporaryDirectory(prefix="harness-dbg-", dir=cache.dir("tmp")) as tmp:
            print(f"harness: fetching {dbg} {version} (the DWARF of its modules; large, once) ...",
                  file=sys.stderr, flush=True)
            deb = download(apt, dbg, Path(tmp))
            # usr/lib/debug/lib/modules/<release>/ up to 6.x, .../usr/lib/modules/<release>/
            # once the modules moved under /usr: `*` matches either.
            patterns = [f"./usr/lib/debug/*modules/{release}/kernel/{rel}/{m}.ko*" for m, rel in wanted.items()]
            with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE) as tar_stream:
                extract = subprocess.run(["tar", "-x", "-C", str(out), "--wildcards", "--wildcards-match-slash",
                                          *patterns],
                                         stdin=tar_stream.stdout, capture_output=True, text=True, check=False)
            if extract.returncode or tar_stream.returncode:
                raise HarnessError(f"extracting the NIC modules' DWARF from {deb.name} failed: "
                                   f"{extract.stderr.strip()[-400:]}")
        for xz in out.rglob("*.ko.xz"):  # objdump reads ELF: decompressed once here
            subprocess.run(["xz", "-d", str(xz)], check=True)
        found = {p.name.split(".ko")[0]: str(p.relative_to(out)) for p in out.rglob("*.ko")}
        return {"package": dbg, "version": version, "release": release, "modules": found}

    art = cache.get_or_build("debian-dbg", key, build)
    return {m: art.path / rel for m, rel in art.meta["modules"].items()}
