"""kbuild as the harness runs it: the environment (ccache, reproducible build
stamps, KCFLAGS), the config step shared by every build, and progress."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

from harness.cache import Cache
from harness.hostcmd import run_logged

# DWARF without variable location lists (what CONFIG_DEBUG_INFO_REDUCED adds, which
# BTF excludes): types for BTF and line tables for the barriers claim stay, and
# -g never changes the generated code. Var-tracking is 5-20 % of each compile.
KERNEL_KCFLAGS = "-fno-var-tracking"


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


class KbuildProgress:
    """Counts kbuild's `  CC      path` lines: a build's progress in objects compiled,
    out of the count the last build of the same sources and config compiled (kept in
    the cache), with an ETA from the rate so far. A first build takes its total from
    the last build of the same kernel series and fragments (this cache's, else the
    counts recorded with the harness, KNOWN_TOTALS), shown as an estimate (≈)."""

    CC_LINE = re.compile(r"^\s+CC\s+(\S+)")
    TOTALS = "kbuild-objects.json"
    KNOWN_TOTALS = Path(__file__).with_name("kbuild_objects.json")

    def __init__(self, cache: Cache | None = None, key: str = "", family: str = "") -> None:
        self.compiled = 0
        self.current = ""
        self.started = time.monotonic()
        self._file = cache.dir("logs") / self.TOTALS if cache is not None and key else None
        self.key = key
        self.family = family  # "6.12|base,debug,...": builds whose counts are alike
        totals = self._totals()
        self.expected = totals.get(key) if self._file else None
        self.estimated = False
        if not self.expected and family:
            self.expected = totals.get(family) or _read_json(self.KNOWN_TOTALS).get(family)
            self.estimated = bool(self.expected)

    def _totals(self) -> dict[str, int]:
        return _read_json(self._file) if self._file else {}

    def update(self, line: str) -> str:
        if m := self.CC_LINE.match(line):
            self.compiled += 1
            self.current = m.group(1)
        if not self.expected:
            return f"{self.compiled} objects compiled ({self.current}; first build of this config: no total yet)"
        done = min(self.compiled / self.expected, 1.0)
        elapsed = time.monotonic() - self.started
        eta = f", ETA {elapsed * (1 - done) / done:.0f}s" if done > 0.02 else ""
        approx = "≈" if self.estimated else ""
        return f"{self.compiled}/{approx}{self.expected} objects ({done:.0%}{eta}; {self.current})"

    def finished(self) -> None:
        """Keep this build's count as the next one's total."""
        if self._file is None or not self.compiled:
            return
        totals = self._totals()
        # An incremental build (the build dir is reused) compiles fewer: keep the full count.
        totals[self.key] = max(self.compiled, totals.get(self.key, 0))
        if self.family:
            totals[self.family] = totals[self.key]
        tmp = self._file.with_suffix(".tmp")
        tmp.write_text(json.dumps(totals, indent=1, sort_keys=True))
        tmp.replace(self._file)


def _read_json(path: Path | None) -> dict[str, int]:
    try:
        return json.loads(path.read_text()) if path is not None and path.is_file() else {}
    except (OSError, ValueError):
        return {}


def build_family(src: Path, fragment_names: list[str]) -> str:
    """`6.12|base,debug,...`: the kernel series (from the tree's Makefile) and the
    fragments, which decide a build's object count within a few percent."""
    text = (src / "Makefile").read_text(errors="replace")[:2000]
    version = ".".join(m.group(1) for key in ("VERSION", "PATCHLEVEL")
                       if (m := re.search(rf"^{key} = (\d+)", text, re.M)))
    return f"{version}|{','.join(sorted(fragment_names))}"
