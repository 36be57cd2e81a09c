"""Get a kernel to boot: build Debian's linux-source-6.12 (default) or a user's
tree with the config fragments from kernel-configs/, or unpack Debian's prebuilt
image. Results are immutable cache artifacts keyed by everything that made them."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .cache import Cache, hash_parts, sha256_file
from .errors import HarnessError
from .hostcmd import require_tool, run_checked, run_logged
from .kconfig import Fragment, check_fragments, resolve_fragments
from .paths import CONFIGS_DIR

# debug-checks is part of the kernel under test: DEBUG_PAGE_REF costs a static
# branch per page_ref op until its tracepoints are enabled, and DMA-API debug
# then checks every DMA call of every experiment. One kernel build instead of a
# separate debug variant (which recompiled nearly everything: page_ref.h is in mm.h).
DEFAULT_FRAGMENTS = ("base", "nics", "observe", "debug-checks")
DEBIAN_SOURCE_TARBALL = Path("/usr/src/linux-source-6.12.tar.xz")
BUILD_RECIPE_VERSION = "3"  # bump when the build steps below change what they produce
ARTIFACT_FILES = ("bzImage", "System.map", "vmlinux", "config")
# DWARF without variable location lists (what CONFIG_DEBUG_INFO_REDUCED adds, which
# BTF excludes): types for BTF and line tables for the barriers claim stay, and
# -g never changes the generated code. Var-tracking is 5-20 % of each compile.
KERNEL_KCFLAGS = "-fno-var-tracking"


@dataclass(frozen=True)
class KernelRequest:
    """What kernel to get. `tree=None` means Debian's linux-source-6.12."""

    tree: Path | None = None
    fragments: tuple[str, ...] = DEFAULT_FRAGMENTS
    patches: tuple[Path, ...] = ()
    variant: str = "stock"


@dataclass(frozen=True)
class Kernel:
    bzimage: Path
    config: Path
    release: str
    key: str
    system_map: Path | None = None
    vmlinux: Path | None = None
    initrd: Path | None = None  # modules initramfs for a distro kernel
    modules: tuple[str, ...] = ()  # modules the guest must load (distro kernel)
    meta: dict = field(default_factory=dict)

    def source_file(self, rel: str) -> Path:
        """A source file of the tree this kernel was built from (kept in the artifact)."""
        kept = self.bzimage.parent / "src" / rel
        if kept.is_file():
            return kept
        src = self.meta.get("source_dir")  # artifacts built before sources were kept: their own tree
        if src and (Path(src) / rel).is_file():
            return Path(src) / rel
        raise HarnessError(f"{rel}: this kernel's source is not available ({self.meta.get('source', 'prebuilt')})")

    @property
    def boot_image(self) -> Path:
        """What QEMU's -kernel gets: the uncompressed vmlinux when the kernel has a
        PVH entry (no real-mode setup, no decompression under TCG), else bzImage."""
        if self.meta.get("pvh") and self.vmlinux is not None:
            return self.vmlinux
        return self.bzimage

    @property
    def label(self) -> str:
        return f"{self.release} ({self.meta.get('source', '?')}, {self.meta.get('variant', 'stock')})"


def get_kernel(request: KernelRequest, cache: Cache | None = None) -> Kernel:
    cache = cache or Cache()
    fragments = resolve_fragments(list(request.fragments), CONFIGS_DIR)
    patches = [_check_patch(p) for p in request.patches]
    if request.tree is not None:
        source = _check_tree(request.tree)
        source_id = _tree_fingerprint(source)
    else:
        tarball = _debian_tarball()
        source_id = f"{tarball.name}:{sha256_file(tarball)}"
        source = None
    key = hash_parts(
        [("recipe", BUILD_RECIPE_VERSION), ("source", source_id), ("compiler", _compiler_id())]
        + [(f"fragment:{f.name}", f.text) for f in fragments]
        + [(f"patch:{p.name}", p.read_bytes()) for p in patches]
    )

    def build(out: Path) -> dict:
        origin = source if source is not None else _extract_debian_source(cache)
        # Every build compiles from the same path (cache/work/linux): ccache then
        # shares objects between variants and trees (the compile command and the
        # debug info name that path), so a patched variant recompiles one file.
        with cache.lock("work", "linux"):
            work = _stage_work_tree(origin, patches, cache)
            # One build dir per source and config, shared by its variants: they differ
            # only by patches, so a variant built after its stock kernel recompiles the
            # patched files and relinks (no tools, no ccache lookups of 1,500 objects).
            build_dir = cache.dir("build", hash_parts([("origin", str(origin))]
                                                      + [(f.name, f.text) for f in fragments]))
            patched = _refresh_patched_files(work, build_dir, patches)
            meta = _build(work, out, build_dir, fragments, cache, request, source_id)
            _record_patched_files(build_dir, patched)
            _keep_sources(work, out)
        return {**meta, "source_origin": str(origin)}

    art = cache.get_or_build("kernels", key, build)
    # The key has no variant name (the same config and patches are the same kernel).
    meta = {**art.meta, "variant": request.variant}
    return Kernel(
        bzimage=art.file("bzImage"), config=art.file("config"), release=meta["release"], key=key,
        system_map=art.file("System.map"), vmlinux=art.file("vmlinux"), meta=meta,
    )


