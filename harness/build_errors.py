"""The error messages of a failed build, found in its log as messages of the tools
that print them (the compiler, the assembler, the linker, modpost, Kconfig, the
shell that could not find a tool, make), never as substrings of other lines: a
progress line `CC tools/objtool/str_error_r.o` names a file, it reports nothing.

The first message comes first, with the compiler's `In function` line before it and
its source and caret lines after it; make's `*** ... Error N` lines, which only say
that something below failed, come last."""

from __future__ import annotations

import re
from pathlib import Path

# A message that says what went wrong, by the tool that printed it.
MESSAGES = [
    # gcc/clang: drivers/net/ethernet/intel/igb/igb_main.c:8912:9: error: expected ';' before 'return'
    re.compile(r"^[^\s:][^:]*:\d+(?::\d+)?: (?:fatal )?error: "),
    # gas: /tmp/ccX.s:12: Error: no such instruction
    re.compile(r"^[^\s:][^:]*:\d+: Error: "),
    # ld (any target's): vmlinux.o: in function `f': ... undefined reference to `g'
    re.compile(r"undefined reference to |multiple definition of |^(?:\S*-)?ld(?:\.\w+)?: (?!warning)"),
    # modpost: ERROR: modpost: "g" [drivers/net/ethernet/intel/igb/igb.ko] undefined!
    re.compile(r"^ERROR: modpost: "),
    # Kconfig: drivers/net/Kconfig:12: syntax error / invalid statement / unknown option
    re.compile(r"^\S*Kconfig[^:\s]*:\d+: (?!warning)"),
    re.compile(r"^\*\*\* Error during (?:update|writing) of the configuration"),
    # a tool the build runs that the host lacks
    re.compile(r"^(?:/bin/)?(?:ba|da)?sh: (?:\d+: )?[\w./+-]+: (?:command )?not found$"),
    re.compile(r"^make(?:\[\d+\])?: [\w./+-]+: No such file or directory$"),
    # a message of its own at the start of the line (resolve_btfids, objtool, scripts)
    re.compile(r"^(?:error|fatal error|FATAL|ERROR): "),
]
# make's summary of a failed recipe: shown after the messages, never before.
MAKE_FAILED = re.compile(r"^make(?:\[\d+\])?: \*\*\* .*(?:Error \d+|Stop\.)")
IN_FUNCTION = re.compile(r"^[^\s:][^:]*: In (?:function|member function|constructor) ")
CONTEXT_LINES = 3  # gcc's source line and caret (and a note) after its message


def error_lines(text: str, limit: int = 12) -> list[str]:
    """The build's own words for what failed: its messages in the order printed (the
    first with its `In function` line and the lines after it), then make's failed
    recipes; the log's last lines when it holds no message at all."""
    lines = text.splitlines()
    hits = [i for i, line in enumerate(lines) if any(p.search(line) for p in MESSAGES)]
    made = [line for line in lines if MAKE_FAILED.search(line)]
    if not hits:
        return made[:limit] if made else lines[-limit:]
    first = hits[0]
    start = first - 1 if first and IN_FUNCTION.search(lines[first - 1]) else first
    out = lines[start:first + 1]
    for line in lines[first + 1:first + 1 + CONTEXT_LINES]:
        if any(p.search(line) for p in MESSAGES) or MAKE_FAILED.search(line):
            break
        out.append(line)
    for i in hits[1:]:
        if lines[i] not in out:
            out.append(lines[i])
    return out[:limit - len(made[:1])] + made[:1]


def log_error_lines(log_path: Path, limit: int = 12) -> list[str]:
    try:
        return error_lines(log_path.read_text(errors="replace"), limit)
    except OSError as e:
        return [f"(the build log {log_path} could not be read: {e.strerror})"]


# A file named bare by the compiler (an external-module build compiles in its own copy
# of the driver's directory): `igb_main.c:8552:9: error: ...`, `igb_main.c: In function`.
BARE_FILE = re.compile(r"^([\w.+-]+\.(?:c|h|S)):")


def in_directory(lines: list[str], directory: Path) -> list[str]:
    """`lines` with the files the compiler named bare given as `directory`'s files
    (the user's tree, not the build's staging copy), where `directory` has them."""
    def locate(line: str) -> str:
        m = BARE_FILE.match(line)
        return f"{directory / m.group(1)}{line[len(m.group(1)):]}" if m and (directory / m.group(1)).is_file() \
            else line
    return [locate(line) for line in lines]
