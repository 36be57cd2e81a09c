"""`harness`: build or get a kernel, build the guest image, boot guests, run the
claims. User errors print one line and exit 2; no traceback."""

from __future__ import annotations

import argparse
import contextlib
import errno
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

from harness.artifacts.image import build_image
from harness.artifacts.kernel import Kernel, describe
from harness.artifacts.kernel_choice import KINDS, kernel_choices, single_choice
from harness.cache import Cache
from harness.errors import HarnessError, does_not_build
from harness.guest.vm import Guest, GuestOptions
from harness.nics import CATALOGUE, DEFAULT_NICS, parse_nics, parse_only

# Exit statuses (README lists them): 0 every claim confirmed, 1 a claim refuted,
# 2 a user or set-up error, 3 a regression against the baseline, 4 inconclusive
# (nothing refuted), 5 error (a kernel crash or a failed experiment), 130
# interrupted. Several apply: refuted, then error, then regression, then inconclusive.
EXIT_OK, EXIT_REFUTED, EXIT_USER_ERROR, EXIT_REGRESSION = 0, 1, 2, 3
EXIT_INCONCLUSIVE, EXIT_ERROR, EXIT_INTERRUPTED = 4, 5, 130
# `git bisect run`: 0 good, 1 bad, 125 skip (cannot tell: inconclusive, error,
# the kernel did not build), 128 stops the bisection (the harness itself is wrong).
BISECT = {EXIT_OK: 0, EXIT_REFUTED: 1, EXIT_REGRESSION: 1, EXIT_INCONCLUSIVE: 125, EXIT_ERROR: 125}
BISECT_SKIP, BISECT_ABORT = 125, 128


def _add_kernel_args(p: argparse.ArgumentParser, boots: bool = True) -> None:
    """The kernel options; `boots`: the command boots guests, so it takes an exported image too."""
    g = p.add_argument_group("kernel")
    g.add_argument("--kernel", action="append", choices=KINDS, metavar="KIND",
                   help="source: build Debian's linux-source-6.12 with the fragments (default); source-latest: the "
                        "newest linux-source-X.Y of Debian's newer suites (asked through a private apt: the "
                        "host's is not touched), built the same way; debian or debian-6.12: Debian's prebuilt 6.12 "
                        "(bookworm-backports); debian-6.1: bookworm's prebuilt 6.1; debian-latest: the newest "
                        "prebuilt image of that series, with its -dbg DWARF and source. `run`, `survey` and "
                        "`kernel` take several (a kernel matrix)")
    g.add_argument("--kernel-tree", type=Path, metavar="PATH",
                   help="build this kernel tree (out of tree) with the fragments; with --kernel, one more "
                        "kernel of the matrix")
    g.add_argument("--kernel-artifact", type=Path, metavar="FILE",
                   help="a kernel built and exported elsewhere (harness kernel --export FILE): checked and used "
                        "without building (variants and driver patches rebuild only their module); with "
                        "--kernel, one more kernel of the matrix")
    g.add_argument("--fragment", action="append", metavar="NAME",
                   help="config fragment from kernel-configs/ or a path (repeatable; default base, nics, observe, "
                        "debug-checks, selftests)")
    g.add_argument("--patch", action="append", type=Path, default=[], metavar="FILE",
                   help="apply this patch to the source before building (repeatable)")
    g.add_argument("--debug", action="store_true",
                   help="the debug flavour (kernel-configs/debug.config on top of the fragments): KASAN, KFENCE, "
                        "UBSAN, lockdep, kmemleak and page_owner (scanned after every experiment: a leak from a "
                        "driver under test is an error), fault injection; a kernel of its own, slower guests")
    p.add_argument("--cache", type=Path, help="cache directory (default ~/.cache/harness or $HARNESS_CACHE)")
    if boots:
        p.add_argument("--image-artifact", type=Path, metavar="FILE",
                       help="a guest image exported elsewhere (harness image --export FILE): checked, imported "
                            "into the cache as its image, booted without building one")