def _check_tree(tree: Path) -> Path:
    tree = tree.expanduser().resolve()
    if not (tree / "Makefile").is_file() or not (tree / "Kconfig").is_file():
        raise HarnessError(f"--kernel-tree {tree}: not a Linux source tree (no Makefile/Kconfig at its top)")
    if (tree / ".config").exists():
        raise HarnessError(
            f"--kernel-tree {tree}: the tree has a .config (it was configured in-tree); the harness builds "
            f"out of tree, which kbuild refuses for such a tree: run 'make -C {tree} mrproper' first"
        )
    return tree


def _tree_fingerprint(tree: Path) -> str:
    """Size and mtime of every source file: any edit in the tree changes the key."""
    parts = []
    for dirpath, dirnames, filenames in os.walk(tree):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            parts.append(f"{os.path.relpath(path, tree)}:{st.st_size}:{st.st_mtime_ns}")
    return f"tree:{tree}:" + hash_parts([("files", "\n".join(parts))])


def _debian_tarball() -> Path:
    if not DEBIAN_SOURCE_TARBALL.is_file():
        raise HarnessError(
            f"{DEBIAN_SOURCE_TARBALL} is missing: apt-get install -t bookworm-backports linux-source-6.12 "
            "(or run scripts/bootstrap-host.sh), or pass --kernel-tree PATH / --kernel debian"
        )
    return DEBIAN_SOURCE_TARBALL


def _compiler_id() -> str:
    require_tool("gcc")
    return run_checked(["gcc", "--version"]).splitlines()[0]


def _check_patch(path: Path) -> Path:
    path = path.expanduser().resolve()
    if not path.is_file():
        raise HarnessError(f"kernel patch {path} does not exist")
    return path


def _extract_debian_source(cache: Cache) -> Path:
    """Unpack the tarball once into the cache (atomic, shared by every build)."""
    tarball = _debian_tarball()
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
KEPT_SOURCES = ("drivers/net/ethernet/intel/igb", "drivers/net/ethernet/intel/e1000e")


def _stage_work_tree(origin: Path, patches: list[Path], cache: Cache) -> Path:
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


def _refresh_patched_files(work: Path, build_dir: Path, patches: list[Path]) -> set[str]:
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


def _record_patched_files(build_dir: Path, patched: set[str]) -> None:
    (build_dir / PATCHED_FILES_STATE).write_text(json.dumps(sorted(patched)))


def _keep_sources(work: Path, out: Path) -> None:
    """The driver sources this kernel was built from, kept with it (the work tree
    is reused by the next build): claims read source lines from here."""
    for rel in KEPT_SOURCES:
        if (work / rel).is_dir():
            shutil.copytree(work / rel, out / "src" / rel, ignore=shutil.ignore_patterns("*.o", ".*.cmd"))


def make_env(cache: Cache, src: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        CCACHE_DIR=str(cache.dir("ccache")),
        CCACHE_BASEDIR=str(src),
        # With -g ccache would hash the build directory, so builds in other build
        # dirs (other configs, trees) would share nothing; the cost is a comp_dir
        # in DWARF that may name another build dir (same sources).
        CCACHE_NOHASHDIR="1",
        CCACHE_MAXSIZE=os.environ.get("CCACHE_MAXSIZE", "5G"),
        KBUILD_BUILD_TIMESTAMP="harness",
        KBUILD_BUILD_USER="harness",
        KBUILD_BUILD_HOST="harness",
        KBUILD_BUILD_VERSION="1",
        KCFLAGS=KERNEL_KCFLAGS,
        # Depend mode: a miss compiles once and takes the headers from the compiler's
        # -MMD file, instead of running the preprocessor first to hash its output
        # (0.2-0.4 s per kernel file, paid on every cold build).
        CCACHE_DEPEND="1",
    )
    return env


