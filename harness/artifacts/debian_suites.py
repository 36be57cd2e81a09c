"""Debian's newer suites, asked without touching the host's apt: a private sources
list, lists and cache under the harness cache (trixie, trixie-backports, sid),
so a Debian 12 host can learn which kernels they offer and download one package
(`apt-get download`) without adding a suite that would upgrade its libraries."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from harness.cache import Cache
from harness.errors import HarnessError
from harness.hostcmd import require_tool, run_checked

SUITES = ("trixie", "trixie-backports", "sid")
MIRROR = "http://deb.debian.org/debian"
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
LISTS_MAX_AGE = 24 * 3600  # the lists are fetched again after a day


@dataclass(frozen=True)
class PrivateApt:
    root: Path

    def options(self) -> list[str]:
        return ["-o", f"Dir::Etc::SourceList={self.root / 'sources.list'}", "-o", "Dir::Etc::SourceParts=/nonexistent",
                "-o", f"Dir::State::Lists={self.root / 'lists'}", "-o", f"Dir::Cache={self.root / 'cache'}",
                "-o", f"Dir::State::status={self.root / 'status'}", "-o", "APT::Architecture=amd64",
                "-o", "Acquire::Languages=none"]


def private_apt(cache: Cache, mirror: str = MIRROR) -> PrivateApt:
    """The private apt of the newer suites, with lists at most a day old."""
    return apt_of(cache, "apt-newer", "".join(f"deb [signed-by={KEYRING}] {mirror} {s} main\n" for s in SUITES),
                  f"apt-get update of {', '.join(SUITES)}")


def apt_of(cache: Cache, name: str, sources: str, what: str) -> PrivateApt:
    """A private apt under the cache (`name`) with these sources.list lines, its lists at
    most a day old (the host's apt is never touched)."""
    require_tool("apt-get")
    if not KEYRING.is_file():
        raise HarnessError(f"{KEYRING} missing: apt-get install debian-archive-keyring")
    root = cache.dir(name)
    for d in ("lists/partial", "cache/archives/partial"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "status").touch()
    stamp = root / "lists" / ".harness-updated"
    fresh = stamp.is_file() and time.time() - stamp.stat().st_mtime < LISTS_MAX_AGE
    if (root / "sources.list").is_file() and (root / "sources.list").read_text() == sources and fresh:
        return PrivateApt(root)
    (root / "sources.list").write_text(sources)
    apt = PrivateApt(root)
    with cache.lock(name, "update"):
        run_checked(["apt-get", *apt.options(), "update", "-q"], timeout=600,
                    what=f"{what} (a private list: the host's apt is not touched)")
    stamp.touch()
    return apt


def version_key(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text))


def newest_source(apt: PrivateApt) -> str:
    """The newest linux-source-X.Y package the suites offer (7.3 in December 2026)."""
    out = run_checked(["apt-cache", *apt.options(), "search", "--names-only", r"^linux-source-[0-9.]+$"])
    names = [line.split(" - ")[0].strip() for line in out.splitlines() if line.startswith("linux-source-")]
    if not names:
        raise HarnessError(f"Debian's {', '.join(SUITES)} offer no linux-source-X.Y package (apt-cache search)")
    return max(names, key=version_key)


def series_of(package: str) -> str:
    return package.rsplit("-", 1)[1]


def newest_image(apt: PrivateApt, series: str) -> str:
    """The newest prebuilt linux-image-<series>.N+debNN-amd64 package (the signed image; the
    same kernel as -unsigned)."""
    out = run_checked(["apt-cache", *apt.options(), "search", "--names-only",
                       rf"^linux-image-{re.escape(series)}\.[0-9]+\+deb[0-9]+-amd64$"])
    names = [line.split(" - ")[0].strip() for line in out.splitlines() if line.startswith("linux-image-")]
    if not names:
        raise HarnessError(f"no prebuilt linux-image-{series}.*-amd64 in Debian's {', '.join(SUITES)}")
    return max(names, key=version_key)


KERNEL_PARTS = ("linux-base-", "linux-binary-", "linux-modules-")


def kernel_parts(apt: PrivateApt, package: str) -> list[str]:
    """The packages a prebuilt kernel is made of: the image package, and the parts it
    depends on where Debian splits them (7.x: linux-image-R is only the dependencies
    of linux-binary-R with /boot/vmlinuz-R, linux-modules-R, linux-base-R)."""
    release = package.removeprefix("linux-image-")
    out = run_checked(["apt-cache", *apt.options(), "depends", "--no-recommends", "--no-suggests", package])
    deps = [m.group(1) for line in out.splitlines() if (m := re.match(r"\s*\|?(?:Pre)?Depends:\s*(\S+)", line))]
    return [package] + [d for d in dict.fromkeys(deps) if d.startswith(KERNEL_PARTS) and d.endswith(release)]


def package_version(apt: PrivateApt, package: str) -> str:
    out = run_checked(["apt-cache", *apt.options(), "policy", package])
    m = re.search(r"Candidate:\s*(\S+)", out)
    if not m or m.group(1) == "(none)":
        raise HarnessError(f"{package}: no candidate version in Debian's {', '.join(SUITES)}")
    return m.group(1)


def download(apt: PrivateApt, package: str, dest: Path) -> Path:
    """The package's .deb into `dest` (nothing installed)."""
    dest.mkdir(parents=True, exist_ok=True)
    run_checked(["apt-get", *apt.options(), "download", "-q", package], cwd=dest,
                what=f"apt-get download {package}", timeout=3600)
    debs = sorted(dest.glob(f"{package}_*.deb"))
    if not debs:
        raise HarnessError(f"apt-get download {package} left no .deb in {dest}")
    return debs[-1]
