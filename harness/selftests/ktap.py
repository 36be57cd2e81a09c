"""KTAP (the kernel's test output format, Documentation/dev-tools/ktap.rst), in and
out: the kernel's own selftests print it (kselftest's Python library: version
line, plan, `ok N name`, `not ok N name`, `# SKIP reason` / `# XFAIL reason`
directives, `# ...` diagnostics, indented subtests, a `# Totals:` line), and
`harness run` writes its claims as KTAP so kselftest-style runners read them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

VERSION = re.compile(r"^(?:KTAP|TAP) version (\d+)")
PLAN = re.compile(r"^1\.\.(\d+)")
RESULT = re.compile(r"^(not )?ok (\d+)(?: -)?(?: ([^#]*?))?\s*(?:#\s*(.*))?$")
TOTALS = re.compile(r"^# Totals: (.*)$")
DIRECTIVES = ("SKIP", "XFAIL", "TODO")


@dataclass
class KtapResult:
    number: int
    name: str
    ok: bool
    directive: str = ""  # SKIP, XFAIL, TODO, or ""
    reason: str = ""  # the directive's text (or the comment after '#')
    diagnostics: list[str] = field(default_factory=list)  # the `# ...` lines printed before the result
    subtests: list[KtapResult] = field(default_factory=list)

    @property
    def status(self) -> str:
        """pass, fail, skip or xfail (as kselftest's totals count them)."""
        if self.directive == "SKIP":
            return "skip"
        if self.directive == "XFAIL":
            return "xfail"
        return "pass" if self.ok else "fail"

    def to_json(self) -> dict:
        return {"number": self.number, "name": self.name, "status": self.status, "reason": self.reason,
                "diagnostics": self.diagnostics, "subtests": [s.to_json() for s in self.subtests]}

    @classmethod
    def from_json(cls, d: dict) -> KtapResult:
        status = d["status"]
        return cls(d["number"], d["name"], status != "fail", {"skip": "SKIP", "xfail": "XFAIL"}.get(status, ""),
                   d.get("reason", ""), list(d.get("diagnostics", [])),
                   [cls.from_json(s) for s in d.get("subtests", [])])


@dataclass
class KtapDoc:
    version: int | None
    plan: int | None
    results: list[KtapResult]
    totals: dict[str, int] = field(default_factory=dict)
    trailing: list[str] = field(default_factory=list)  # diagnostics after the last result
    # What problems() found when the doc was parsed, for a doc read back from selftests.json
    # (no lines left to check); None: check the parsed lines.
    recorded_problems: list[str] | None = None

    def counts(self) -> dict[str, int]:
        out = {"pass": 0, "fail": 0, "skip": 0, "xfail": 0}
        for r in self.results:
            out[r.status] += 1
        return out

    def problems(self) -> list[str]:
        """What does not add up: a missing version or plan, a plan that does not match
        the results, totals that disagree with them."""
        if self.recorded_problems is not None:
            return list(self.recorded_problems)
        out = []
        if self.version is None:
            out.append("no KTAP version line")
        if self.plan is None:
            out.append("no plan (1..N)")
        elif self.plan != len(self.results):
            out.append(f"plan 1..{self.plan} but {len(self.results)} results (the test stopped early?)")
        if self.totals:
            counts = self.counts()
            said = {**self.totals, "fail": self.totals.get("fail", 0) + self.totals.get("error", 0)}  # both `not ok`
            wrong = {k: (v, counts.get(k, 0)) for k, v in said.items() if k in counts and v != counts[k]}
            if wrong:
                out.append("totals disagree with the results: " + ", ".join(
                    f"{k} {said} said, {seen} seen" for k, (said, seen) in wrong.items()))
        return out


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def parse_ktap(text: str) -> KtapDoc:
    """A KTAP document; lines at deeper indentation before a result are its subtests.
    Lines that are not KTAP (a test's stray output) are kept as diagnostics."""
    lines = [line.rstrip("\n") for line in text.splitlines()]
    doc, _ = _parse(lines, 0, 0)
    return doc


def _parse(lines: list[str], start: int, indent: int) -> tuple[KtapDoc, int]:
    doc = KtapDoc(None, None, [])
    pending: list[str] = []
    sub: KtapDoc | None = None
    i = start
    while i < len(lines):
        raw = lines[i]
        if not raw.strip():
            i += 1
            continue
        depth = _indent(raw)
        if depth < indent:
            break
        if depth > indent:
            sub, i = _parse(lines, i, depth)
            continue
        line = raw.strip()
        if m := VERSION.match(line):
            if doc.version is not None or doc.results:
                break  # the next document
            doc.version = int(m.group(1))
        elif m := PLAN.match(line):
            doc.plan = int(m.group(1))
        elif m := TOTALS.match(line):
            doc.totals = {k: int(v) for k, v in re.findall(r"(\w+):(\d+)", m.group(1))}
        elif m := RESULT.match(line):
            comment = (m.group(4) or "").strip()
            directive, reason = "", comment
            word = comment.split(" ", 1)[0].upper() if comment else ""
            if word in DIRECTIVES:
                directive, reason = word, comment[len(word):].strip()
            doc.results.append(KtapResult(int(m.group(2)), (m.group(3) or "").strip(), m.group(1) is None,
                                          directive, reason, pending, sub.results if sub else []))
            pending, sub = [], None
        else:
            pending.append(line.removeprefix("#").strip() if line.startswith("#") else line)
        i += 1
    doc.trailing = pending
    return doc, i


def claims_ktap(claims: list[dict]) -> str:
    """`harness run`'s claims (results.json records) as one KTAP document: a test per
    claim; refuted and error are `not ok` (error says so in a diagnostic), inconclusive
    is `ok ... # SKIP` with its reason; the checks and explanation as diagnostics."""
    out = ["KTAP version 1", f"1..{len(claims)}"]
    totals = {"pass": 0, "fail": 0, "xfail": 0, "xpass": 0, "skip": 0, "error": 0}
    for n, c in enumerate(claims, 1):
        for ch in c["checks"]:
            state = {True: "holds", False: "FAILS", None: "not measured"}[ch["holds"]]
            out.append(_diag(f"{ch['rule']}: {ch['value']} ({state})"))
        for e in c.get("errors", []):
            out.append(_diag(f"error: {e['headline']}"))
        verdict = c["verdict"]
        if verdict == "confirmed":
            out.append(f"ok {n} {c['id']}")
            totals["pass"] += 1
        elif verdict == "inconclusive":
            why = "; ".join(ch.get("unmeasured", "") for ch in c["checks"] if ch["holds"] is None and
                            ch.get("unmeasured")) or "; ".join(c.get("notes", [])) or "not every check was measured"
            out.append(f"ok {n} {c['id']} # SKIP inconclusive: {_one_line(why)}")
            totals["skip"] += 1
        else:
            out.append(f"not ok {n} {c['id']}")
            totals["error" if verdict == "error" else "fail"] += 1
    out.append("# Totals: " + " ".join(f"{k}:{v}" for k, v in totals.items()))
    return "\n".join(out) + "\n"


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split()).replace("#", "")
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _diag(text: str) -> str:
    return "# " + _one_line(text, 400)