def make_jobs() -> int:
    """make -j: one job more than CPUs, so a job waiting on I/O leaves no CPU idle."""
    return (os.cpu_count() or 1) + 1


def configure(make: list[str], src: Path, build_dir: Path, fragment_paths: list[Path], log: Path,
              env: dict[str, str], label: str = "kernel") -> str:
    """tinyconfig, the fragments merged onto it, olddefconfig: `build_dir`'s .config text.
    `make` is the make command with -C, O= (and ARCH= for a cross build)."""
    run_logged([*make, "tinyconfig"], log, what=f"{label} config", env=env)
    run_logged([str(src / "scripts/kconfig/merge_config.sh"), "-m", "-O", str(build_dir), str(build_dir / ".config"),
                *[str(p) for p in fragment_paths]], log, what=f"{label} merge fragments", env=env, cwd=src)
    run_logged([*make, "olddefconfig"], log, what=f"{label} olddefconfig", env=env)
    return (build_dir / ".config").read_text()


def _build(src: Path, out: Path, build_dir: Path, fragments: list[Fragment], cache: Cache,
           request: KernelRequest, source_id: str) -> dict:
    for tool in ("make", "gcc", "flex", "bison", "bc"):
        require_tool(tool, "needed to build a kernel")
    use_ccache = shutil.which("ccache") is not None
    log = out / "build.log"
    env = make_env(cache, src)
    jobs = make_jobs()
    make = ["make", "-C", str(src), f"O={build_dir}", "-s"]
    started = time.monotonic()
    print(f"harness: building kernel {request.variant} from {src} (log: {log})", file=sys.stderr, flush=True)

    config_text = configure(make, src, build_dir, [f.path for f in fragments], log, env)
    check_fragments(config_text, fragments, src)

    progress = KbuildProgress()
    cc = ["CC=ccache gcc"] if use_ccache else []
    build_cmd = ["make", "-C", str(src), f"O={build_dir}", f"-j{jobs}", *cc, "bzImage"]
    run_logged(build_cmd, log, what="kernel build", env=env, timeout=3 * 3600,
               progress=progress.update)
    for name, rel in (("bzImage", "arch/x86/boot/bzImage"), ("System.map", "System.map"),
                      ("vmlinux", "vmlinux"), ("config", ".config")):
        shutil.copy2(build_dir / rel, out / name)
    release = (build_dir / "include/config/kernel.release").read_text().strip()
    return {
        "source": "tree" if request.tree else "debian-source",
        "source_id": source_id,
        # The reused work tree: not a place to read this kernel's sources from later
        # (source_file() reads the copies kept in the artifact).
        "build_tree": str(src),
        "variant": request.variant,
        "release": release,
        "pvh": "CONFIG_PVH=y" in config_text.splitlines(),
        "fragments": [f.name for f in fragments],
        "patches": [p.name for p in request.patches],
        "compiler": _compiler_id(),
        "kcflags": KERNEL_KCFLAGS,
        "ccache": use_ccache,
        "build_seconds": round(time.monotonic() - started, 1),
        "bzimage_bytes": (out / "bzImage").stat().st_size,
        "reproduce": " && ".join([
            f"make -C {src} O=BUILD tinyconfig",
            f"{src}/scripts/kconfig/merge_config.sh -m -O BUILD BUILD/.config "
            + " ".join(str(f.path) for f in fragments),
            f"make -C {src} O=BUILD olddefconfig",
            f"make -C {src} O=BUILD -j{jobs} KCFLAGS={KERNEL_KCFLAGS} bzImage",
        ]),
    }


class KbuildProgress:
    """Counts kbuild's `  CC      path` lines: a build's progress in objects compiled."""

    CC_LINE = re.compile(r"^\s+CC\s+(\S+)")

    def __init__(self) -> None:
        self.compiled = 0
        self.current = ""

    def update(self, line: str) -> str:
        if m := self.CC_LINE.match(line):
            self.compiled += 1
            self.current = m.group(1)
        return f"{self.compiled} objects compiled ({self.current})"


def describe(kernel: Kernel) -> str:
    lines = [f"kernel {kernel.release}  key {kernel.key}"]
    for label, path in (("bzImage", kernel.bzimage), ("vmlinux", kernel.vmlinux),
                        ("System.map", kernel.system_map), ("config", kernel.config),
                        ("initrd", kernel.initrd)):
        if path is not None:
            lines.append(f"  {label:11s}{path}")
    return "\n".join(lines)