def _add_guest_args(p: argparse.ArgumentParser) -> None:
    _add_kernel_args(p)
    g = p.add_argument_group("guest")
    g.add_argument("--accel", choices=["auto", "kvm", "tcg"], default="auto",
                   help="auto: KVM if a probe boot works, else TCG (default)")
    g.add_argument("--append", action="append", default=[], metavar="ARG",
                   help="extra kernel command-line argument (repeatable), e.g. swiotlb=force")
    g.add_argument("--iommu", action="store_true", help="put the NICs behind a virtual Intel IOMMU")
    g.add_argument("--variant", choices=["stock", "no-reuse"], default="stock",
                   help="kernel variant of the claims: no-reuse patches igb_can_reuse_rx_page() to false")
    _add_nics_arg(g)
    g.add_argument("--memory", type=int, default=1024, metavar="MB")
    g.add_argument("--cpus", type=int, default=2)


def _add_nics_arg(g: argparse._ArgumentGroup, default: str = ",".join(DEFAULT_NICS)) -> None:
    g.add_argument("--nics", default=default, metavar="MODEL,...",
                   help=f"NICs on the guest's private hub, from {', '.join(CATALOGUE)} (default {default})")


def kernel_from_args(args: argparse.Namespace, cache: Cache) -> Kernel:
    choice = single_choice(args.kernel, args.kernel_tree, args.cmd, *_user_build(args), args.kernel_artifact)
    from harness.claims.lab import VARIANTS

    variant = VARIANTS[getattr(args, "variant", "stock")]
    return choice.get(cache, variant.patch_paths, variant.name, variant.fragments)


COVERAGE_FRAGMENT, COVERAGE_PATCH = "coverage", "igb-gcov-profile.patch"


def _user_build(args: argparse.Namespace) -> tuple[tuple[str, ...], tuple[Path, ...]]:
    """--fragment and --patch, for every kernel that is built; --coverage adds the gcov
    fragment (to the defaults, if no --fragment) and the patch that instruments igb;
    --debug adds the debug flavour's fragment the same way."""
    from harness.artifacts.kernel import DEBUG_FRAGMENT, DEFAULT_FRAGMENTS

    fragments, patches = tuple(args.fragment or ()), tuple(args.patch)
    if getattr(args, "coverage", False):
        from harness.paths import PATCHES_DIR

        fragments = (*(fragments or DEFAULT_FRAGMENTS), COVERAGE_FRAGMENT)
        patches = (*patches, PATCHES_DIR / COVERAGE_PATCH)
    if getattr(args, "kernel_artifact", None) is not None:
        if getattr(args, "debug", False):
            from harness.artifacts.kernel_export import read_info

            if DEBUG_FRAGMENT not in read_info(args.kernel_artifact).get("fragments", []):
                raise HarnessError(f"--debug with --kernel-artifact {args.kernel_artifact}: that export is not the "
                                   "debug flavour (export one with harness kernel --debug --export FILE)")
        return fragments, patches  # the export's config is what it is: --debug only checks it
    if getattr(args, "debug", False) and DEBUG_FRAGMENT not in fragments:
        fragments = (*(fragments or DEFAULT_FRAGMENTS), DEBUG_FRAGMENT)
    return fragments, patches


def guest_options(args: argparse.Namespace) -> GuestOptions:
    return GuestOptions(accel=args.accel, cmdline_extra=tuple(args.append), iommu=args.iommu,
                        memory_mb=args.memory, cpus=args.cpus, nics=parse_nics(args.nics))


@contextlib.contextmanager
def booted_guest(args: argparse.Namespace) -> Iterator[Guest]:
    cache = Cache(args.cache)
    kernel = kernel_from_args(args, cache)
    image = build_image(cache=cache)
    print(f"harness: booting {kernel.label} ...", file=sys.stderr, flush=True)
    with Guest(kernel, image, guest_options(args), cache) as guest:
        nics = ", ".join(f"{n.name}={n.driver}" for n in guest.nics)
        print(f"harness: guest ready in {guest.times.ssh:.1f}s ({guest.spec.accel}: "
              f"{guest.times.accel_reason}; {nics})", file=sys.stderr, flush=True)
        yield guest


def cmd_kernel(args: argparse.Namespace) -> int:
    cache = Cache(args.cache)
    choices = kernel_choices(args.kernel, args.kernel_tree, *_user_build(args), args.kernel_artifact)
    if args.export and len(choices) != 1:
        raise HarnessError(f"--export takes one kernel (got {', '.join(c.label for c in choices)})")
    for choice in choices:
        kernel = choice.get(cache)
        print(describe(kernel))
        if args.export:
            from harness.artifacts.kernel_export import export_kernel

            base = cache.lookup("kernels", kernel.base_key)
            if base is None or choice.prebuilt:
                raise HarnessError(f"--export: {choice.label} is Debian's prebuilt kernel: every job fetches it "
                                   "from Debian itself; export a kernel the harness builds")
            export_kernel(base, choice.label, args.export)
    return 0


