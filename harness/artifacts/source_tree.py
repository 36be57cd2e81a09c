"""Kernel source trees: the Debian source package unpacked once, a user's tree
fingerprinted, and the one work tree (cache/work/linux) every build compiles
from, staged with a build's patches so unchanged files keep their mtimes."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tarfile
from pathlib import Path

from harness.cache import Cache, hash_parts
from harness.errors import HarnessError
from harness.hostcmd import require_tool, run_checked

DEBIAN_SOURCE_TARBALL = Path("/usr/src/linux-source-6.12.tar.xz")


def dir_digest(path: Path) -> str:
    """Content hash of a source directory (file names and bytes; build products left out)."""
    parts = []
    for f in sorted(path.rglob("*")):
        if f.is_file() and not f.name.startswith(".") and f.suffix not in (".o", ".ko", ".mod", ".cmd"):
            parts.append((str(f.relative_to(path)), f.read_bytes()))
    return hash_parts(parts)


def check_tree(tree: Path) -> Path:
    tree = tree.expanduser().resolve()
    if not (tree / "Makefile").is_file() or not (tree / "Kconfig").is_file():
        raise HarnessError(f"--kernel-tree {tree}: not a Linux source tree (no Makefile/Kconfig at its top)")
    if (tree / ".config").exists():
        raise HarnessError(
            f"--kernel-tree {tree}: the tree has a .config (it was configured in-tree); the harness builds "
            f"out of tree, which kbuild refuses for such a tree: run 'make -C {tree} mrproper' first"
        )
    return tree


def tree_fingerprint(tree: Path, exclude: tuple[str, ...] = ()) -> str:
    """Size and mtime of every source file outside `exclude` (directories relative to
    the tree): any edit there changes the key. The NIC driver directories are left
    out: an edit in one rebuilds only that module (their content is hashed apart)."""
    parts = []
    skip = {str(tree / e) for e in exclude}
    for dirpath, dirnames, filenames in os.walk(tree):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and os.path.join(dirpath, d) not in skip)
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            parts.append(f"{os.path.relpath(path, tree)}:{st.st_size}:{st.st_mtime_ns}")
    return f"tree:{tree}:" + hash_parts([("files", "\n".join(parts))])


def debian_tarball(tarball: Path | None = None) -> Path:
    """`tarball` (a linux-source-X.Y tarball fetched for --kernel source-latest), or
    the host's linux-source-6.12."""
    if tarball is not None:
        if not tarball.is_file():
            raise HarnessError(f"kernel source tarball {tarball} is missing")
        return tarball
    if not DEBIAN_SOURCE_TARBALL.is_file():
        raise HarnessError(
            f"{DEBIAN_SOURCE_TARBALL} is missing: apt-get install -t bookworm-backports linux-source-6.12 "
            "(or run scripts/bootstrap-host.sh), or pass --kernel-tree PATH / --kernel debian"
        )
    return DEBIAN_SOURCE_TARBALL


def check_patch(path: Path) -> Path:
    path = path.expanduser().resolve()
    if not path.is_file():
        raise HarnessError(f"kernel patch {path} does not exist")
    return path


def extract_debian_source(cache: Cache, tarball: Path | None = None) -> Path:
    """Unpack the tarball once into the cache (atomic, shared by every build)."""
    tarball = debian_tarball(tarball)
    key = hash_parts([("tarball", f"{tarball}:{tarball.stat().st_size}:{tarball.stat().st_mtime_ns}")])

    def extract(out: Path) -> dict:
        print(f"harness: unpacking {tarball} ...", file=sys.stderr, flush=True)
        require_tool("xz")
        with tarfile.open(tarball) as tf:
            tf.extractall(out, filter="fully_trusted")
        (top,) = [p for p in out.iterdir() if p.is_dir()]
        return {"tarball": str(tarball), "top": top.name}

    # Verifying 80k source files by hash on every use would cost seconds: trust the
    # atomic rename here; the build outputs are what get verified.
    art = cache.get_or_build("sources", key, extract, verify_files=False)
    return art.path / art.meta["top"]


WORK_TREE_EXCLUDES = (".git", "*.o", "*.ko", ".tmp_*")


def stage_work_tree(origin: Path, patches: list[Path], cache: Cache) -> Path:
    """cache/work/linux := `origin` (files hard-linked where possible, only changed
    files touched, so kbuild sees unchanged mtimes) with `patches` applied.
    patch(1) writes new files rather than through the links: `origin` is never changed."""
    dest = cache.dir("work") / "linux"
    excludes = [f"--exclude={x}" for x in WORK_TREE_EXCLUDES]
    run_checked(["rsync", "-a", "--delete", *excludes, f"--link-dest={origin}", f"{origin}/", f"{dest}/"],
                what=f"staging {origin} as the build tree", timeout=1800)
    for patch in patches:
        # --forward: a patch already applied (twice on the command line) fails instead of asking.
        run_checked(["patch", "-p1", "--forward", "-d", str(dest), "-i", str(patch), "--no-backup-if-mismatch", "-s"],
                    what=f"applying {patch.name} (does it still apply to this tree?)")
    return dest


PATCHED_FILES_STATE = ".harness-patched-files"
PATCH_TARGET = re.compile(r"^(?:\+\+\+|---) (\S+)")


def patched_paths(patch_text: str) -> set[str]:
    """The tree paths a -p1 unified diff touches (created, changed or deleted)."""
    paths = set()
    for line in patch_text.splitlines():
        if (m := PATCH_TARGET.match(line)) and m.group(1) != "/dev/null":
            paths.add(m.group(1).split("/", 1)[-1])
    return paths


def refresh_patched_files(work: Path, build_dir: Path, patches: list[Path]) -> set[str]:
    """Give a fresh mtime to every file this build patches or the build dir's last
    build had patched. The work tree restores unpatched files with their original
    (old) mtimes, which make would take as older than the patched build's objects;
    a new inode also keeps the origin (hard-linked) untouched."""
    patched = set().union(*(patched_paths(p.read_text(errors="replace")) for p in patches))
    state = build_dir / PATCHED_FILES_STATE
    before = set(json.loads(state.read_text())) if state.is_file() else set()
    refresh = sorted(patched | before)
    # Written before the build: an interrupted build's files are refreshed next time too.
    state.write_text(json.dumps(refresh))
    for rel in refresh:
        path = work / rel
        if path.is_file():
            fresh = path.with_name(f".{path.name}.harness-fresh")
            shutil.copyfile(path, fresh)
            fresh.chmod(path.stat().st_mode)
            os.replace(fresh, path)
    return patched


def record_patched_files(build_dir: Path, patched: set[str]) -> None:
    (build_dir / PATCHED_FILES_STATE).write_text(json.dumps(sorted(patched)))


