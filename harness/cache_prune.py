"""What the harness cache holds and what may go. Entries are the artifacts
(`<kind>/<key>`: kernels, driver modules, images, unpacked sources, ...), the kernel
build directories (`build/`: about 1.2 GB per tree and config), the staging trees
(`work/`) and the build logs (`logs/*.log`); each has a size on disk and a last use.
Pruning removes entries until the cache is under a size (least recently used first,
after every entry that can no longer serve: the build directory or kernel of a tree
that no longer exists, a driver module whose kernel is gone) and entries unused for
longer than a given age. It never removes an entry a running harness holds a lease
on (cache.Cache.lease), nor what such an entry needs (a leased kernel's build
directory and source), nor build areas while a build holds them.

Not counted and never removed: ccache (capped by ccache itself at CCACHE_MAXSIZE,
5 GB unless set), the ssh key, the private apt lists, lock and lease files."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from harness.cache import MANIFEST, Cache, lease_name
from harness.errors import HarnessError

DEFAULT_MAX = "20G"  # HARNESS_CACHE_MAX overrides; applied after every build of a large artifact
NOT_COUNTED = ("ccache", "ssh", "apt-newer", "probe", "tmp")
AREAS = ("build", "work")  # build directories and staging trees: not artifacts, used by builds


@dataclass
class Entry:
    path: Path
    kind: str  # "kernels", "build", "logs", ...
    size: int  # bytes on disk
    last_used: float  # epoch seconds
    what: str = ""  # a kernel's release and source, an image's name, the kernels a build dir serves
    stale: str = ""  # why it can no longer serve (first to go), or ""
    needs: list[Path] = field(default_factory=list)  # build dir and source of a kernel (kept while it is leased)

    @property
    def label(self) -> str:
        return f"{self.kind}/{self.path.name}"


def parse_size(text: str) -> int:
    """`20G`, `512M`, `8GB`, `1.5T`, `1000000` -> bytes."""
    m = re.fullmatch(r"\s*([\d.]+)\s*([KMGT]?)i?B?\s*", text, re.IGNORECASE)
    if not m:
        raise HarnessError(f"cache size {text!r}: expected a number with K, M, G or T (e.g. 20G)")
    return int(float(m.group(1)) * 1024 ** "_KMGT".index(m.group(2).upper() or "_"))


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def disk_usage(path: Path) -> int:
    """Bytes the tree at `path` takes on disk (blocks, not apparent sizes; links not followed)."""
    if path.is_symlink() or path.is_file():
        return path.lstat().st_blocks * 512
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in filenames + dirnames:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total


def _meta(path: Path) -> dict:
    try:
        return json.loads((path / MANIFEST).read_text()).get("meta", {})
    except (OSError, ValueError):
        return {}


def _last_use(kind_dir: Path, key: str, path: Path) -> float:
    lease = kind_dir / lease_name(key)
    return lease.stat().st_mtime if lease.exists() else path.stat().st_mtime


def entries(cache: Cache) -> list[Entry]:
    """Every prunable entry of the cache, with its size and last use."""
    out: list[Entry] = []
    kernels: dict[str, Entry] = {}
    for kind_dir in sorted(p for p in cache.root.iterdir() if p.is_dir()) if cache.root.is_dir() else []:
        kind = kind_dir.name
        if kind in NOT_COUNTED:
            continue
        if kind == "logs":
            out += [Entry(f, kind, disk_usage(f), f.stat().st_mtime) for f in sorted(kind_dir.glob("*.log"))]
            continue
        for path in sorted(p for p in kind_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if kind in AREAS:
                out.append(Entry(path, kind, disk_usage(path), path.stat().st_mtime))
                continue
            if not (path / MANIFEST).is_file():
                continue  # not published (a build in progress writes a dot-named temp dir)
            e = Entry(path, kind, disk_usage(path), _last_use(kind_dir, path.name, path))
            meta = _meta(path)
            e.what = describe(kind, meta)
            if kind == "kernels":
                kernels[path.name] = e
                e.needs = [Path(p) for p in (meta.get("build_dir"), meta.get("source_origin")) if p]
                origin = meta.get("source_origin")
                if meta.get("source") == "tree" and origin and not Path(origin).is_dir():
                    e.stale = f"its tree {origin} no longer exists"
            out.append(e)
    _link(out, kernels)
    return out


def describe(kind: str, meta: dict) -> str:
    """A line on what an artifact is, from its manifest."""
    if kind == "kernels":
        origin = meta.get("source_origin") or meta.get("package") or ""
        return f"{meta.get('release', '?')} {meta.get('variant', '')} from {origin}".strip()
    if kind == "modules":
        return f"{meta.get('module')}.ko of kernel {meta.get('base_key')}" + (
            f" with {', '.join(meta['patches'])}" if meta.get("patches") else "")
    if kind == "images":
        return f"guest image {meta.get('recipe')} ({meta.get('suite')})"
    if kind == "sources":
        return f"{meta.get('top')} unpacked from {meta.get('tarball')}"
    if kind.startswith("cross-"):
        return f"{meta.get('object')} for {meta.get('arch')} (kernel {meta.get('kernel')})"
    if meta.get("package"):
        return f"{meta['package']} {meta.get('version', '')}".strip()
    return ", ".join(f"{k} {meta[k]}" for k in ("programs", "clang") if meta.get(k))[:80]


def _link(out: list[Entry], kernels: dict[str, Entry]) -> None:
    """Build dirs and driver modules take their use and staleness from the kernels they serve."""
    by_build: dict[str, list[Entry]] = {}
    for k in kernels.values():
        for need in k.needs[:1]:  # its build dir
            by_build.setdefault(str(need), []).append(k)
    for e in out:
        if e.kind == "build":
            base = e.path.name.removeprefix("modules-")  # a module build dir prepared for kernel `base`
            prepared = e.path.name.startswith("modules-")
            served = ([kernels[base]] if base in kernels else []) if prepared else by_build.get(str(e.path), [])
            if served:
                e.last_used = max([e.last_used] + [k.last_used for k in served])
                e.what = "build dir of " + "; ".join(k.what for k in served)
                if all(k.stale for k in served):
                    e.stale = served[0].stale
            elif prepared:
                e.stale = "its kernel is gone"
        elif e.kind == "modules":
            base = _meta(e.path).get("base_key")
            if base and base not in kernels:
                e.stale = "its kernel is gone"
            elif base:
                e.stale = kernels[base].stale
        elif e.kind == "sources":  # as recent as the kernels built from it (their modules rebuild from it)
            users = [k for k in kernels.values() if len(k.needs) > 1 and e.path in k.needs[1].parents]
            e.last_used = max([e.last_used] + [k.last_used for k in users])


@contextlib.contextmanager
def exclusive(e: Entry) -> Iterator[bool]:
    """Whether `e` can go now: nobody holds its lease (it is held exclusively while removed)."""
    if e.kind in AREAS or e.kind == "logs":
        yield True
        return
    lease = e.path.parent / lease_name(e.path.name)
    try:
        fd = os.open(lease, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:  # never leased (a holder's lease file is the one at this path)
        yield True
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            yield False
            return
        yield True
    finally:
        os.close(fd)


def held(all_entries: list[Entry]) -> set[Path]:
    """What leased kernels need (their build dirs and sources): kept with them."""
    keep: set[Path] = set()
    for e in all_entries:
        if e.kind == "kernels" and e.needs and e.path.exists():
            with exclusive(e) as free:
                if not free:
                    keep.update(e.needs)
    return keep


def build_busy(cache: Cache) -> bool:
    """Whether a build holds a staging area now (kernel builds lock work/linux, module
    builds their own slot under work/): build dirs and staging trees wait then."""
    from filelock import FileLock, Timeout

    for path in (cache.root / "work").glob(".*.lock"):
        lock = FileLock(str(path))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            return True
        lock.release()
    return False


@dataclass
class Pruned:
    removed: list[Entry]
    kept_in_use: list[Entry]
    before: int
    after: int

    def summary(self, limit: str, verb: str = "removed") -> str:
        if not self.removed:
            return f"cache {human(self.before)}, within {limit}: nothing removed"
        names = ", ".join(f"{e.label} ({human(e.size)}{'; ' + e.stale if e.stale else ''})" for e in self.removed[:6])
        more = f" and {len(self.removed) - 6} more" if len(self.removed) > 6 else ""
        return (f"cache {human(self.before)} -> {human(self.after)} (limit {limit}): {verb} {len(self.removed)} "
                f"entries, {human(self.before - self.after)}: {names}{more}")


# Among entries last used together, what is built from others goes before them: a
# kernel before its build dir and its unpacked source (a kernel whose source is gone
# could no longer rebuild a driver module).
RANK = {"build": 2, "sources": 3, "source-debs": 4}


def order(all_entries: list[Entry]) -> list[Entry]:
    """Removal order: what can no longer serve first, then least recently used."""
    return sorted(all_entries, key=lambda e: (not e.stale, e.last_used, RANK.get(e.kind, 1)))


def prune(cache: Cache, max_size: int | None = None, older_than_days: float | None = None,
          dry_run: bool = False) -> Pruned:
    """Remove entries, in `order`, while the cache is over `max_size`, and every entry
    unused for more than `older_than_days`; skip what is in use."""
    all_entries = entries(cache)
    total = before = sum(e.size for e in all_entries)
    keep = held(all_entries)
    busy = build_busy(cache)
    cutoff = time.time() - older_than_days * 86400 if older_than_days is not None else None
    removed, in_use = [], []
    for e in order(all_entries):
        over = max_size is not None and total > max_size
        old = cutoff is not None and e.last_used < cutoff
        if not (over or old):
            continue
        if e.kind in AREAS or e.kind == "logs":  # looked at again right before: a build may have begun
            busy = build_busy(cache)
            if e.kind in AREAS:  # and a kernel that needs this build dir may have been leased
                keep = held(all_entries)
        if any(n == e.path or e.path in n.parents for n in keep) or (busy and e.kind in (*AREAS, "logs")):
            in_use.append(e)
            continue
        with exclusive(e) as free:
            if not free:
                in_use.append(e)
                continue
            if not dry_run:
                _remove(e)
        removed.append(e)
        total -= e.size
    return Pruned(removed, in_use, before, total)


def _remove(e: Entry) -> None:
    if e.path.is_dir() and not e.path.is_symlink():
        # Renamed first, so a reader never sees half an artifact under its key.
        doomed = e.path.with_name(f".{e.path.name}.pruned-{os.getpid()}")
        try:
            os.rename(e.path, doomed)
        except FileNotFoundError:
            return  # another pruner was first
        shutil.rmtree(doomed, ignore_errors=True)
    else:
        e.path.unlink(missing_ok=True)
    if e.kind not in AREAS and e.kind != "logs":
        (e.path.parent / lease_name(e.path.name)).unlink(missing_ok=True)


def auto_limit() -> tuple[int, str]:
    text = os.environ.get("HARNESS_CACHE_MAX", DEFAULT_MAX)
    return parse_size(text), text


def prune_after_build(cache: Cache) -> str | None:
    """The default limit, applied after a large artifact was built: one line if anything went."""
    limit, text = auto_limit()
    if limit <= 0:
        return None
    result = prune(cache, max_size=limit)
    return result.summary(text) if result.removed else None