def cmd_image(args: argparse.Namespace) -> int:
    from harness.artifacts.image_export import export_image, import_image

    cache = Cache(args.cache)
    image = import_image(args.import_, cache) if args.import_ else build_image(args.recipe, cache)
    if args.export:
        export_image(image, args.export)
    print(f"image {image.recipe}  key {image.key}\n  rootfs     {image.rootfs}\n  ssh key    {image.ssh_key}")
    return 0


def cmd_boot(args: argparse.Namespace) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise HarnessError("harness boot: give the command to run after --, e.g. harness boot -- uname -a")
    with booted_guest(args) as guest:
        # One argument is a shell snippet as typed ('ethtool -i eth0; ...'); several are an argv.
        mark = guest.console.line_count() if guest.console else 0
        result = guest.run(command[0] if len(command) == 1 else command, check=False, timeout=args.timeout)
        sys.stdout.write(result.stdout)
        sys.stderr.write(result.stderr)
        crashes = guest.console.reports_since(mark) if guest.console else []
        if crashes:
            print("harness: the kernel reported on the guest console during the command:\n  | "
                  + "\n  | ".join(crashes[:30]) + f"\n  console log: {guest.console_log}", file=sys.stderr)
            return result.rc or 1
        return result.rc


def cmd_shell(args: argparse.Namespace) -> int:
    from harness.investigate import prepare_guest, usage

    with booted_guest(args) as guest:
        prepare_guest(guest, Cache(args.cache))
        print(usage(guest, "exit the shell to stop the guest"), file=sys.stderr, flush=True)
        return subprocess.call(guest.ssh_command())


def cmd_check(args: argparse.Namespace) -> int:
    from harness.smoke import run_smoke

    return run_smoke(booted_guest, args)


def run_status(records: list[dict]) -> int:
    """The exit status of a run over one or several kernels (see EXIT_*)."""
    from harness.report.run_record import has_errors

    verdicts = {c["verdict"] for r in records for c in r["claims"]}
    if "refuted" in verdicts:
        return EXIT_REFUTED
    if any(has_errors(r) for r in records):
        return EXIT_ERROR
    if any(r.get("baseline") and not r["baseline"]["ok"] for r in records):
        return EXIT_REGRESSION
    if "inconclusive" in verdicts:
        return EXIT_INCONCLUSIVE
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from harness.outdir import prepare_out

    # Check what can be checked before an hour of work (and before the heavy
    # imports): the output directories and the baseline, so a wrong path fails at once.
    choices = kernel_choices(args.kernel, args.kernel_tree, *_user_build(args), args.kernel_artifact)
    top = prepare_out(args.out)
    outs = [top] if len(choices) == 1 else [prepare_out(top / c.label) for c in choices]

    from harness.claims.runner import nics_for, select
    from harness.kernel_run import run_kernel
    from harness.report.compare import Tolerance
    from harness.report.matrix import load_baselines, write_matrix

    if args.debug and args.cost:
        raise HarnessError("--cost with --debug: the instructions per frame of a KASAN/lockdep kernel are the "
                           "sanitizers' more than the driver's; measure cost on the default kernel")
    claims = select([c.strip() for c in args.claims.split(",")] if args.claims else None, cost=args.cost)
    nics = parse_nics(args.nics)
    if not {"igb", "e1000e"} <= set(nics):
        raise HarnessError(f"--nics {args.nics}: the claims need igb (under test) and e1000e (its peer and control)")
    nics = nics_for(claims, nics)
    tol = Tolerance(args.tolerance, args.abs_tolerance)
    baselines = load_baselines(args.baseline, choices) if args.baseline else {}
    cache = Cache(args.cache)
    runs = []
    for i, (choice, out) in enumerate(zip(choices, outs, strict=True), 1):
        if len(choices) > 1:
            print(f"harness: kernel {i}/{len(choices)}: {choice.label}", file=sys.stderr, flush=True)
        runs.append(run_kernel(choice, claims, cache, out, args.accel, baselines.get(choice.label), tol,
                               keep=args.keep and i == len(choices), nics=nics, coverage=args.coverage))
    if len(choices) > 1:
        write_matrix(args.out, runs, tol)
    status = run_status([r.record for r in runs])
    if args.bisect:
        print(f"harness: exit {status} -> {BISECT[status]} for git bisect run", file=sys.stderr)
        return BISECT[status]
    return status


