"""The cache stays bounded: what `harness cache prune` removes and in which order, and
what it never touches (an artifact a running harness leases, what a leased kernel
needs), on a cache laid out as the harness lays it out (files of known sizes)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from harness.cache import MANIFEST, Cache, lease_name
from harness.cache_prune import entries, order, parse_size, prune
from harness.errors import HarnessError

MB = 1 << 20
NOW = time.time()


def artifact(cache: Cache, kind: str, key: str, mb: int, days_ago: float, **meta: object) -> Path:
    path = cache.dir(kind, key)
    (path / "blob").write_bytes(b"\0" * (mb * MB))
    (path / MANIFEST).write_text(json.dumps({"meta": meta, "files": {}}))
    lease = cache.dir(kind) / lease_name(key)
    lease.touch()
    os.utime(lease, (NOW - days_ago * 86400,) * 2)
    return path


def area(cache: Cache, kind: str, name: str, mb: int, days_ago: float) -> Path:
    path = cache.dir(kind, name)
    (path / "vmlinux.o").write_bytes(b"\0" * (mb * MB))
    os.utime(path, (NOW - days_ago * 86400,) * 2)
    return path


@pytest.fixture
def laid_out(tmp_path):
    """Two trees' kernels (one tree deleted since), the Debian 6.12 kernel and its source."""
    cache = Cache(tmp_path / "cache")
    tree_a, tree_gone = tmp_path / "linux-a", tmp_path / "linux-gone"
    tree_a.mkdir()
    build_a, build_gone = area(cache, "build", "a", 12, 3), area(cache, "build", "gone", 12, 1)
    build_deb = area(cache, "build", "deb", 12, 9)
    source = artifact(cache, "sources", "deb", 16, 9, top="linux-source-6.12")
    artifact(cache, "kernels", "ka", 2, 3, source="tree", source_origin=str(tree_a), build_dir=str(build_a))
    artifact(cache, "kernels", "kgone", 2, 1, source="tree", source_origin=str(tree_gone),
             build_dir=str(build_gone))
    artifact(cache, "kernels", "kdeb", 2, 0.01, source="debian-source",
             source_origin=str(source / "linux-source-6.12"), build_dir=str(build_deb))
    artifact(cache, "modules", "mgone", 1, 0.5, base_key="kgone", module="igb")
    artifact(cache, "images", "img", 4, 0.02, recipe="default")
    return cache


def names(es) -> list[str]:
    return [e.label for e in es]


def test_what_can_no_longer_serve_goes_first_then_the_least_recently_used(laid_out):
    es = {e.label: e for e in entries(laid_out)}
    assert es["kernels/kgone"].stale == f"its tree {laid_out.root.parent / 'linux-gone'} no longer exists"
    assert es["build/gone"].stale == es["modules/mgone"].stale == es["kernels/kgone"].stale
    # The Debian kernel was used a moment ago: its build dir and source count as used then.
    assert es["build/deb"].last_used == es["sources/deb"].last_used == es["kernels/kdeb"].last_used
    ranked = names(order(list(es.values())))
    assert ranked[:3] == ["kernels/kgone", "build/gone", "modules/mgone"]
    assert ranked[3:6] == ["kernels/ka", "build/a", "images/img"]
    assert ranked.index("kernels/kdeb") < ranked.index("build/deb") < ranked.index("sources/deb")


def test_prune_to_a_size_keeps_the_most_recently_used(laid_out):
    before = sum(e.size for e in entries(laid_out))
    result = prune(laid_out, max_size=before - 20 * MB)
    # 2 + 12 + 1 MB of what can no longer serve, then the oldest tree's kernel and build dir.
    assert names(result.removed) == ["kernels/kgone", "build/gone", "modules/mgone", "kernels/ka", "build/a"]
    assert result.after <= before - 20 * MB
    left = names(entries(laid_out))
    assert {"kernels/kdeb", "build/deb", "sources/deb", "images/img"} <= set(left)
    assert not (laid_out.root / "build" / "gone").exists()
    assert not (laid_out.root / "kernels" / lease_name("kgone")).exists()


def test_a_leased_kernel_and_what_it_needs_are_never_removed(laid_out):
    user = Cache(laid_out.root)  # another harness, using the Debian kernel
    user.lease("kernels", "kdeb")
    result = prune(laid_out, max_size=0)
    assert {"kernels/kdeb", "build/deb", "sources/deb"} == set(names(result.kept_in_use))
    assert set(names(entries(laid_out))) == {"kernels/kdeb", "build/deb", "sources/deb"}
    user.release()
    assert names(prune(laid_out, max_size=0).kept_in_use) == []
    assert entries(laid_out) == []


def test_older_than_removes_only_what_was_unused_that_long(laid_out):
    # build/deb and sources/deb are 9 days old themselves, but their kernel was used a moment ago.
    assert prune(laid_out, older_than_days=5).removed == []
    dry = prune(laid_out, older_than_days=2, dry_run=True)
    assert names(dry.removed) == ["kernels/ka", "build/a"] and (laid_out.root / "kernels" / "ka").is_dir()


def test_a_build_of_a_large_artifact_applies_the_default_limit(tmp_path, monkeypatch, capsys):
    cache = Cache(tmp_path)
    area(cache, "build", "old", 8, 30)
    monkeypatch.setenv("HARNESS_CACHE_MAX", "6M")

    def build(out: Path) -> dict:
        (out / "bzImage").write_bytes(b"\0" * (2 * MB))
        return {"release": "6.12.95"}

    art = cache.get_or_build("kernels", "k1", build)
    assert art.path.is_dir() and not (tmp_path / "build" / "old").exists()
    assert "removed 1 entries" in capsys.readouterr().err


@pytest.mark.parametrize("text, size", [("20G", 20 << 30), ("512M", 512 << 20), ("8GB", 8 << 30),
                                        ("1.5T", int(1.5 * (1 << 40))), ("1000", 1000)])
def test_sizes(text, size):
    assert parse_size(text) == size


def test_a_bad_size_says_what_it_expects():
    with pytest.raises(HarnessError, match="expected a number with K, M, G or T"):
        parse_size("lots")


def test_build_areas_wait_while_a_build_holds_them(laid_out):
    from filelock import FileLock

    with FileLock(str(laid_out.dir("work") / ".linux.lock")):  # what every kernel build holds
        result = prune(laid_out, max_size=0)
    assert {"build/a", "build/gone", "build/deb"} == set(names(result.kept_in_use))
    assert {"kernels/ka", "kernels/kgone", "kernels/kdeb"} <= set(names(result.removed))


def test_a_reader_waiting_on_a_prune_finds_the_artifact_gone(tmp_path):
    """The pruner holds the lease exclusively while it removes an artifact and its lease
    file; a lookup waiting for the lease meanwhile then returns None (it rebuilds),
    and its lease is on the lease file at the path, so a later pruner sees it."""
    import fcntl
    import threading

    cache = Cache(tmp_path)
    artifact(cache, "kernels", "k", 1, 1)
    lease = tmp_path / "kernels" / lease_name("k")
    fd = os.open(lease, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as prune's exclusive() holds it
    reader = Cache(tmp_path)
    found: list = []
    t = threading.Thread(target=lambda: found.append(reader.lookup("kernels", "k")))
    t.start()
    time.sleep(0.3)  # the reader now waits for its shared lock
    shutil.rmtree(tmp_path / "kernels" / "k")
    lease.unlink()
    os.close(fd)
    t.join(5)
    assert found == [None]
    (held_path,) = reader._leases
    assert os.fstat(reader._leases[held_path]).st_ino == os.stat(lease).st_ino
