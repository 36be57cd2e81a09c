"""`harness selftests` on one or several kernels: install the kernel's own
drivers/net selftests, run them in a guest of that kernel on each NIC asked for,
and write selftests.json, junit.xml, report.md / report.html (tests x NIC x
kernel, skip reasons, failures with their output and console) and every file's
raw KTAP under ktap/."""

from __future__ import annotations

import html
import json
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from harness.artifacts.image import build_image
from harness.artifacts.kernel_choice import KernelChoice
from harness.cache import Cache
from harness.guest.vm import Guest, GuestOptions
from harness.nics import nic
from harness.outdir import write_bytes, write_text
from harness.selftests.ktap import KtapDoc, KtapResult
from harness.selftests.suite import (
    SUITE,
    TEST_TIMEOUT,
    FileResult,
    ensure_tools,
    installed_selftests,
    run_nic,
    select_tests,
    tests_in,
)


@dataclass
class KernelSelftests:
    label: str
    release: str
    results: list[FileResult]
    missing_tools: list[str]
    nics: tuple[str, ...] = ()  # the hub: each NIC ran as NETIF with the next as its remote


def log(msg: str) -> None:
    print(f"harness: {msg}", file=sys.stderr, flush=True)


def selftests_kernel(choice: KernelChoice, models: tuple[str, ...], cache: Cache, accel: str,
                     pattern: str | None, only: tuple[str, ...] | None = None) -> KernelSelftests:
    """The suite on each NIC of `models` (or of `only` among them: a shard of the
    nightly) as NETIF, the next one of `models` as its remote, each in a fresh guest:
    a test that leaves a NIC in some state (an XDP program, an MTU, a ring size) must
    not fail the next NIC's tests, where that NIC is the remote."""
    kernel = choice.get(cache)
    install = installed_selftests(kernel, cache)
    tests = select_tests(tests_in(install), pattern)
    image = build_image(cache=cache)
    results, missing = [], []
    for i, model in enumerate(models):
        if only is not None and model not in only:
            continue
        peer = models[(i + 1) % len(models)]
        log(f"booting {kernel.label} for the {SUITE} selftests on {model} (remote: {peer} in a netns) ...")
        with Guest(kernel, image, GuestOptions(accel=accel, nics=models), cache) as g:
            missing = ensure_tools(g)
            results += run_nic(g, install, model, peer, tests)
    return KernelSelftests(choice.label, kernel.release, results, missing, models)


