"""What each Kconfig option costs a cold build, in objects compiled: every `CC`
line of a kernel's build log attributed to the innermost option that brings the
object in, read from kbuild's own Makefiles.

kbuild builds `dir/name.o` when the directory's Kbuild (or Makefile) lists it in
`obj-$(CONFIG_X)` (or in a composite object's `foo-$(CONFIG_X)` / `foo-y` /
`foo-objs`, then as foo.o does), possibly inside an `ifdef CONFIG_X` /
`ifeq ($(CONFIG_X),y)` block; with `obj-y` it is built whenever its directory
is, and the directory is brought in by its parent's `obj-$(CONFIG_Y) += dir/`.
The innermost CONFIG_ symbol on that chain is the option whose removal drops the
object; none (core-y directories, `obj-y` all the way up) is "always built".
Simplifications, said where they matter: a `$(...)` other than CONFIG_ in an item
is not expanded, and an object no Makefile names is charged to its directory."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from functools import cache
from pathlib import Path

CC_LINE = re.compile(r"^\s+CC(?: \[M\])?\s+(\S+\.[os])\s*$")  # .s: asm-offsets and bounds
RULE = re.compile(r"^([\w.-]+?)-(\$\((CONFIG_\w+)\)|y|objs|m)\s*[:+]?=\s*(.*)$")
IF_CONFIG = re.compile(r"^(?:ifdef\s+(CONFIG_\w+)|ifn?eq\s*\(\s*\$\((CONFIG_\w+)\)\s*,)")
ALWAYS = "(always built)"
# Objects the build compiles for itself, not for the kernel: host tools (objtool,
# resolve_btfids), whatever an option says.
TOOLS = ("tools/", "scripts/")


def compiled_objects(build_log: str, build_dir: str | None = None) -> list[str]:
    """The objects of a build log's `CC` lines, relative to the build directory."""
    out = []
    for line in build_log.splitlines():
        if m := CC_LINE.match(line):
            path = m.group(1)
            if build_dir and path.startswith(build_dir.rstrip("/") + "/"):
                path = path[len(build_dir.rstrip("/")) + 1:]
            out.append(path)
    return out


@dataclass(frozen=True)
class Rule:
    owner: str  # "obj", "lib", ... or a composite object's name
    option: str | None  # CONFIG_X of the rule or of the ifdef around it; None: -y / -objs
    items: tuple[str, ...]


def parse_rules(text: str) -> list[Rule]:
    """A Kbuild file's obj-/lib-/composite assignments, continuation lines joined,
    each with the option it depends on (its own, else the innermost ifdef's)."""
    rules, guards = [], []
    for line in re.sub(r"\\\n", " ", text).splitlines():
        line = line.split("#", 1)[0].strip()
        if m := IF_CONFIG.match(line):
            guards.append(m.group(1) or m.group(2))
        elif line.startswith(("ifdef", "ifndef", "ifeq", "ifneq")):
            guards.append(None)
        elif line.startswith("else") and guards:
            guards[-1] = None
        elif line.startswith("endif") and guards:
            guards.pop()
        elif m := RULE.match(line):
            guard = next((g for g in reversed(guards) if g), None)
            rules.append(Rule(m.group(1), m.group(3) or guard, tuple(m.group(4).split())))
    return rules


class Attribution:
    """Objects of one source tree to the options that bring them in."""

    def __init__(self, source: Path) -> None:
        self.source = source

    @cache  # noqa: B019 - one Attribution per tree, alive for one report
    def rules(self, directory: str) -> tuple[Rule, ...]:
        for name in ("Kbuild", "Makefile"):
            f = self.source / directory / name
            if f.is_file():
                return tuple(parse_rules(f.read_text(errors="replace")))
        return ()

    @cache  # noqa: B019
    def option_of(self, directory: str, item: str) -> str | None:
        """The innermost option `item` (name.o or sub/) of `directory` is built for."""
        for rule in self.rules(directory):
            if item not in rule.items:
                continue
            if rule.option:
                return rule.option
            if rule.owner not in ("obj", "lib", "always", "targets", "subdir", "core", "drivers", "libs"):
                return self.option_of(directory, f"{rule.owner}.o")  # a part of a composite object
            break
        return self.option_of_directory(directory)

    def option_of_directory(self, directory: str) -> str | None:
        if "/" not in directory:
            return None  # a top-level directory: the top Makefile's core-y, drivers-y, ...
        parent, _, name = directory.rpartition("/")
        return self.option_of(parent, f"{name}/")

    def option(self, obj: str) -> str:
        if obj.startswith(TOOLS):
            return "(host tools)"
        directory, _, name = obj.rpartition("/")
        return self.option_of(directory, name) or ALWAYS


def cost_by_option(source: Path, objects: list[str]) -> dict[str, list[str]]:
    """Option -> the objects it brings in, most objects first."""
    attribution = Attribution(source)
    by: dict[str, list[str]] = {}
    for obj in objects:
        by.setdefault(attribution.option(obj), []).append(obj)
    return dict(sorted(by.items(), key=lambda kv: -len(kv[1])))


def render(by: dict[str, list[str]], total: int, top: int = 40) -> str:
    lines = [f"{total} objects compiled; by the innermost Kconfig option that brings each in:", "",
             "| option | objects | share | where (objects per directory) |", "|---|---:|---:|---|"]
    for option, objs in list(by.items())[:top]:
        dirs = Counter(o.rpartition("/")[0] for o in objs).most_common(3)
        lines.append(f"| {option} | {len(objs)} | {len(objs) / total:.1%} | "
                     f"{', '.join(f'{d} {n}' for d, n in dirs)} |")
    rest = list(by.items())[top:]
    if rest:
        lines.append(f"| {len(rest)} more options | {sum(len(o) for _, o in rest)} | | |")
    return "\n".join(lines) + "\n"
