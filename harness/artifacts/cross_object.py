"""A NIC driver's rx code compiled for another architecture (arm64), from the
sources a kernel under test was built from: where dma_rmb()/dma_wmb() are real
barrier instructions, the disassembly shows which ones.

Only the driver's rx source file is compiled (igb_main.o for igb), as an
external module object against a cross build dir prepared once per source tree
and config (`make modules_prepare`), so the driver sources can be the kernel's
own (patches included) without staging a tree."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from harness.artifacts.kbuild import KERNEL_KCFLAGS, configure, make_env, make_jobs
from harness.artifacts.kconfig import Fragment, resolve_fragments
from harness.artifacts.kernel import Kernel
from harness.cache import Cache, hash_parts
from harness.errors import HarnessError, MissingToolError
from harness.hostcmd import require_tool, run_checked, run_logged
from harness.nics import NicModel
from harness.paths import CONFIGS_DIR

PREPARED_MARK = ".harness-modules-prepared"


@dataclass(frozen=True)
class CrossArch:
    arch: str  # kbuild ARCH
    prefix: str  # CROSS_COMPILE
    package: str  # Debian package with the compiler and binutils

    @property
    def gcc(self) -> str:
        return f"{self.prefix}gcc"

    @property
    def objdump(self) -> str:
        return f"{self.prefix}objdump"


CROSS_ARCHES = {"arm64": CrossArch("arm64", "aarch64-linux-gnu-", "gcc-aarch64-linux-gnu")}
# An external-module object needs CONFIG_MODULES; the kernel's own fragments are
# merged first, so the drivers' options match their x86 build. A prebuilt kernel
# has none: the base is tinyconfig, so the path down to the driver is spelled out.
MODULE_FRAGMENT = ("CONFIG_MODULES=y\nCONFIG_PCI=y\nCONFIG_NET=y\nCONFIG_NETDEVICES=y\nCONFIG_ETHERNET=y\n"
                   "CONFIG_NET_VENDOR_INTEL=y\nCONFIG_IGB=m\n"
                   # DWARF line info: which source line each barrier instruction comes from.
                   "CONFIG_DEBUG_KERNEL=y\nCONFIG_DEBUG_INFO_DWARF_TOOLCHAIN_DEFAULT=y\n")


def require_cross(name: str) -> CrossArch:
    if name not in CROSS_ARCHES:
        raise HarnessError(f"no cross build for {name!r}: unknown architecture (known: {', '.join(CROSS_ARCHES)})")
    cross = CROSS_ARCHES[name]
    for tool in (cross.gcc, cross.objdump):
        if not shutil.which(tool):
            raise MissingToolError(tool, cross.package, f"to compile igb for {name}")
    return cross


def cross_driver_object(kernel: Kernel, model: NicModel, cross: CrossArch, cache: Cache) -> Path:
    """The driver's rx source compiled for `cross.arch` from `kernel`'s sources (cached
    by their content: a variant with the same driver sources shares the object).
    The files of the driver's directory are copied (not its subdirectories: all of
    drivers/net is virtio-net's directory) and a Kbuild names the one object."""
    origin = kernel.meta.get("source_origin")
    if not origin or not (Path(origin) / "Makefile").is_file():
        raise HarnessError("a cross build needs the kernel's source tree (a self-built kernel)")
    src_dir = kernel.source_file(f"{model.source_dir}/{model.rx_source}").parent
    obj = Path(model.rx_source).with_suffix(".o").name
    fragments = resolve_fragments(list(kernel.meta.get("fragments", [])), CONFIGS_DIR)
    prepared_key = hash_parts([("origin", origin), ("arch", cross.arch), ("kcflags", KERNEL_KCFLAGS),
                               ("module", MODULE_FRAGMENT)] + [(f.name, f.text) for f in fragments])
    compiler = _cross_compiler_id(cross)
    files = sorted(p for p in src_dir.iterdir() if p.is_file() and p.suffix in (".c", ".h"))
    kbuild = f"obj-m := {obj}\nccflags-y += -I$(src)\n"
    object_key = hash_parts([("prepared", prepared_key), ("compiler", compiler), ("object", obj), ("kbuild", kbuild)]
                            + [(p.name, p.read_bytes()) for p in files])

    def build(out: Path) -> dict:
        build_dir = _prepared_build_dir(cross, Path(origin), fragments, prepared_key, cache)
        with tempfile.TemporaryDirectory(prefix=f"harness-{cross.arch}-{model.module or model.driver}-") as tmp:
            # Under the tree's own path, so DWARF names the file as the x86 build does.
            module_dir = Path(tmp) / model.source_dir
            module_dir.mkdir(parents=True)
            for f in files:
                shutil.copy2(f, module_dir / f.name)
            # -I$(src): trace headers (e1000e_trace.h) are included from the driver's own directory.
            (module_dir / "Kbuild").write_text(kbuild)
            # The log outside the artifact's temp dir, which a failed build deletes.
            log = cache.dir("logs") / f"cross-{cross.arch}-{obj}-{object_key}.log"
            run_logged([*_make(cross, Path(origin)), f"O={build_dir}", f"M={module_dir}", obj],
                       log, what=f"{cross.arch} {obj}", env=make_env(cache, Path(origin)))
            shutil.copy2(log, out / "build.log")
            shutil.copy2(module_dir / obj, out / obj)
        return {"arch": cross.arch, "compiler": compiler, "kernel": kernel.key, "object": obj}

    return cache.get_or_build(f"cross-{cross.arch}", object_key, build).file(obj)


def _make(cross: CrossArch, src: Path) -> list[str]:
    return ["make", "-C", str(src), f"ARCH={cross.arch}", f"CROSS_COMPILE={cross.prefix}"]


def _cross_compiler_id(cross: CrossArch) -> str:
    return run_checked([cross.gcc, "--version"]).splitlines()[0]


def _prepared_build_dir(cross: CrossArch, src: Path, fragments: list[Fragment], key: str, cache: Cache) -> Path:
    """A cross build dir with the kernel's fragments (igb as a module) after
    `make modules_prepare`: what an external-module object compiles against."""
    with cache.lock("cross", key):
        build_dir = cache.dir("cross", key)
        if (build_dir / PREPARED_MARK).is_file():
            return build_dir
        require_tool("make", "needed to build a kernel")
        make, env, log = _make(cross, src), make_env(cache, src), build_dir / "build.log"
        module_fragment = build_dir / "igb-module.config"
        module_fragment.write_text(MODULE_FRAGMENT)
        config = configure([*make, f"O={build_dir}", "-s"], src, build_dir,
                           [*[f.path for f in fragments], module_fragment], log, env, label=cross.arch)
        if "CONFIG_IGB=m" not in config.splitlines():
            raise HarnessError(f"the {cross.arch} config has no CONFIG_IGB=m (see {build_dir / '.config'})")
        run_logged([*make, f"O={build_dir}", f"-j{make_jobs()}", "modules_prepare"], log,
                   what=f"{cross.arch} modules_prepare", env=env)
        (build_dir / PREPARED_MARK).write_text("")
        return build_dir


def disassemble(obj: Path, cross: CrossArch) -> str:
    """`objdump -dl` of the whole object: which functions are inlined differs
    between architectures, the DWARF lines say where each instruction comes from."""
    return run_checked([cross.objdump, "-dl", "--no-show-raw-insn", str(obj)], what=f"{cross.arch} objdump of {obj}")