def cmd_survey(args: argparse.Namespace) -> int:
    from harness.outdir import prepare_out

    models = parse_nics(args.nics)
    choices = kernel_choices(args.kernel, args.kernel_tree, *_user_build(args), args.kernel_artifact)
    top = prepare_out(args.out)
    outs = [top] if len(choices) == 1 else [prepare_out(top / c.label) for c in choices]

    from harness.survey.run import survey_kernel

    cache = Cache(args.cache)
    measured = parse_only(args.only, models)
    results = [survey_kernel(choice, models, cache, out, args.accel, args.cost, measured)
               for choice, out in zip(choices, outs, strict=True)]
    return EXIT_ERROR if any(r.errors for r in results) else EXIT_OK


def cmd_selftests(args: argparse.Namespace) -> int:
    from harness.outdir import prepare_out

    models = parse_nics(args.nics)
    choices = kernel_choices(args.kernel, args.kernel_tree, *_user_build(args), args.kernel_artifact)
    out = prepare_out(args.out)

    from harness.selftests.run import run_selftests

    runs = run_selftests(choices, models, Cache(args.cache), out, args.accel, args.k, parse_only(args.only, models))
    return EXIT_REFUTED if any(f.failed for r in runs for f in r.results) else EXIT_OK


def cmd_faults(args: argparse.Namespace) -> int:
    from harness.artifacts.kernel_choice import PREBUILT_SERIES
    from harness.outdir import prepare_out

    models = parse_nics(args.nics)
    if prebuilt := [k for k in args.kernel or () if k in PREBUILT_SERIES]:
        raise HarnessError(f"harness faults needs the debug flavour, a kernel the harness builds: --kernel "
                           f"{prebuilt[0]} is Debian's prebuilt image (use source, source-latest or --kernel-tree)")
    args.debug = True  # the fault injection and the leak checks live in the debug flavour
    choice = single_choice(args.kernel, args.kernel_tree, "faults", *_user_build(args), args.kernel_artifact)
    out = prepare_out(args.out)

    from harness.faults.run import faults_kernel

    run = faults_kernel(choice, models, Cache(args.cache), out, args.accel)
    return EXIT_REFUTED if run.failed else EXIT_OK


def cmd_compare(args: argparse.Namespace) -> int:
    from harness.report.compare import Tolerance, compare_results, load_results

    comparison = compare_results(load_results(args.base), load_results(args.new),
                                 Tolerance(args.tolerance, args.abs_tolerance))
    print(comparison.to_markdown())
    return 0 if comparison.ok else EXIT_REGRESSION


def cmd_plan(args: argparse.Namespace) -> int:
    import json

    from harness.claims.runner import select
    from harness.outdir import write_text
    from harness.scale.plan import Timings, github_matrix, gitlab_child_pipeline, load_timings, make_plan

    claims = select([c.strip() for c in args.claims.split(",")] if args.claims else None)
    timings = load_timings(args.timings) if args.timings else Timings()
    plan = make_plan(args.kernel or ["source"], claims, args.shards, tuple(w.strip() for w in args.what.split(",")),
                     timings, ("--debug",) if args.debug else (), args.artifact_dir,
                     {"survey": args.survey_shards, "selftests": args.selftests_shards})
    if args.out:
        write_text(args.out, json.dumps(plan, indent=1))
    shown = {"plan": plan, "github": github_matrix(plan), "gitlab": gitlab_child_pipeline(plan)}[args.format]
    print(json.dumps(shown, indent=None if args.format == "github" else 1))
    for j in plan["jobs"]:
        print(f"harness: {j['job']:28s} ~{j['estimate']:7.1f} {'s' if timings.measured else 'units'}  "
              f"harness {' '.join(j['argv'])}", file=sys.stderr)
    return 0