def write_selftests(out: Path, runs: list[KernelSelftests]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    doc = {"suite": SUITE, "kernels": [{"label": r.label, "release": r.release, "missing_tools": r.missing_tools,
                                        "nics": list(r.nics), "files": [f.to_json() for f in r.results]}
                                       for r in runs]}
    write_text(out / "selftests.json", json.dumps(doc, indent=1))
    for r in runs:
        for f in r.results:
            path = out / "ktap" / r.label / f.nic / (Path(f.test).stem + ".ktap")
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text(path, f.output)
    write_bytes(out / "junit.xml", junit(runs))
    write_text(out / "report.md", markdown(runs))
    write_text(out / "report.html", html_report(runs))


def cells(runs: list[KernelSelftests]) -> tuple[list[str], list[str], dict]:
    """(rows: test cases, columns: kernel/nic, {(row, column): (status, reason)})."""
    rows, cols, table = [], [], {}
    for r in runs:
        for f in r.results:
            col = f"{r.label}/{f.nic}"
            if col not in cols:
                cols.append(col)
            if not f.doc.results:
                row = f"{f.test} (no result)"
                if row not in rows:
                    rows.append(row)
                table[(row, col)] = ("fail", "; ".join(f.doc.problems()) or f"exit {f.rc}")
            for case in f.doc.results:
                row = case.name or f"{f.test} #{case.number}"
                if row not in rows:
                    rows.append(row)
                table[(row, col)] = (case.status, case.reason)
    return rows, cols, table


def markdown(runs: list[KernelSelftests]) -> str:
    rows, cols, table = cells(runs)
    lines = [f"# The kernel's {SUITE} selftests on the emulated NICs", ""]
    for r in runs:
        counts = {}
        for f in r.results:
            for k, v in f.doc.counts().items():
                counts[k] = counts.get(k, 0) + v
        lines.append(f"- {r.label}: {r.release}, " + ", ".join(f"{v} {k}" for k, v in counts.items() if v)
                     + (f"; guest lacks {', '.join(r.missing_tools)}" if r.missing_tools else ""))
    lines += ["", "| test | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for row in rows:
        vals = []
        for col in cols:
            status, reason = table.get((row, col), ("—", ""))
            vals.append(f"{status}" + (f": {reason}" if reason and status in ("skip", "xfail", "fail") else ""))
        lines.append(f"| {row} | " + " | ".join(v.replace("|", "\\|") for v in vals) + " |")
    for r in runs:
        for f in r.results:
            if f.failed:
                lines += ["", f"## {r.label} / {f.nic}: {f.test} failed", "", "```", f.output[-4000:].strip(), "```"]
                if f.console:
                    lines += ["", "console:", "", "```", *f.console, "```"]
    return "\n".join(lines) + "\n"


def html_report(runs: list[KernelSelftests]) -> str:
    rows, cols, table = cells(runs)
    esc = html.escape
    colors = {"pass": "#d9f2d9", "fail": "#f8d0d0", "skip": "#fff0c2", "xfail": "#e0e0ff"}
    body = []
    for row in rows:
        tds = []
        for col in cols:
            status, reason = table.get((row, col), ("—", ""))
            tds.append(f'<td style="background:{colors.get(status, "#fff")}" title="{esc(reason)}">{esc(status)}'
                       + (f"<br><small>{esc(reason)}</small>" if reason else "") + "</td>")
        body.append(f"<tr><td>{esc(row)}</td>{''.join(tds)}</tr>")
    fails = "".join(f"<h3>{esc(r.label)} / {esc(f.nic)}: {esc(f.test)}</h3><pre>{esc(f.output[-4000:])}</pre>"
                    + (f"<p>console:</p><pre>{esc(chr(10).join(f.console))}</pre>" if f.console else "")
                    for r in runs for f in r.results if f.failed)
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{SUITE} selftests</title>
<style>body {{ font: 14px/1.4 system-ui, sans-serif; margin: 2em auto; max-width: 1200px; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: .3em .5em; vertical-align: top; }}
pre {{ background: #f7f7f7; padding: .5em; white-space: pre-wrap; }}</style></head><body>
<h1>The kernel's {SUITE} selftests on the emulated NICs</h1>
<p>NETIF is the NIC of the column; its peer NIC sits in a network namespace as the remote (REMOTE_TYPE=netns).</p>
<table><tr><th>test</th>{''.join(f'<th>{esc(c)}<br><small>{esc(nic(c.split("/")[-1]).driver)}</small></th>'
                                for c in cols)}</tr>{''.join(body)}</table>
{f'<h2>Failures</h2>{fails}' if fails else ''}</body></html>
"""


def junit(runs: list[KernelSelftests]) -> bytes:
    root = ET.Element("testsuites", name=f"selftests {SUITE}")
    for r in runs:
        for f in r.results:
            suite = ET.SubElement(root, "testsuite", name=f"{r.label}.{f.nic}.{Path(f.test).stem}",
                                  tests=str(len(f.doc.results)), time=f"{f.seconds:.1f}")
            for case in f.doc.results:
                tc = ET.SubElement(suite, "testcase", classname=f"{r.label}.{f.nic}", name=case.name)
                if case.status == "fail":
                    ET.SubElement(tc, "failure", message=case.reason or "not ok").text = "\n".join(
                        case.diagnostics) or f.output[-3000:]
                elif case.status in ("skip", "xfail"):
                    ET.SubElement(tc, "skipped", message=f"{case.status}: {case.reason}")
            for problem in f.doc.problems():
                tc = ET.SubElement(suite, "testcase", classname=f"{r.label}.{f.nic}", name=f"{f.test} (KTAP)")
                ET.SubElement(tc, "error", message=problem).text = f.output[-3000:]
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def run_selftests(choices: list[KernelChoice], models: tuple[str, ...], cache: Cache, out: Path, accel: str,
                  pattern: str | None, only: tuple[str, ...] | None = None) -> list[KernelSelftests]:
    started = time.monotonic()
    runs = [selftests_kernel(c, models, cache, accel, pattern, only) for c in choices]
    write_selftests(out, runs)
    failed = sum(1 for r in runs for f in r.results if f.failed)
    log(f"{SUITE} selftests on {len(runs)} kernel(s), {len(only or models)} NIC(s): {failed} test files with a "
        f"failure, {time.monotonic() - started:.0f}s; report: {out / 'report.html'}")
    return runs


def read_selftests(out: Path) -> list[KernelSelftests]:
    """selftests.json read back, with each file's raw output from ktap/ (harness merge
    puts per-NIC shards together): the cases, totals and problems as recorded."""
    doc = json.loads((out / "selftests.json").read_text())
    runs = []
    for k in doc["kernels"]:
        results = []
        for f in k["files"]:
            raw = out / "ktap" / k["label"] / f["nic"] / (Path(f["test"]).stem + ".ktap")
            output = raw.read_text() if raw.is_file() else f.get("output", "")
            timed_out = f"timed out after {TEST_TIMEOUT}s"  # FileResult.to_json adds it again
            ktap = KtapDoc(None, None, [KtapResult.from_json(c) for c in f["cases"]], f.get("totals", {}),
                           recorded_problems=[p for p in f.get("problems", []) if p != timed_out])
            results.append(FileResult(f["test"], f["nic"], f["rc"], f["seconds"], ktap, output,
                                      f.get("console", []), f.get("kmemleak", []), f.get("kmemleak_elsewhere", 0)))
        runs.append(KernelSelftests(k["label"], k["release"], results, k.get("missing_tools", []),
                                    tuple(k.get("nics", ()))))
    return runs
