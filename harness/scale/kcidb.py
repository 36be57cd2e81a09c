"""`harness kcidb OUT --origin NAME`: a run's outputs in KernelCI's KCIDB format.

One checkout per kernel source (the Debian source package or the distro kernel
the harness took), one build per kernel build (its cache key: the same key in two
shards is one build), and tests under the path `net_rx`:
  net_rx.claims.<claim>            the claim's verdict
  net_rx.claims.<claim>.<check>    each check of it (PASS / FAIL, or MISS when the
                                   check had no measurement, ERROR when its claim erred)
  net_rx.survey.<nic>.<technique>  each survey cell (DONE with the value; PASS / FAIL
                                   for the cells that are verdicts; ERROR when its
                                   experiment failed, else SKIP, with the reason)
  net_rx.selftests.<nic>.<file>[.<case>]  the kernel's own selftests, file and case
The evidence travels in `misc` (the rule, the value, how it was measured) and as
output files (the report, results.json, the KTAP), by URL: `--artifacts-url` where
the CI keeps them, else `file:` URLs of this machine.

The document is validated with KernelCI's own schema (kcidb-io) before it is
written. Submitting it needs KernelCI credentials: `kcidb-submit` (the `kcidb`
package) reads it on stdin; the harness does not submit."""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from harness.errors import HarnessError
from harness.scale.plan import RECORDS

# KCIDB test statuses (schema v5).
PASS, FAIL, ERROR, MISS, DONE, SKIP = "PASS", "FAIL", "ERROR", "MISS", "DONE", "SKIP"
# A claim's verdict as a test status: a refuted claim is the kernel's failure; an error
# is the test's (it did not complete); unmeasured / inconclusive ran without a result.
VERDICT_STATUS = {"confirmed": PASS, "refuted": FAIL, "error": ERROR, "unmeasured": MISS, "inconclusive": MISS}
# A KTAP case's status: an expected failure is the behaviour the test expects.
CASE_STATUS = {"pass": PASS, "fail": FAIL, "skip": SKIP, "xfail": PASS}
ROOT = "net_rx"
ORIGIN_RE = re.compile(r"^[a-z0-9_]+$")


def path_part(s: str) -> str:
    """A test path component: KCIDB allows [a-zA-Z0-9_-] between the dots."""
    return re.sub(r"[^a-zA-Z0-9_-]+", "_", s).strip("_") or "_"


@dataclass
class Kcidb:
    origin: str
    artifacts_url: str | None  # where the CI keeps the out directory (None: file: URLs)
    base: Path  # the out directory the URLs are relative to
    checkouts: dict[str, dict] = field(default_factory=dict)
    builds: dict[str, dict] = field(default_factory=dict)
    tests: list[dict] = field(default_factory=list)

    def id(self, *parts: str) -> str:
        return f"{self.origin}:" + ":".join(parts)

    def url(self, file: Path) -> str:
        if self.artifacts_url:
            return self.artifacts_url.rstrip("/") + "/" + file.resolve().relative_to(self.base.resolve()).as_posix()
        return file.resolve().as_uri()

    def files(self, *paths: Path) -> list[dict]:
        """Output files that exist, named by their path under the out directory (KCIDB
        names carry no slash)."""
        return [{"name": path_part(p.resolve().relative_to(self.base.resolve()).as_posix().replace("/", "__")),
                 "url": self.url(p)} for p in paths if p.is_file()]

    def build_of(self, kernel: dict, started: str) -> str:
        """The checkout and build records of one kernel build (once per cache key: the
        first record that names the build describes it, the claims' when there are claims)."""
        build = self.id("build", kernel.get("key") or path_part(kernel.get("release", "unknown")))
        if build not in self.builds:
            source = kernel.get("source_id") or kernel.get("package") or kernel.get("release", "unknown")
            # A Debian source's id is 'tarball:sha256': the release and the hash's head name it.
            name, _, digest = source.partition(":")
            checkout = self.id("checkout", path_part(f"{kernel.get('release', name)}-{digest[:12]}"
                                                     if digest else name))
            self.checkouts.setdefault(checkout, {
                "id": checkout, "origin": self.origin, "tree_name": path_part(kernel.get("source") or "debian"),
                "start_time": started, "valid": True,
                "comment": f"Linux {kernel.get('release', '?')} from {kernel.get('source', 'a distro package')}",
                "misc": {"source": source, "release": kernel.get("release")}})
            b = {"id": build, "origin": self.origin, "checkout_id": checkout, "start_time": started,
                 "architecture": "x86_64", "status": PASS,
                 "config_name": "+".join(kernel.get("fragments") or [kernel.get("source") or "distro"]),
                 "misc": {k: kernel[k] for k in ("label", "release", "key", "variant", "debug", "source", "kcflags")
                          if k in kernel}}
            for ours, theirs in (("compiler", "compiler"), ("reproduce", "command")):
                if kernel.get(ours):
                    b[theirs] = kernel[ours]
            if isinstance(kernel.get("build_seconds"), int | float):
                b["duration"] = float(kernel["build_seconds"])
            self.builds[build] = b
        return build

    def test(self, build: str, path: list[str], status: str, started: str, comment: str = "",
             misc: dict | None = None, files: list[dict] | None = None, number: float | None = None,
             seconds: float | None = None, environment: dict | None = None) -> None:
        t = {"id": self.id(build.split(":", 1)[1], *map(path_part, path)), "origin": self.origin,
             "build_id": build, "path": ".".join([ROOT, *map(path_part, path)]), "status": status,
             "start_time": started}
        if comment:
            t["comment"] = comment[:1000]
        if misc:
            t["misc"] = misc
        if files:
            t["output_files"] = files
        if number is not None:
            t["number"] = {"value": number}
        if isinstance(seconds, int | float):
            t["duration"] = float(seconds)
        if environment:
            t["environment"] = environment
        self.tests.append(t)

    def document(self) -> dict:
        from kcidb_io import schema

        return {"version": {"major": schema.LATEST.major, "minor": schema.LATEST.minor},
                "checkouts": list(self.checkouts.values()), "builds": list(self.builds.values()),
                "tests": self.tests}


