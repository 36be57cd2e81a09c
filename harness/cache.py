"""Content-addressed artifact cache.

An artifact is a directory `<root>/<kind>/<key>/` holding files plus
`manifest.json` (sha256 of every file). It is built in a temporary sibling
directory and published with one atomic `rename`, under a file lock so two
harness processes never build or publish the same key at once. A reader
verifies the manifest before use; a corrupt artifact is removed and rebuilt.

Every artifact a Cache hands out is leased for that Cache's life: a shared lock on
`<kind>/.<key>.lease`, whose mtime is the artifact's last use. `harness cache prune`
(cache_prune.py) removes least recently used artifacts and never one under lease.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from harness.errors import HarnessError

MANIFEST = "manifest.json"
# Artifacts whose making may push the cache over its size limit (kernels with their
# build dirs, unpacked sources, images): the limit is applied after each is made.
LARGE_KINDS = ("kernels", "sources", "images", "source-debs", "debian-dbg", "selftests")


def default_cache_root() -> Path:
    env = os.environ.get("HARNESS_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "harness"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def hash_parts(parts: Iterable[tuple[str, bytes | str]]) -> str:
    """Stable hash of named parts (name and content both count)."""
    h = hashlib.sha256()
    for name, content in parts:
        data = content.encode() if isinstance(content, str) else content
        h.update(f"{name}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()[:20]


class CorruptArtifact(HarnessError):
    pass


@dataclass(frozen=True)
class Artifact:
    path: Path
    meta: dict

    def file(self, name: str) -> Path:
        return self.path / name


class Cache:
    def __init__(self, root: Path | None = None) -> None:
        self.root = (root or default_cache_root()).resolve()
        self._leases: dict[Path, int] = {}  # lease file -> its open descriptor (shared lock held)

    def dir(self, *parts: str) -> Path:
        d = self.root.joinpath(*parts)
        d.mkdir(parents=True, exist_ok=True)
        return d

    @contextlib.contextmanager
    def lock(self, kind: str, key: str, timeout: float = 3600) -> Iterator[None]:
        lock_path = self.dir(kind) / f".{key}.lock"
        with FileLock(str(lock_path), timeout=timeout):
            yield

    def lease(self, kind: str, key: str) -> None:
        """Hold `kind/key` for this Cache's life (a shared lock: the pruner skips it) and
        stamp its last use. The lock is taken before the artifact is read: a pruner that
        is removing it finishes first, and the reader then finds it gone."""
        path = self.dir(kind) / lease_name(key)
        if path in self._leases:
            os.utime(path)
            return
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            fcntl.flock(fd, fcntl.LOCK_SH)
            try:
                if os.fstat(fd).st_ino == os.stat(path).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)  # a pruner removed this lease file while we waited: a lock on it holds nothing
        os.utime(path)
        self._leases[path] = fd

    def release(self) -> None:
        """Give up every lease (a Cache also gives them up when its process ends)."""
        for fd in self._leases.values():
            os.close(fd)
        self._leases.clear()

    def lookup(self, kind: str, key: str) -> Artifact | None:
        """The verified artifact, or None. A corrupt one is deleted (and reported on stderr)."""
        path = self.root / kind / key
        if not path.is_dir():
            return None
        self.lease(kind, key)
        if not path.is_dir():  # pruned while we waited for the lease
            return None
        try:
            return verify(path)
        except CorruptArtifact as e:
            print(f"harness: cache: {e}; rebuilding", file=sys.stderr, flush=True)
            shutil.rmtree(path, ignore_errors=True)
            return None

    def get_or_build(
        self, kind: str, key: str, build: Callable[[Path], dict], *, verify_files: bool = True
    ) -> Artifact:
        """Return the artifact for `key`, calling `build(tmpdir) -> meta` to make it if absent.
        The build runs under a per-key file lock; its result is published atomically."""
        found = self.lookup(kind, key)
        if found:
            return found
        with self.lock(kind, key):
            found = self.lookup(kind, key)  # another process may have built it meanwhile
            if found:
                return found
            tmp = Path(tempfile.mkdtemp(prefix=f".{key}.tmp-", dir=self.dir(kind)))
            try:
                meta = build(tmp)
                write_manifest(tmp, meta, hash_files=verify_files)
                final = self.root / kind / key
                self.lease(kind, key)
                os.rename(tmp, final)
            except OSError as e:
                shutil.rmtree(tmp, ignore_errors=True)
                if e.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise HarnessError(f"no space left on the cache's file system while making {kind}/{key} "
                                       f"({e.filename or self.root}); {free_space(self.root)}{needed(self, kind)}: "
                                       "free space (harness cache prune --max-size SIZE) or point --cache / "
                                       "HARNESS_CACHE elsewhere (the partial artifact was removed)") from e
                raise
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            art = verify(final)
        if kind in LARGE_KINDS:
            self.prune_after_build()
        return art

    def prune_after_build(self) -> None:
        """The default size limit (cache_prune), after a large artifact was made: one
        line if it removed anything. A pruning problem never fails the build."""
        from harness.cache_prune import prune_after_build

        try:
            line = prune_after_build(self)
        except (OSError, HarnessError) as e:
            line = f"could not prune the cache: {e}"
        if line:
            print(f"harness: {line}", file=sys.stderr, flush=True)


def needed(cache: Cache, kind: str) -> str:
    """How much an artifact of `kind` took here before (the largest in the cache), if any did."""
    from harness.cache_prune import disk_usage, human

    kind_dir = cache.root / kind
    sizes = [disk_usage(p) for p in kind_dir.iterdir() if (p / MANIFEST).is_file()] if kind_dir.is_dir() else []
    return f"; a {kind} artifact took up to {human(max(sizes))} here before" if sizes else ""


def lease_name(key: str) -> str:
    return f".{key}.lease"


def free_space(path: Path) -> str:
    st = os.statvfs(path)
    return f"{st.f_bavail * st.f_frsize / 2**20:.0f} MiB free of {st.f_blocks * st.f_frsize / 2**20:.0f} MiB"


def write_manifest(path: Path, meta: dict, *, hash_files: bool = True) -> None:
    """Record meta and the sha256 of every file (or of none, for huge trees that
    are trusted on the strength of the atomic publish alone)."""
    files = {
        str(p.relative_to(path)): sha256_file(p)
        for p in sorted(path.rglob("*"))
        if hash_files and p.is_file() and p.name != MANIFEST
    }
    doc = {"meta": meta, "files": files}
    tmp = path / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=True))
    os.replace(tmp, path / MANIFEST)


def verify(path: Path) -> Artifact:
    manifest = path / MANIFEST
    try:
        doc = json.loads(manifest.read_text())
    except (OSError, ValueError) as e:
        raise CorruptArtifact(f"{path}: unreadable manifest ({e})") from e
    for name, digest in doc["files"].items():
        f = path / name
        if not f.is_file():
            raise CorruptArtifact(f"{path}: {name} is missing")
        if sha256_file(f) != digest:
            raise CorruptArtifact(f"{path}: {name} does not match its recorded sha256")
    return Artifact(path=path, meta=doc["meta"])
