"""One NIC driver module rebuilt alone against its kernel's base build: what a
driver edit costs (compile the changed files, link the .ko), not a vmlinux
relink. The module is an external-module build (`make M=`) of the patched
driver directory against the base build dir the kernel was configured and
built in, so it links against the same Module.symvers."""

from __future__ import annotations

import contextlib
import shutil
import sys
import time
from pathlib import Path

from harness.artifacts.kbuild import make_env, make_jobs
from harness.artifacts.source_tree import dir_digest, stage_work_tree
from harness.build_errors import in_directory
from harness.cache import Artifact, Cache, hash_parts
from harness.errors import BuildError, HarnessError
from harness.hostcmd import run_checked, run_logged

MODULE_RECIPE_VERSION = "1"
KEPT_IGNORE = shutil.ignore_patterns("*.o", "*.ko", "*.mod", "*.mod.c", ".*.cmd", "modules.order", "Module.symvers")


def module_key(base: Artifact, module: str, rel: str, source_dir: Path, patches: list[Path]) -> str:
    return hash_parts([("recipe", MODULE_RECIPE_VERSION), ("base", base.path.name), ("module", module),
                       ("dir", rel), ("sources", dir_digest(source_dir))]
                      + [(f"patch:{p.name}", p.read_bytes()) for p in patches])


def get_module(base: Artifact, module: str, rel: str, patches: list[Path], cache: Cache) -> Artifact:
    """`module`.ko of `base` with its directory as in the base's origin tree plus `patches`."""
    origin = Path(base.meta["source_origin"])
    key = module_key(base, module, rel, origin / rel, patches)

    def build(out: Path) -> dict:
        started = time.monotonic()
        print(f"harness: building {module}.ko alone (against kernel {base.meta['release']}, base "
              f"{base.path.name})", file=sys.stderr, flush=True)
        log = cache.dir("logs") / f"module-{module}-{key}.log"  # outside the temp dir a failure deletes
        log.unlink(missing_ok=True)  # this attempt's alone: its error lines are the ones shown
        # One work dir per module and patch set, at a stable path (the compile commands,
        # ccache and DWARF name the same files every time), so a stock and a patched
        # build of one module can run side by side.
        slot = hash_parts([(p.name, p.read_bytes()) for p in patches])[:8] if patches else "plain"
        with contextlib.ExitStack() as locks:
            locks.enter_context(cache.lock("work", f"modules-{module}-{slot}"))
            if base.meta.get("base_patches"):  # the source tree is the shared work tree: hold it
                locks.enter_context(cache.lock("work", "linux"))
            root = cache.dir("work", "modules", module, slot)
            dest = root / rel
            dest.mkdir(parents=True, exist_ok=True)
            # --delete also drops the last build's objects: kbuild's mtimes cannot then take a file
            # restored from a patched one for up to date; ccache makes the recompile cheap.
            run_checked(["rsync", "-a", "--delete", f"{origin / rel}/", f"{dest}/"], what=f"staging {rel}")
            for p in patches:
                run_checked(["patch", "-p1", "--forward", "-d", str(root), "-i", str(p), "--no-backup-if-mismatch",
                             "-s"], what=f"applying {p.name} to {rel} (does it still apply?)")
            build_dir = prepared_build_dir(base, cache)
            srctree = _srctree(base, origin, cache)
            env = make_env(cache, srctree)
            cc = ["CC=ccache gcc"] if shutil.which("ccache") else []
            try:
                run_logged(["make", "-C", str(srctree), f"O={build_dir}", f"M={dest}", f"-j{make_jobs()}", *cc,
                            "modules"], log, what=f"{module}.ko build", env=env, timeout=1800)
            except BuildError as e:  # the compiler's file names, as the user's tree has them
                raise BuildError(e.what, e.log_path, in_directory(e.error_lines, origin / rel)) from e
            ko = dest / f"{module}.ko"
            if not ko.is_file():
                raise HarnessError(f"building {rel} made no {module}.ko (see {log})")
            shutil.copy2(ko, out / ko.name)
            shutil.copy2(log, out / "build.log")
            shutil.copytree(dest, out / "src" / rel, ignore=KEPT_IGNORE)
        return {"key": key, "module": module, "dir": rel, "base_key": base.path.name,
                "patches": [p.name for p in patches], "build_seconds": round(time.monotonic() - started, 1),
                "reproduce": f"make -C {srctree} O={build_dir} M={dest} modules"}

    return cache.get_or_build("modules", key, build)


def prepared_build_dir(base: Artifact, cache: Cache) -> Path:
    """The base's build dir, as configured and built (what an external module builds
    against). A cache that lost it gets it back: the base's .config, olddefconfig,
    modules_prepare and the base's Module.symvers."""
    build_dir = Path(base.meta["build_dir"])
    config = base.file("config").read_text()
    if (build_dir / ".config").is_file() and (build_dir / ".config").read_text() == config \
            and (build_dir / "Module.symvers").is_file():
        return build_dir
    build_dir = cache.dir("build", f"modules-{base.path.name}")
    if (build_dir / ".prepared").is_file():
        return build_dir
    origin = Path(base.meta["source_origin"])
    srctree = _srctree(base, origin, cache)
    (build_dir / ".config").write_text(config)
    log = build_dir / "prepare.log"
    env = make_env(cache, srctree)
    make = ["make", "-C", str(srctree), f"O={build_dir}", "-s"]
    run_logged([*make, "olddefconfig"], log, what="module build dir olddefconfig", env=env)
    run_logged([*make, f"-j{make_jobs()}", "modules_prepare"], log, what="module build dir modules_prepare", env=env)
    shutil.copy2(base.file("Module.symvers"), build_dir / "Module.symvers")
    (build_dir / ".prepared").write_text("")
    return build_dir


def _srctree(base: Artifact, origin: Path, cache: Cache) -> Path:
    """The source tree the base was built from: its origin itself, or, when the base
    carries patches of its own, the work tree staged with them (the caller holds
    the work tree's lock)."""
    if not base.meta.get("base_patches"):
        return origin
    return stage_work_tree(origin, [Path(p) for p in base.meta["base_patch_paths"]], cache)
