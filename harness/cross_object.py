"""igb's rx code compiled for another architecture (arm64), from the sources a
kernel under test was built from: where dma_rmb()/dma_wmb() are real barrier
instructions, the disassembly shows which ones.

Only igb_main.o is compiled, as an external module object against a cross build
dir prepared once per source tree and config (`make modules_prepare`), so the
igb sources can be the kernel's own (patches included) without staging a tree."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .cache import Cache, hash_parts
from .errors import HarnessError, MissingToolError
from .hostcmd import require_tool, run_checked, run_logged
from .kbuild import KERNEL_KCFLAGS, configure, make_env, make_jobs
from .kconfig import Fragment, resolve_fragments
from .kernel import Kernel
from .paths import CONFIGS_DIR

IGB_DIR = "drivers/net/ethernet/intel/igb"
PREPARED_MARK = ".harness-modules-prepared"
OBJECT = "igb_main.o"


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
# igb as a module (an external-module object needs CONFIG_MODULES); the rest of
# the kernel's own fragments is merged first, so igb's options match its x86 build.
MODULE_FRAGMENT = "CONFIG_MODULES=y\nCONFIG_PCI=y\nCONFIG_NET_VENDOR_INTEL=y\nCONFIG_IGB=m\n"


def require_cross(name: str) -> CrossArch:
    if name not in CROSS_ARCHES:
        raise HarnessError(f"no cross build for {name!r}: unknown architecture (known: {', '.join(CROSS_ARCHES)})")
    cross = CROSS_ARCHES[name]
    for tool in (cross.gcc, cross.objdump):
        if not shutil.which(tool):
            raise MissingToolError(tool, cross.package, f"to compile igb for {name}")
    return cross


def cross_igb_object(kernel: Kernel, cross: CrossArch, cache: Cache) -> Path:
    """igb_main.o for `cross.arch`, compiled from `kernel`'s igb sources (cached by
    their content: a variant with the same igb sources shares the object)."""
    origin = kernel.meta.get("source_origin")
    if not origin or not (Path(origin) / "Makefile").is_file():
        raise HarnessError("a cross build needs the kernel's source tree (a self-built kernel)")
    igb_src = kernel.source_file(f"{IGB_DIR}/igb_main.c").parent
    fragments = resolve_fragments(list(kernel.meta.get("fragments", [])), CONFIGS_DIR)
    prepared_key = hash_parts([("origin", origin), ("arch", cross.arch), ("kcflags", KERNEL_KCFLAGS),
                               ("module", MODULE_FRAGMENT)] + [(f.name, f.text) for f in fragments])
    compiler = _cross_compiler_id(cross)
    object_key = hash_parts([("prepared", prepared_key), ("compiler", compiler)]
                            + [(p.name, p.read_bytes()) for p in sorted(igb_src.iterdir()) if p.is_file()])

    def build(out: Path) -> dict:
        build_dir = _prepared_build_dir(cross, Path(origin), fragments, prepared_key, cache)
        with tempfile.TemporaryDirectory(prefix=f"harness-{cross.arch}-igb-") as tmp:
            # Under the tree's own path, so DWARF names the file as the x86 build does.
            module_dir = Path(tmp) / IGB_DIR
            shutil.copytree(igb_src, module_dir)
            run_logged([*_make(cross, Path(origin)), f"O={build_dir}", f"M={module_dir}", "igb_main.o"],
                       out / "build.log", what=f"{cross.arch} igb_main.o", env=make_env(cache, Path(origin)))
            shutil.copy2(module_dir / "igb_main.o", out / OBJECT)
        return {"arch": cross.arch, "compiler": compiler, "kernel": kernel.key}

    return cache.get_or_build(f"cross-{cross.arch}", object_key, build).file(OBJECT)


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