def numeric(value: object) -> float | None:
    """A measured number for KCIDB's `number` (a string or a verdict is not one)."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def rfc3339(started: str | None) -> str:
    """The records' '2026-12-02 08:37:35 UTC' (or an ISO time) as RFC 3339."""
    if not started:
        return datetime.now(UTC).isoformat(timespec="seconds")
    text = started.replace(" UTC", "+00:00")
    try:
        t = datetime.fromisoformat(text)
    except ValueError as e:
        raise HarnessError(f"start time {started!r} is not a time the records write") from e
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).isoformat(timespec="seconds")


def add_claims(k: Kcidb, record: dict, where: Path) -> None:
    started = rfc3339(record.get("started"))
    build = k.build_of(record["kernel"], started)
    evidence = k.files(where / "report.html", where / "results.json", where / "junit.xml")
    qemu = record.get("qemu") or {}
    env = {"comment": f"{qemu.get('version', 'QEMU')}, accel {qemu.get('accel', '?')}", "misc": qemu} if qemu else None
    for c in record["claims"]:
        k.test(build, ["claims", c["id"]], VERDICT_STATUS.get(c["verdict"], ERROR), started,
               comment=c.get("summary", ""), files=evidence, seconds=c.get("seconds"), environment=env,
               misc={"verdict": c["verdict"], "title": c.get("title"), "slide": c.get("slide"),
                     "region": c.get("region"), "errors": c.get("errors") or [],
                     "run_id": record.get("run_id")})
        for check in c.get("checks", []):
            # A check with no value was not measured (MISS); in a claim that ended in an error
            # that is the test's error, never the kernel's failure.
            holds = check.get("holds")
            status = (PASS if holds is True else FAIL if holds is False
                      else ERROR if c["verdict"] == "error" else MISS)
            value = check.get("value")
            k.test(build, ["claims", c["id"], check["id"]], status, started,
                   comment=check.get("rule", ""), environment=env,
                   number=numeric(value),
                   misc={"rule": check.get("rule"), "value": value, "how": check.get("how"),
                         "unmeasured": check.get("unmeasured") or None})


def add_survey(k: Kcidb, doc: dict, where: Path) -> None:
    kernel = doc["kernel"]
    started = rfc3339(kernel.get("started"))
    build = k.build_of(kernel, started)
    evidence = k.files(where / "report.html", where / "survey.json")
    errors = set(doc.get("errors", []))
    for model, d in doc["drivers"].items():
        for technique, cell in d["cells"].items():
            value = cell.get("value")
            verdict = value.split(":")[0] if isinstance(value, str) else ""
            # No value: an experiment that failed (a kernel report, a dead guest) is an error;
            # otherwise the technique does not apply to this driver or kernel.
            status = ((ERROR if cell.get("why_not") in errors else SKIP) if value is None
                      else PASS if verdict == "pass" else FAIL if verdict == "fail" else DONE)
            k.test(build, ["survey", model, technique], status, started,
                   comment=cell.get("why_not") or cell.get("how", ""), files=evidence,
                   number=numeric(value),
                   misc={"nic": model, "driver": d.get("driver"), "value": value, "how": cell.get("how"),
                         "why_not": cell.get("why_not") or None})


