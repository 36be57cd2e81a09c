"""The header of a breaker patch (tests/breakers/README.md)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

BREAKERS_DIR = Path(__file__).resolve().parent / "breakers"


@dataclass(frozen=True)
class Breaker:
    path: Path
    claim: str
    must_fail: tuple[str, ...]
    verdict: str
    why: str
    needs: str = ""  # a source file older kernels lack (`Needs:`): the breaker is skipped there

    @property
    def name(self) -> str:
        return self.path.stem


def read_breaker(path: Path) -> Breaker:
    fields: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.startswith("--- "):
            break
        key, sep, value = line.partition(":")
        if sep and key in ("Breaks", "Must-fail", "Verdict", "Why", "Needs"):
            fields[key] = value.strip()
    missing = [k for k in ("Breaks", "Must-fail", "Verdict", "Why") if k not in fields]
    if missing:
        raise ValueError(f"{path.name}: header lacks {', '.join(missing)} (see tests/breakers/README.md)")
    return Breaker(path, fields["Breaks"], tuple(fields["Must-fail"].split()), fields["Verdict"], fields["Why"],
                   fields.get("Needs", ""))


def all_breakers() -> list[Breaker]:
    return [read_breaker(p) for p in sorted(BREAKERS_DIR.glob("*.patch"))]
