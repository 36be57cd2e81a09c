"""Get a kernel to boot: build Debian's linux-source-6.12 (default) or a user's
tree with the config fragments from kernel-configs/, or unpack Debian's prebuilt
image. Results are immutable cache artifacts keyed by everything that made them."""

from __future__ import annotations

import functools
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.artifacts.driver_module import get_module
from harness.artifacts.kbuild import (
    KERNEL_KCFLAGS,
    KbuildProgress,
    build_family,
    configure,
    make_env,
    make_jobs,
)
from harness.artifacts.kconfig import Fragment, adapt_fragments, check_fragments, final_values, resolve_fragments
from harness.artifacts.source_tree import (
    check_patch,
    check_tree,
    debian_tarball,
    dir_digest,
    extract_debian_source,
    patched_paths,
    record_patched_files,
    refresh_patched_files,
    stage_work_tree,
    tree_fingerprint,
)
from harness.cache import Artifact, Cache, hash_parts, sha256_file
from harness.errors import BuildError, HarnessError
from harness.hostcmd import require_tool, run_checked, run_logged
from harness.nics import CATALOGUE, module_dirs
from harness.paths import CONFIGS_DIR

# debug-checks is part of the kernel under test: DEBUG_PAGE_REF costs a static
# branch per page_ref op until its tracepoints are enabled, and DMA-API debug
# then checks every DMA call of every experiment. One kernel build instead of a
# separate debug variant (which recompiled nearly everything: page_ref.h is in mm.h).
DEFAULT_FRAGMENTS = ("base", "nics", "observe", "debug-checks", "selftests")
DEBUG_FRAGMENT = "debug"  # the debug flavour (`--debug`): sanitizers, leak finders, fault injection
# What a kernel built with an option needs on its command line to use it: kmemleak
# is built off by default (no cost until asked), page_owner records nothing unless asked.
BOOT_ARGS_OF_CONFIG = {"CONFIG_DEBUG_KMEMLEAK_DEFAULT_OFF": "kmemleak=on", "CONFIG_PAGE_OWNER": "page_owner=on"}
BUILD_RECIPE_VERSION = "5"  # bump when the build steps below change what they produce (5: built-in NIC sources kept)


@dataclass(frozen=True)
class KernelRequest:
    """What kernel to get: a tree, or a Debian source tarball (default: the host's
    linux-source-6.12)."""

    tree: Path | None = None
    tarball: Path | None = None
    fragments: tuple[str, ...] = DEFAULT_FRAGMENTS
    patches: tuple[Path, ...] = ()
    variant: str = "stock"


