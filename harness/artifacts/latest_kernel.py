"""`--kernel source-latest` and `debian-latest`: the newest kernel series Debian's
suites offer (asked through the private apt of debian_suites, never hard-coded):
its source tarball out of the linux-source-X.Y package, and its prebuilt image."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from harness.artifacts.debian_suites import (
    download,
    newest_image,
    newest_source,
    package_version,
    private_apt,
    series_of,
)
from harness.cache import Cache, hash_parts
from harness.errors import HarnessError
from harness.hostcmd import require_tool


@dataclass(frozen=True)
class DebianSource:
    tarball: Path
    package: str  # linux-source-7.3
    version: str  # 7.3.4-1~bpo13+1

    @property
    def series(self) -> str:
        return series_of(self.package)


def latest_source(cache: Cache) -> DebianSource:
    """The newest linux-source-X.Y's tarball (fetched once, cached by package and version)."""
    apt = private_apt(cache)
    package = newest_source(apt)
    version = package_version(apt, package)
    key = hash_parts([("package", package), ("version", version)])

    def build(out: Path) -> dict:
        require_tool("dpkg-deb")
        print(f"harness: fetching {package} {version} from Debian (the package only; nothing installed) ...",
              file=sys.stderr, flush=True)
        deb = download(apt, package, out / "deb")
        member = f"./usr/src/{package}.tar.xz"
        with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE) as stream:
            res = subprocess.run(["tar", "-x", "-C", str(out), "--strip-components=3", member], stdin=stream.stdout,
                                 capture_output=True, text=True, check=False)
        if res.returncode or not (out / f"{package}.tar.xz").is_file():
            raise HarnessError(f"{deb.name} has no {member}: {res.stderr.strip()[-300:]}")
        deb.unlink()
        (out / "deb").rmdir()
        return {"package": package, "version": version}

    # The tarball's sha256 is the kernel's source id anyway: not hashed twice on every use.
    art = cache.get_or_build("source-debs", key, build, verify_files=False)
    return DebianSource(art.file(f"{package}.tar.xz"), package, version)


def latest_image_package(cache: Cache) -> tuple[str, str]:
    """(package, release) of the newest prebuilt amd64 image of the newest source series."""
    apt = private_apt(cache)
    package = newest_image(apt, series_of(newest_source(apt)))
    return package, package.removeprefix("linux-image-")
