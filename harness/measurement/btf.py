"""Struct sizes from the running kernel's BTF (/sys/kernel/btf/vmlinux)."""

from __future__ import annotations

import re

from harness.errors import GuestError
from harness.guest.vm import Guest

STRUCT_LINE = re.compile(r"^\[\d+\] STRUCT '(\w+)' size=(\d+)")


def parse_struct_sizes(text: str) -> dict[str, int]:
    """`bpftool btf dump ... format raw` lines -> {struct name: size} (first definition wins)."""
    sizes: dict[str, int] = {}
    for line in text.splitlines():
        if m := STRUCT_LINE.match(line):
            sizes.setdefault(m.group(1), int(m.group(2)))
    return sizes


def struct_sizes(guest: Guest, names: list[str]) -> dict[str, int]:
    pattern = "|".join(names)
    res = guest.run(f"bpftool btf dump file /sys/kernel/btf/vmlinux format raw | "
                    f"grep -E \"^\\[[0-9]+\\] STRUCT '({pattern})' size=\"", check=False)
    sizes = parse_struct_sizes(res.stdout)
    missing = [n for n in names if n not in sizes]
    if missing:
        raise GuestError(f"struct sizes not in the kernel's BTF: {missing} "
                         "(the kernel needs CONFIG_DEBUG_INFO_BTF: fragment 'observe')")
    return sizes