@dataclass(frozen=True)
class Kernel:
    bzimage: Path
    config: Path
    release: str
    key: str  # this kernel as booted: its base build and its driver modules
    system_map: Path | None = None
    vmlinux: Path | None = None
    initrd: Path | None = None  # modules initramfs for a distro kernel
    modules: tuple[str, ...] = ()  # modules the guest must load
    meta: dict = field(default_factory=dict)
    # A self-built kernel's NIC driver modules (module name -> .ko with DWARF); its
    # variants share `base_key` (one vmlinux) and differ only here.
    module_files: dict[str, Path] = field(default_factory=dict)
    base_key: str = ""
    source_roots: tuple[Path, ...] = ()  # kept sources: the modules' own first, then the base's
    # A prebuilt kernel's NIC modules with their DWARF (from its -dbg package), for the
    # barrier analysis; never loaded (the guest loads the image's own modules).
    debug_objects: dict[str, Path] = field(default_factory=dict)

    def source_file(self, rel: str) -> Path:
        """A source file of the tree this kernel was built from (kept with its artifacts)."""
        for root in (*self.source_roots, self.bzimage.parent / "src"):
            if (root / rel).is_file():
                return root / rel
        why = self.meta.get("source_mismatch") or self.meta.get("source", "prebuilt")
        raise HarnessError(f"{rel}: this kernel's source is not available ({why})")

    def module_file(self, module: str) -> Path:
        if module not in self.module_files:
            raise HarnessError(f"kernel {self.release} has no {module}.ko (a prebuilt kernel, or {module} built in)")
        return self.module_files[module]

    @property
    def boot_image(self) -> Path:
        """What QEMU's -kernel gets: the uncompressed vmlinux when the kernel has a
        PVH entry (no real-mode setup, no decompression under TCG), else bzImage. Not for
        the debug flavour: a KASAN kernel entered through PVH resets before its first
        console line (6.12.95: QEMU exits after 0.5 s); through bzImage it boots."""
        if self.meta.get("pvh") and self.vmlinux is not None and not self.debug:
            return self.vmlinux
        return self.bzimage

    @property
    def label(self) -> str:
        flavour = ", debug" if self.debug else ""
        return f"{self.release} ({self.meta.get('source', '?')}, {self.meta.get('variant', 'stock')}{flavour})"

    @property
    def debug(self) -> bool:
        """Whether this is the debug flavour (kmemleak and page_owner scanned after each experiment)."""
        return DEBUG_FRAGMENT in self.meta.get("fragments", ())

    @functools.cached_property
    def config_values(self) -> dict[str, str]:
        return final_values(self.config.read_text())

    def config_value(self, option: str) -> str | None:
        return self.config_values.get(option)

    @property
    def boot_args(self) -> tuple[str, ...]:
        """Command-line arguments the debug flavour's config needs (BOOT_ARGS_OF_CONFIG);
        none for any other kernel (a distro config may build page_owner in, unused)."""
        if not self.debug:
            return ()
        return tuple(arg for option, arg in BOOT_ARGS_OF_CONFIG.items() if self.config_value(option) == "y")


def get_kernel(request: KernelRequest, cache: Cache | None = None) -> Kernel:
    """The kernel of `request`: its base build (vmlinux and every NIC driver module)
    cached by everything outside the NIC driver directories, and each driver module
    rebuilt alone when a patch or an edit touches only its directory."""
    cache = cache or Cache()
    fragments = resolve_fragments(list(request.fragments), CONFIGS_DIR)
    patches = [check_patch(p) for p in request.patches]
    dirs = module_dirs()
    base_patches, module_patches = split_patches(patches, dirs)
    if request.tree is not None:
        source = check_tree(request.tree)
        # A driver directory a base patch also touches is part of the base build.
        touched = {t for p in base_patches for t in patched_paths(p.read_text(errors="replace"))}
        separate = tuple(d for d in dirs.values() if not any(t.startswith(d + "/") for t in touched))
        source_id = tree_fingerprint(source, exclude=separate)
    else:
        tarball = debian_tarball(request.tarball)
        source_id = f"{tarball.name}:{sha256_file(tarball)}"
        source = None
    base_key = hash_parts(
        [("recipe", BUILD_RECIPE_VERSION), ("source", source_id), ("compiler", _compiler_id())]
        + [(f"fragment:{f.name}", f.text) for f in fragments]
        + [(f"patch:{p.name}", p.read_bytes()) for p in base_patches]
    )

    def build(out: Path) -> dict:
        origin = source if source is not None else extract_debian_source(cache, request.tarball)
        # Every build compiles from the same path (cache/work/linux): ccache then
        # shares objects between variants and trees (the compile command and the
        # debug info name that path), so a patched variant recompiles one file.
        with cache.lock("work", "linux"):
            work = stage_work_tree(origin, base_patches, cache)
            # One build dir per source and config, shared by its variants: they differ
            # only by patches, so a variant built after its stock kernel recompiles the
            # patched files and relinks (no tools, no ccache lookups of 1,500 objects).
            build_dir = cache.dir("build", hash_parts([("origin", str(origin))]
                                                      + [(f.name, f.text) for f in fragments]))
            patched = refresh_patched_files(work, build_dir, base_patches)
            # The log lives outside `out`, which a failed build deletes: a failure's log stays
            # in the cache's logs/; a build that succeeds moves it into its artifact.
            log = cache.dir("logs") / f"kernel-build-{time.strftime('%Y%m%dT%H%M%S')}-{base_key}.log"
            try:
                meta = _build(work, out, build_dir, fragments, cache, request, source_id, log)
            except BuildError as e:  # the files as the user's tree has them, not the staged copy
                raise BuildError(e.what, e.log_path, [line.replace(f"{work}/", f"{origin}/")
                                                      for line in e.error_lines]) from e
            if log.exists():  # (a pruner may have taken it; the build stands without it)
                shutil.move(log, out / "build.log")
            record_patched_files(build_dir, patched)
            _keep_sources(work, out, dirs)
        return {**meta, "source_origin": str(origin), "build_dir": str(build_dir),
                "base_patches": [p.name for p in base_patches], "base_patch_paths": [str(p) for p in base_patches],
                "module_sources": {m: dir_digest(origin / d) for m, d in dirs.items()}}

    base = cache.get_or_build("kernels", base_key, build)
    return kernel_of_base(base, request, module_patches, cache)