def cmd_shard(args: argparse.Namespace) -> int:
    from harness.scale.shard import run_shard

    passthrough = [*(["--cache", str(args.cache)] if args.cache else []), "--accel", args.accel]

    def dispatch(argv: list[str]) -> int:
        return run_command(build_parser().parse_args(argv))

    return run_shard(args.plan, args.job, args.out, passthrough, dispatch)


def cmd_merge(args: argparse.Namespace) -> int:
    from harness.outdir import prepare_out
    from harness.report.compare import Tolerance
    from harness.scale.merge import merge, write_merged

    merged = merge(args.outs, args.plan)
    return write_merged(merged, prepare_out(args.out), args.baseline, Tolerance(args.tolerance, args.abs_tolerance))


def cmd_kcidb(args: argparse.Namespace) -> int:
    import json

    from harness.outdir import write_text
    from harness.scale.kcidb import kcidb_document

    doc = kcidb_document(args.out_dir, args.origin, args.artifacts_url)
    text = json.dumps(doc, indent=1)
    if args.out:
        write_text(args.out, text)
        print(f"harness: {args.out}: {len(doc['checkouts'])} checkout(s), {len(doc['builds'])} build(s), "
              f"{len(doc['tests'])} tests, valid KCIDB v{doc['version']['major']}.{doc['version']['minor']} "
              f"(submit with: kcidb-submit -p PROJECT -t TOPIC < {args.out})", file=sys.stderr)
    else:
        print(text)
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    from harness.cache_prune import DEFAULT_MAX, NOT_COUNTED, auto_limit, disk_usage, entries, human, parse_size, prune

    cache = Cache(args.cache)
    if args.action == "prune":
        limit = args.max_size or (None if args.older_than is not None else auto_limit()[1])
        size = parse_size(limit) if limit else None
        if size is not None and size <= 0 and not args.max_size:
            raise HarnessError("the automatic cache limit is off (HARNESS_CACHE_MAX=0): give --max-size SIZE or "
                               "--older-than DAYS")
        result = prune(cache, size, args.older_than, args.dry_run)
        verb = "would remove" if args.dry_run else "removed"
        for e in result.removed:
            print(f"  {verb:12s} {e.label:36s} {human(e.size):>9s}  {e.stale or age(e.last_used)}")
        for e in result.kept_in_use:
            print(f"  {'kept':12s} {e.label:36s} {human(e.size):>9s}  in use by a running harness or build")
        print(result.summary(limit or f"unused for {args.older_than:g} days", verb))
        return 0
    rows = sorted(entries(cache), key=lambda e: -e.last_used)
    width = max((len(e.label) for e in rows), default=0)
    for e in rows:
        print(f"{e.label:{width}s} {human(e.size):>9s}  {age(e.last_used):>12s}  {e.what[:90]}"
              + (f"  [{e.stale}]" if e.stale else ""))
    print(f"{len(rows)} entries, {human(sum(e.size for e in rows))} in {cache.root} (limit "
          f"{auto_limit()[1]}: HARNESS_CACHE_MAX, default {DEFAULT_MAX}); not counted: "
          + ", ".join(f"{k} {human(disk_usage(cache.root / k))}" for k in NOT_COUNTED if (cache.root / k).exists())
          + " (ccache keeps itself under CCACHE_MAXSIZE, 5G unless set)")
    return 0


def age(epoch: float) -> str:
    s = max(0.0, time.time() - epoch)
    for unit, n in (("day", 86400), ("h", 3600), ("min", 60)):
        if s >= n:
            return f"{s / n:.0f} {unit}{'s' if unit == 'day' and s >= 2 * n else ''} ago"
    return "just now"