def add_selftests(k: Kcidb, doc: dict, where: Path, kernels: dict[str, dict]) -> None:
    """The selftests name their kernels by label and release only: each is matched to
    the build record a claims run or survey of the same label gave (or a build of its
    own, keyed by release, when none did)."""
    from harness.scale.merge import selftest_failed

    for kd in doc["kernels"]:
        kernel = kernels.get(kd["label"]) or {"label": kd["label"], "release": kd["release"]}
        started = rfc3339(kernel.get("started"))
        build = k.build_of(kernel, started)
        for f in kd["files"]:
            ktap = where / "ktap" / kd["label"] / f["nic"] / (Path(f["test"]).stem + ".ktap")
            status = ERROR if f.get("rc") is None else FAIL if selftest_failed(f) else PASS
            k.test(build, ["selftests", f["nic"], Path(f["test"]).stem], status, started,
                   comment="; ".join(f.get("problems") or []) or f"{f['test']} rc={f.get('rc')}",
                   files=k.files(ktap, where / "junit.xml"), seconds=f.get("seconds"),
                   misc={"rc": f.get("rc"), "totals": f.get("totals"),
                         "kmemleak": f.get("kmemleak") or None})
            for case in f.get("cases", []):
                k.test(build, ["selftests", f["nic"], Path(f["test"]).stem, case["name"]],
                       CASE_STATUS.get(case["status"], ERROR), started, comment=case.get("reason") or "",
                       misc={"number": case.get("number")})


def find_records(out: Path) -> list[Path]:
    """Every results.json / survey.json / selftests.json under `out` (a run, a matrix,
    a merge, a survey or selftests directory), baselines left out."""
    if not out.is_dir():
        raise HarnessError(f"{out}: not a directory (give a run's, a merge's or a survey's out directory)")
    found = sorted(p for name in RECORDS for p in out.rglob(name)
                   if len(p.relative_to(out).parts) <= 4 and "baseline" not in p.relative_to(out).parts)
    if not found:
        raise HarnessError(f"{out}: no {', '.join(RECORDS)} under it")
    return found


def kcidb_document(out: Path, origin: str, artifacts_url: str | None = None) -> dict:
    if not ORIGIN_RE.match(origin):
        raise HarnessError(f"--origin {origin!r}: KCIDB origins are lowercase letters, digits and '_' "
                           "(the name KernelCI gave your submitter)")
    k = Kcidb(origin, artifacts_url, out)
    records = [(p, json.loads(p.read_text())) for p in find_records(out)]
    kernels: dict[str, dict] = {}
    for p, doc in records:
        if p.name == "results.json":
            add_claims(k, doc, p.parent)
            kernels.setdefault(doc["kernel"]["label"], {**doc["kernel"], "started": doc.get("started")})
        elif p.name == "survey.json":
            add_survey(k, doc, p.parent)
            kernels.setdefault(doc["kernel"]["label"], doc["kernel"])
    for p, doc in records:
        if p.name == "selftests.json":
            add_selftests(k, doc, p.parent, kernels)
    doubles = [i for i, n in Counter(t["id"] for t in k.tests).items() if n > 1]
    if doubles:
        raise HarnessError(f"{out}: the same test twice ({', '.join(sorted(doubles)[:5])}): give one run's or one "
                           "merge's out directory, not several that overlap")
    return validate(k.document())


def validate(doc: dict) -> dict:
    """KernelCI's schema (kcidb-io, its latest version) on the document: a document it
    rejects is never written."""
    import jsonschema
    from kcidb_io import schema

    try:
        schema.LATEST.validate(doc)
    except jsonschema.ValidationError as e:
        where = "/".join(map(str, e.absolute_path))
        raise HarnessError(f"KCIDB document rejected by kcidb-io's schema v{schema.LATEST.major}."
                           f"{schema.LATEST.minor} at {where or 'top level'}: {e.message}") from e
    return doc