def kernel_of_base(base: Artifact, request: KernelRequest, module_patches: dict[str, list[Path]],
                   cache: Cache) -> Kernel:
    """The kernel of `request` on its base build: the base's modules, and each driver
    module its patches (or an edited tree) touch rebuilt alone."""
    dirs = module_dirs()
    base_key = base.path.name
    origin = Path(base.meta["source_origin"])
    files = {ko.stem: ko for ko in sorted(base.path.joinpath("modules").glob("*.ko"))}
    module_keys, roots = {}, []
    for module, rel in dirs.items():
        own = module_patches.get(module, [])
        current = dir_digest(origin / rel) if request.tree is not None else base.meta["module_sources"][module]
        if not own and current == base.meta["module_sources"][module]:
            continue  # the base build's own
        art = get_module(base, module, rel, own, cache)  # a driver edit: this module alone
        files[module], module_keys[module] = art.file(f"{module}.ko"), art.meta["key"]
        roots.append(art.path / "src")
    # The key has no variant name (the same config and patches are the same kernel).
    meta = {**base.meta, "variant": request.variant, "patches": [p.name for p in request.patches],
            "base_key": base_key, "module_builds": {m: module_keys.get(m, f"base:{base_key}") for m in dirs}}
    key = hash_parts([("base", base_key), *sorted(module_keys.items())]) if module_keys else base_key
    return Kernel(
        bzimage=base.file("bzImage"), config=base.file("config"), release=meta["release"], key=key,
        system_map=base.file("System.map"), vmlinux=base.file("vmlinux"), meta=meta,
        modules=tuple(dirs), module_files=files, base_key=base_key, source_roots=tuple(roots),
    )


def split_patches(patches: list[Path], dirs: dict[str, str]) -> tuple[list[Path], dict[str, list[Path]]]:
    """(patches for the base build, {module: patches touching only that module's directory})."""
    base: list[Path] = []
    per_module: dict[str, list[Path]] = {}
    for p in patches:
        touched = patched_paths(p.read_text(errors="replace"))
        owners = {m for m, d in dirs.items() for t in touched if t.startswith(d + "/")}
        if len(owners) == 1 and all(t.startswith(dirs[next(iter(owners))] + "/") for t in touched):
            per_module.setdefault(owners.pop(), []).append(p)
        else:
            base.append(p)
    return base, per_module


def _compiler_id() -> str:
    require_tool("gcc")
    return run_checked(["gcc", "--version"]).splitlines()[0]


KEPT_IGNORE = shutil.ignore_patterns("*.o", "*.ko", "*.mod", "*.mod.c", ".*.cmd", "modules.order", "Module.symvers")


