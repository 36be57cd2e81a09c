"""The archive artifacts travel in between hosts (`harness kernel --export`, `harness
image --export`): a tar.gz whose first member, export.json, says what it is (its
`kind`, the format) and holds the sha256 of every other member, each checked when
the archive is unpacked on the other side."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

from harness.cache import sha256_file
from harness.errors import HarnessError

EXPORT_INFO = "export.json"


def digests(root: Path, prefix: str) -> dict[str, str]:
    """sha256 of every file below `root`, by its name in the archive (`prefix`/relative)."""
    return {f"{prefix}/{p.relative_to(root)}": sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


def write_archive(dest: Path, info: dict, members: list[tuple[Path, str]]) -> None:
    """`dest` with export.json (`info`) first, then each (path, name in the archive);
    written beside it and renamed, so a reader never sees half an archive."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    # gzip level 1: most of the bytes (vmlinux's DWARF, an xz tarball, an ext4 image's
    # binaries) gain little from more, and the export is on a build job's clock.
    with tarfile.open(tmp, "w:gz", compresslevel=1) as tf:
        data = json.dumps(info, indent=1).encode()
        member = tarfile.TarInfo(EXPORT_INFO)
        member.size, member.mtime = len(data), int(time.time())
        tf.addfile(member, io.BytesIO(data))
        for path, name in members:
            tf.add(path, name)
    tmp.replace(dest)


def read_info(archive: Path, flag: str, kind: str, fmt: int) -> dict:
    """export.json of an archive of `kind` (its first member: the rest is not read).
    `flag`: the option that named the archive, for the errors."""
    if not archive.is_file():
        raise HarnessError(f"{flag} {archive}: no such file (write one with harness {kind} --export)")
    try:
        with tarfile.open(archive, "r:gz") as tf:
            first = tf.next()
            if first is None or first.name != EXPORT_INFO:
                raise HarnessError(f"{flag} {archive}: not a {kind} export (no {EXPORT_INFO} first)")
            info = json.loads(tf.extractfile(first).read())  # type: ignore[union-attr]
    except (tarfile.TarError, OSError, ValueError) as e:
        raise HarnessError(f"{flag} {archive}: unreadable ({e})") from e
    if info.get("kind", "kernel") != kind:  # format 1 kernel exports predate `kind`
        raise HarnessError(f"{flag} {archive}: an export of kind {info.get('kind')}, not {kind}")
    if info.get("format") != fmt:
        raise HarnessError(f"{flag} {archive}: export format {info.get('format')}, this harness reads {fmt}")
    return info


def unpack_checked(archive: Path, info: dict, staging: Path, flag: str) -> None:
    """Every member of `archive` into `staging`, each file checked against export.json."""
    with tarfile.open(archive, "r:gz") as tf:
        tf.extractall(staging, filter="data")
    for rel, digest in info["files"].items():
        f = staging / rel
        if not f.is_file() or sha256_file(f) != digest:
            raise HarnessError(f"{flag} {archive}: {rel} is "
                               f"{'missing' if not f.is_file() else 'corrupt (sha256 differs)'}")


@contextlib.contextmanager
def unpacked(archive: Path, info: dict, imports: Path, flag: str) -> Iterator[Path]:
    """`archive` unpacked and checked in a staging directory under `imports` (the
    cache's, so moving out of it is a rename), removed afterwards whatever happens."""
    staging = imports / f".{info.get('kind', 'kernel')}-{info['key']}-{time.time_ns()}"
    try:
        unpack_checked(archive, info, staging, flag)
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def adopt_entry(entry: Path, out: Path) -> dict:
    """Move an exported cache entry's files into `out` (the entry being made); returns
    the meta of its manifest, which the cache writes again for the new entry."""
    meta = json.loads((entry / "manifest.json").read_text())["meta"]
    for p in entry.iterdir():
        if p.name != "manifest.json":
            shutil.move(p, out / p.name)
    return meta
