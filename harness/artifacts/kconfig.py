"""Kernel config fragments: parse them, and check that every option a fragment
asks for survived `olddefconfig` (Kconfig silently drops options whose
dependencies are unmet or that do not exist in this kernel)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from harness.errors import ConfigFragmentError

# `CONFIG_NAME=value`, optionally followed by `# if present` (an option some kernels
# lack: left out where the Kconfig has no such symbol, checked where it has).
SET_RE = re.compile(r'^(CONFIG_[A-Za-z0-9_]+)=("[^"]*"|\S*)\s*(?:#\s*(.*))?$')
IF_PRESENT = "if present"
UNSET_RE = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")


@dataclass(frozen=True)
class Option:
    name: str  # CONFIG_FOO
    value: str  # y, m, a number, a quoted string, or "n" for "is not set"
    fragment: str
    line: int
    optional: bool = False  # `# if present`: a kernel without the symbol leaves it out


@dataclass(frozen=True)
class Fragment:
    name: str
    path: Path
    options: tuple[Option, ...]

    @property
    def text(self) -> str:
        return self.path.read_text()


def parse_config_text(text: str, source: str) -> list[Option]:
    """Parse .config / fragment syntax; a line that is neither an option, an
    `is not set` marker, a comment nor blank raises with file and line."""
    options = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if m := SET_RE.match(line):
            options.append(Option(m.group(1), m.group(2), source, lineno, (m.group(3) or "").strip() == IF_PRESENT))
        elif m := UNSET_RE.match(line):
            options.append(Option(m.group(1), "n", source, lineno))
        elif line and not line.startswith("#"):
            raise ConfigFragmentError(
                f"{source}:{lineno}: not a config line: {raw!r} "
                "(expected CONFIG_NAME=value or '# CONFIG_NAME is not set')"
            )
    return options


def load_fragment(path: Path) -> Fragment:
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigFragmentError(f"cannot read config fragment {path}: {e.strerror}") from e
    return Fragment(path.stem, path, tuple(parse_config_text(text, path.name)))


def resolve_fragments(names: list[str], configs_dir: Path) -> list[Fragment]:
    """Fragments by name (`observe` -> kernel-configs/observe.config) or by path."""
    if not configs_dir.is_dir():
        raise ConfigFragmentError(f"no config fragments at {configs_dir}: the harness runs from its source tree "
                                  "(pip install -e <checkout>), where kernel-configs/ lives beside harness/")
    out = []
    for name in names:
        path = Path(name) if ("/" in name or name.endswith(".config")) else configs_dir / f"{name}.config"
        if not path.is_file():
            known = ", ".join(sorted(p.stem for p in configs_dir.glob("*.config")))
            raise ConfigFragmentError(f"unknown config fragment '{name}' (no {path}); known: {known}")
        out.append(load_fragment(path))
    return out


def final_values(config_text: str) -> dict[str, str]:
    return {o.name: o.value for o in parse_config_text(config_text, ".config")}


# Options renamed with their meaning kept, old -> new: a fragment written for one
# kernel still configures the next (the newer name is used when only it exists).
RENAMED = {
    "CONFIG_PROC_SYSCTL": "CONFIG_SYSCTL",  # /proc/sys: fs/proc/Kconfig's SYSCTL in 7.x
}
SYMBOL = re.compile(r"^\s*(?:menu)?config\s+(\w+)\s*$", re.M)


def kconfig_symbols(source_dir: Path) -> set[str]:
    """Every symbol the tree's Kconfig files declare, as CONFIG_NAME."""
    out: set[str] = set()
    for kconfig in source_dir.rglob("Kconfig*"):
        try:
            out |= {f"CONFIG_{m}" for m in SYMBOL.findall(kconfig.read_text(errors="replace"))}
        except OSError:
            continue
    return out


def adapt_fragments(fragments: list[Fragment], source_dir: Path, out_dir: Path) -> tuple[list[Fragment], list[str]]:
    """The fragments as this tree can take them: an option this Kconfig lacks, renamed
    (RENAMED) to one it has, is written under the new name; an optional one
    (`# if present`) it lacks is left out; trailing comments go (Kconfig would read
    them as part of the value). Changed fragments are copies under `out_dir`.
    Returns the fragments to merge and a line per option adapted."""
    marked = any(o.optional for f in fragments for o in f.options)
    wanted = {o.name for f in fragments for o in f.options}
    if not marked and not wanted & set(RENAMED):
        return fragments, []
    symbols = kconfig_symbols(source_dir)
    out, notes = [], []
    for frag in fragments:
        lines = frag.text.splitlines()
        for opt in frag.options:
            new = RENAMED.get(opt.name)
            if new and opt.name not in symbols and new in symbols:
                lines[opt.line - 1] = re.sub(rf"\b{opt.name}\b", new, lines[opt.line - 1])
                notes.append(f"{opt.name} ({frag.name}.config line {opt.line}) is {new} in this kernel: using that")
            elif opt.optional and opt.name not in symbols:
                lines[opt.line - 1] = f"# {opt.name}: not in this kernel's Kconfig (optional)"
                notes.append(f"{opt.name} ({frag.name}.config line {opt.line}) is not in this kernel: left out "
                             "(optional)")
            elif opt.optional:
                lines[opt.line - 1] = f"{opt.name}={opt.value}"
        text = "\n".join(lines) + "\n"
        if text == frag.text:
            out.append(frag)
            continue
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{frag.name}.config"
        path.write_text(text)
        out.append(load_fragment(path))
    return out, notes


def kconfig_symbol_exists(source_dir: Path, option: str) -> bool:
    """Whether any Kconfig file of the tree declares the symbol."""
    sym = option.removeprefix("CONFIG_")
    pattern = re.compile(rf"^\s*(menu)?config\s+{re.escape(sym)}\s*$", re.M)
    for kconfig in source_dir.rglob("Kconfig*"):
        try:
            if pattern.search(kconfig.read_text(errors="replace")):
                return True
        except OSError:
            continue
    return False


def dropped_options(config_text: str, fragments: list[Fragment]) -> list[tuple[Option, str]]:
    """(option asked for, value it ended up with) for every option that did not survive.
    Later fragments override earlier ones, as merge_config.sh does."""
    final = final_values(config_text)
    wanted: dict[str, Option] = {}
    for frag in fragments:
        for opt in frag.options:
            wanted[opt.name] = opt
    bad = []
    for opt in wanted.values():
        got = final.get(opt.name, "n")
        if got != opt.value:
            bad.append((opt, got))
    return bad


def check_fragments(config_text: str, fragments: list[Fragment], source_dir: Path | None) -> None:
    bad = dropped_options(config_text, fragments)
    if not bad:
        return
    lines = []
    for opt, got in bad:
        why = "its dependencies are unmet or it is chosen by another option"
        if source_dir is not None and not kconfig_symbol_exists(source_dir, opt.name):
            why = "no such option in this kernel's Kconfig"
        shown = "not set" if got == "n" else got
        lines.append(
            f"  {opt.name}={opt.value} (fragment {opt.fragment} line {opt.line}) ended up {shown}: {why}"
        )
    raise ConfigFragmentError(
        "kernel config: options asked for by a fragment did not survive olddefconfig:\n" + "\n".join(lines)
    )