def _keep_sources(work: Path, out: Path, dirs: dict[str, str]) -> None:
    """The NIC driver sources this kernel was built from, kept with it (the work tree
    is reused by the next build): claims and the survey read source lines from here.
    A module's whole directory; a built-in driver's rx source file and its directory's headers."""
    for rel in dirs.values():
        if (work / rel).is_dir():
            shutil.copytree(work / rel, out / "src" / rel, ignore=KEPT_IGNORE)
    for n in CATALOGUE.values():
        if n.module is None and (work / n.source_dir / n.rx_source).is_file():
            dest = out / "src" / n.source_dir
            dest.mkdir(parents=True, exist_ok=True)
            for f in [work / n.source_dir / n.rx_source, *(work / n.source_dir).glob("*.h")]:
                shutil.copy2(f, dest / f.name)


def _build(src: Path, out: Path, build_dir: Path, fragments: list[Fragment], cache: Cache,
           request: KernelRequest, source_id: str, log: Path) -> dict:
    for tool in ("make", "gcc", "flex", "bison", "bc"):
        require_tool(tool, "needed to build a kernel")
    use_ccache = shutil.which("ccache") is not None
    env = make_env(cache, src)
    jobs = make_jobs()
    make = ["make", "-C", str(src), f"O={build_dir}", "-s"]
    started = time.monotonic()
    # The base build is every variant's (a variant's driver-only patches build its module
    # alone afterwards): say which request got here first, not that it builds a variant.
    print(f"harness: building the base kernel (vmlinux and the NIC driver modules, first asked for by the "
          f"{request.variant} kernel) from {src} (log: {log})", file=sys.stderr, flush=True)

    fragments, renamed = adapt_fragments(fragments, src, out / "fragments")
    for note in renamed:
        print(f"harness: kernel config: {note}", file=sys.stderr, flush=True)
    config_text = configure(make, src, build_dir, [f.path for f in fragments], log, env)
    check_fragments(config_text, fragments, src)

    progress = KbuildProgress(cache, hash_parts([("source", source_id), ("config", config_text)]),
                              build_family(src, [f.name for f in fragments]))
    cc = ["CC=ccache gcc"] if use_ccache else []
    build_cmd = ["make", "-C", str(src), f"O={build_dir}", f"-j{jobs}", *cc, "bzImage", "modules"]
    run_logged(build_cmd, log, what="kernel build", env=env, timeout=3 * 3600,
               progress=progress.update)
    progress.finished()
    for name, rel in (("bzImage", "arch/x86/boot/bzImage"), ("System.map", "System.map"),
                      ("vmlinux", "vmlinux"), ("config", ".config"), ("Module.symvers", "Module.symvers")):
        shutil.copy2(build_dir / rel, out / name)
    (out / "modules").mkdir()
    # Every module the build made (modules.order: the NIC drivers and what they select).
    for line in (build_dir / "modules.order").read_text().split():
        ko = build_dir / Path(line).with_suffix(".ko")
        shutil.copy2(ko, out / "modules" / ko.name)
    for module, rel in module_dirs().items():
        if not (out / "modules" / f"{module}.ko").is_file():
            raise HarnessError(f"the kernel build made no {rel}/{module}.ko: is its Kconfig symbol =m in "
                               "kernel-configs/nics.config?")
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
        "config_renamed": renamed,
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
            f"make -C {src} O=BUILD -j{jobs} KCFLAGS={KERNEL_KCFLAGS} bzImage modules",
        ]),
    }


def describe(kernel: Kernel) -> str:
    lines = [f"kernel {kernel.release}  key {kernel.key}"]
    for label, path in (("bzImage", kernel.bzimage), ("vmlinux", kernel.vmlinux),
                        ("System.map", kernel.system_map), ("config", kernel.config),
                        ("initrd", kernel.initrd)):
        if path is not None:
            lines.append(f"  {label:11s}{path}")
    return "\n".join(lines)