def _add_tolerance_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tolerance", type=float, default=0.02, metavar="REL",
                   help="a per-frame count moved if it changed by more than REL of its old value (default 0.02) "
                        "and more than --abs-tolerance")
    p.add_argument("--abs-tolerance", type=float, default=0.02, metavar="ABS",
                   help="floor in the metric's own unit, for counts near zero (default 0.02)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="harness", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    k = sub.add_parser("kernel", help="build or fetch the kernel; print its artifact paths")
    _add_kernel_args(k, boots=False)
    k.add_argument("--export", type=Path, metavar="FILE",
                   help="also write the kernel as one archive (its build, driver sources, Debian source tarball, "
                        "sha256 of each file) for --kernel-artifact on other hosts")
    k.set_defaults(func=cmd_kernel)
    i = sub.add_parser("image", help="build the guest image; print its paths")
    i.add_argument("--recipe", default="default")
    i.add_argument("--cache", type=Path)
    i.add_argument("--export", type=Path, metavar="FILE",
                   help="also write the image as one archive (the image, its SSH key pair, sha256 of each file) "
                        "for --image-artifact or --import on other hosts")
    i.add_argument("--import", dest="import_", type=Path, metavar="FILE",
                   help="make an exported image this cache's image for its recipe (every command and the "
                        "pytest plugin then boot it)")
    i.set_defaults(func=cmd_image)
    b = sub.add_parser("boot", help="boot a fresh guest, run CMD over ssh, exit with its status")
    _add_guest_args(b)
    b.add_argument("--timeout", type=float, default=600, help="bound for CMD in seconds (default 600)")
    b.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ...")
    b.set_defaults(func=cmd_boot)
    s = sub.add_parser("shell", help="boot a guest and open an interactive ssh session in it")
    _add_guest_args(s)
    s.set_defaults(func=cmd_shell)
    r = sub.add_parser("run", help="the main job: check the talk's claims on the kernel, write the report")
    _add_kernel_args(r)
    r.add_argument("--accel", choices=["auto", "kvm", "tcg"], default="auto")
    r.add_argument("--claims", metavar="ID,...",
                   help="only these claims (default: the talk's eight; all: also the agenda's tx-bulking, "
                        "rx-tail-batching, page-pool and xsk-zero-copy)")
    _add_nics_arg(r)
    r.add_argument("--out", type=Path, default=Path("out"),
                   help="directory for the report (default out/); with several kernels one subdirectory each "
                        "and a comparison report on top")
    r.add_argument("--baseline", type=Path, metavar="PREV",
                   help="compare with an earlier run: its results.json or out directory (for a matrix, the "
                        "directory holding one subdirectory per kernel); regressions exit 3")
    _add_tolerance_args(r)
    r.add_argument("--keep", action="store_true",
                   help="keep a guest of the (last) kernel up after the claims; print how to reach it")
    r.add_argument("--coverage", action="store_true",
                   help="build the kernel with gcov (CONFIG_GCOV_KERNEL, igb instrumented) and report, per claim, "
                        "the lines and branches of the igb functions it speaks of that its experiments executed")
    r.add_argument("--cost", action="store_true",
                   help="add rx-cost: instructions per frame on the rx path, per function, counted by QEMU (a TCG "
                        "plugin, on a guest of its own), and what page reuse, build_skb, XDP_DROP save")
    r.add_argument("--bisect", action="store_true",
                   help="exit statuses for `git bisect run`: 0 good (confirmed), 1 bad (refuted), 125 skip "
                        "(inconclusive, error, kernel build failed), 128 stop (a set-up error)")
    r.set_defaults(func=cmd_run)
    sv = sub.add_parser("survey", help="every NIC of the catalogue measured on the talk's techniques, side by side")
    _add_kernel_args(sv)
    sv.add_argument("--accel", choices=["auto", "kvm", "tcg"], default="auto")
    _add_nics_arg(sv.add_argument_group("guest"), default=",".join(CATALOGUE))
    sv.add_argument("--only", metavar="MODEL,...",
                    help="measure only these NICs of the hub, with the same peers (one shard of the survey; "
                         "harness merge puts the shards back into one table)")
    sv.add_argument("--out", type=Path, default=Path("out/survey"),
                    help="directory for survey.json, survey.csv, report.html/md (default out/survey)")
    sv.add_argument("--cost", action="store_true",
                    help="add each driver's rx path in instructions per frame, by function family (QEMU's TCG "
                         "plugin, on a guest of its own)")
    sv.set_defaults(func=cmd_survey)
    st = sub.add_parser("selftests", help="the kernel's own drivers/net selftests on the emulated NICs (KTAP)")
    _add_kernel_args(st)
    st.add_argument("--accel", choices=["auto", "kvm", "tcg"], default="auto")
    _add_nics_arg(st.add_argument_group("guest"))
    st.add_argument("-k", metavar="PATTERN", help="only the test files whose name contains PATTERN")
    st.add_argument("--only", metavar="MODEL,...",
                    help="run the suite with only these NICs of --nics as NETIF, each with the same remote (one "
                         "shard of the selftests; harness merge puts the shards back into one report)")
    st.add_argument("--out", type=Path, default=Path("out/selftests"),
                    help="directory for selftests.json, junit.xml, report.html/md, ktap/ (default out/selftests)")
    st.set_defaults(func=cmd_selftests)
    fa = sub.add_parser("faults", help="rx allocation failures injected into each NIC's driver on the debug kernel: "
                        "counted, recovered, nothing leaked, no kernel report (faults.json)")
    _add_kernel_args(fa)
    fa.add_argument("--accel", choices=["auto", "kvm", "tcg"], default="auto")
    _add_nics_arg(fa.add_argument_group("guest"), default=",".join(CATALOGUE))
    fa.add_argument("--out", type=Path, default=Path("out/faults"),
                    help="directory for faults.json and faults.md (default out/faults)")
    fa.set_defaults(func=cmd_faults)
    cmp = sub.add_parser("compare", help="compare two stored runs (results.json or out directories)")
    cmp.add_argument("base", type=Path, help="the earlier run")
    cmp.add_argument("new", type=Path, help="the later run")
    _add_tolerance_args(cmp)
    cmp.set_defaults(func=cmd_compare)
    pl = sub.add_parser("plan", help="the nightly as independent jobs (claims shards balanced by earlier timings, "
                        "survey, selftests) for a CI matrix: JSON for GitHub's fromJSON or a GitLab child pipeline")
    pl.add_argument("--kernel", action="append", choices=KINDS, metavar="KIND", help="a kernel of the matrix "
                    "(repeatable; default source)")
    pl.add_argument("--claims", metavar="ID,...", help="the claims to split (default the talk's eight; all)")
    pl.add_argument("--shards", type=int, default=2, metavar="N", help="claims jobs per kernel (default 2)")
    pl.add_argument("--survey-shards", type=int, default=1, metavar="N",
                    help="survey jobs per kernel, its NICs split among them by earlier timings (each measured on the "
                         "whole hub with `survey --only`; default 1: one survey job)")
    pl.add_argument("--selftests-shards", type=int, default=1, metavar="N",
                    help="selftests jobs per kernel, its NICs (NETIF) split among them by earlier timings "
                         "(`selftests --only`, the same remotes; default 1)")
    pl.add_argument("--what", default="claims,survey,selftests", metavar="KINDS",
                    help="which jobs: claims, survey, selftests (default all three)")
    pl.add_argument("--debug", action="store_true", help="every job on the debug flavour")
    pl.add_argument("--artifact-dir", metavar="DIR", help="jobs import each built kernel from DIR/KIND.tar.gz "
                    "(harness kernel --export in a build job) instead of building it, and the guest image from "
                    "DIR/image.tar.gz (harness image --export)")
    pl.add_argument("--timings", type=Path, action="append", metavar="PATH",
                    help="earlier results.json / survey.json / selftests.json or out directories to balance by "
                         "(repeatable; without: every experiment counts as one)")
    pl.add_argument("--format", choices=["plan", "github", "gitlab"], default="plan",
                    help="print the plan, GitHub's strategy.matrix (include), or a GitLab child pipeline")
    pl.add_argument("--out", type=Path, metavar="FILE", help="also write the plan to FILE (what every job reads)")
    pl.set_defaults(func=cmd_plan)
    sh = sub.add_parser("shard", help="run one job of a plan into --out, with shard.json saying what it covered")
    sh.add_argument("plan", type=Path, help="the plan file (harness plan --out)")
    sh.add_argument("job", help="the job's id in the plan")
    sh.add_argument("--out", type=Path, required=True)
    sh.add_argument("--accel", choices=["auto", "kvm", "tcg"], default="auto")
    sh.add_argument("--cache", type=Path, help="cache directory (default ~/.cache/harness or $HARNESS_CACHE)")
    sh.set_defaults(func=cmd_shard)
    mg = sub.add_parser("merge", help="shard outputs into one report (claims x kernels, survey, selftests); a "
                        "missing or doubled shard fails it")
    mg.add_argument("outs", type=Path, nargs="+", metavar="OUT", help="shard out directories (or their parent)")
    mg.add_argument("--plan", type=Path, help="the plan the shards ran (default: the one their shard.json name)")
    mg.add_argument("--out", type=Path, required=True)
    mg.add_argument("--baseline", type=Path, metavar="PREV", help="compare with an earlier run or merge (exit 3 "
                    "on a regression)")
    _add_tolerance_args(mg)
    mg.set_defaults(func=cmd_merge)
    kc = sub.add_parser("kcidb", help="a run's, merge's, survey's or selftests' outputs as KernelCI KCIDB JSON "
                        "(checkouts, builds, one test per claim check, survey cell and selftest case), validated "
                        "with kcidb-io; kcidb-submit sends it")
    kc.add_argument("out_dir", type=Path, metavar="OUT", help="the out directory to describe")
    kc.add_argument("--origin", required=True, help="your KCIDB origin (lowercase letters, digits, _)")
    kc.add_argument("--artifacts-url", metavar="URL", help="where the CI serves OUT (output files link there; "
                    "default file: URLs on this machine)")
    kc.add_argument("--out", type=Path, metavar="FILE", help="write the JSON to FILE (default stdout)")
    kc.set_defaults(func=cmd_kcidb)
    ca = sub.add_parser("cache", help="what the cache holds, with sizes and last use; 'cache prune' removes the "
                        "least recently used entries (never one a running harness uses)")
    ca.add_argument("action", nargs="?", choices=["list", "prune"], default="list")
    ca.add_argument("--max-size", metavar="SIZE", help="prune until the cache is under SIZE (e.g. 8G; default "
                    "HARNESS_CACHE_MAX or 20G, which also applies after every large build)")
    ca.add_argument("--older-than", type=float, metavar="DAYS", help="prune every entry unused for DAYS")
    ca.add_argument("--dry-run", action="store_true", help="say what would go, remove nothing")
    ca.add_argument("--cache", type=Path, help="cache directory (default ~/.cache/harness or $HARNESS_CACHE)")
    ca.set_defaults(func=cmd_cache)
    c = sub.add_parser("check", help="boot a guest and check the test bed (NICs bound, links, frames, tracing)")
    _add_guest_args(c)
    c.add_argument("--out", type=Path, default=Path("out"), help="directory for results (default out/)")
    c.set_defaults(func=cmd_check)
    return p


def _sigterm_as_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _make_interruptible() -> None:
    """SIGINT and SIGTERM stop the harness and its guests whatever the parent left:
    a background job of a non-interactive shell starts with SIGINT ignored, and a
    runner may hand down a blocked signal mask. Either would leave a harness that
    builds or boots on after being told to stop."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


def run_command(args: argparse.Namespace) -> int:
    """The parsed command, after what its options bring into the cache (an exported
    guest image): the one way `main` and `harness shard` run a command."""
    if getattr(args, "image_artifact", None) is not None:
        from harness.artifacts.image_export import import_image

        import_image(args.image_artifact, Cache(args.cache))
    return args.func(args)


def main(argv: list[str] | None = None) -> int:
    _make_interruptible()
    args = build_parser().parse_args(argv)
    started = time.monotonic()
    bisect = getattr(args, "bisect", False)
    try:
        return run_command(args)
    except HarnessError as e:
        print(f"harness: error: {e}", file=sys.stderr)
        if not bisect:
            return EXIT_USER_ERROR
        return BISECT_SKIP if does_not_build(e) else BISECT_ABORT
    except KeyboardInterrupt:
        print(f"harness: interrupted after {time.monotonic() - started:.0f}s; guests stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            print(f"harness: error: no space left on device writing {e.filename or '?'}", file=sys.stderr)
        else:
            print(f"harness: error: {e.strerror or e}{f': {e.filename}' if e.filename else ''}", file=sys.stderr)
        return BISECT_ABORT if bisect else EXIT_USER_ERROR
    except Exception as e:  # a bug in the harness: one line and where the traceback went, not a traceback
        with tempfile.NamedTemporaryFile("w", prefix="harness-bug-", suffix=".txt", delete=False) as f:
            f.write(f"harness {' '.join(sys.argv[1:])}\n\n{traceback.format_exc()}")
        print(f"harness: internal error: {type(e).__name__}: {e}\n"
              f"harness: this is a bug in the harness, not in the kernel under test; please report it with "
              f"{f.name}", file=sys.stderr)
        return BISECT_ABORT if bisect else EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
