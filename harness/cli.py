"""`harness`: build or get a kernel, build the guest image, boot guests, run the
claims. User errors print one line and exit 2; no traceback."""

from __future__ import annotations

import argparse
import contextlib
import secrets
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from .cache import Cache
from .errors import HarnessError
from .image import build_image
from .kernel import Kernel, KernelRequest, describe, get_kernel
from .vm import Guest, GuestOptions


def _add_kernel_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("kernel")
    g.add_argument("--kernel", choices=["source", "debian"], default="source",
                   help="source: build Debian's linux-source-6.12 with the fragments (default); "
                        "debian: Debian's prebuilt linux-image-6.12 (no build)")
    g.add_argument("--kernel-tree", type=Path, metavar="PATH",
                   help="build this kernel tree (out of tree) with the fragments instead")
    g.add_argument("--fragment", action="append", metavar="NAME",
                   help="config fragment from kernel-configs/ or a path (repeatable; default base, nics, observe)")
    g.add_argument("--patch", action="append", type=Path, default=[], metavar="FILE",
                   help="apply this patch to the source before building (repeatable)")
    p.add_argument("--cache", type=Path, help="cache directory (default ~/.cache/harness or $HARNESS_CACHE)")


def _add_guest_args(p: argparse.ArgumentParser) -> None:
    _add_kernel_args(p)
    g = p.add_argument_group("guest")
    g.add_argument("--accel", choices=["auto", "kvm", "tcg"], default="auto",
                   help="auto: KVM if a probe boot works, else TCG (default)")
    g.add_argument("--append", action="append", default=[], metavar="ARG",
                   help="extra kernel command-line argument (repeatable), e.g. swiotlb=force")
    g.add_argument("--iommu", action="store_true", help="put the NICs behind a virtual Intel IOMMU")
    g.add_argument("--memory", type=int, default=1024, metavar="MB")
    g.add_argument("--cpus", type=int, default=2)


def kernel_from_args(args: argparse.Namespace, cache: Cache) -> Kernel:
    if args.kernel == "debian":
        if args.kernel_tree or args.patch or args.fragment:
            raise HarnessError("--kernel debian is Debian's prebuilt image: it takes no --kernel-tree, "
                               "--patch or --fragment")
        from .distro_kernel import get_debian_kernel

        return get_debian_kernel(cache)
    fragments = tuple(args.fragment) if args.fragment else KernelRequest().fragments
    request = KernelRequest(tree=args.kernel_tree, fragments=fragments, patches=tuple(args.patch))
    return get_kernel(request, cache)


def guest_options(args: argparse.Namespace) -> GuestOptions:
    return GuestOptions(accel=args.accel, cmdline_extra=tuple(args.append), iommu=args.iommu,
                        memory_mb=args.memory, cpus=args.cpus)


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
    print(describe(kernel_from_args(args, Cache(args.cache))))
    return 0


def cmd_image(args: argparse.Namespace) -> int:
    image = build_image(args.recipe, Cache(args.cache))
    print(f"image {image.recipe}  key {image.key}\n  rootfs     {image.rootfs}\n  ssh key    {image.ssh_key}")
    return 0


def cmd_boot(args: argparse.Namespace) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise HarnessError("harness boot: give the command to run after --, e.g. harness boot -- uname -a")
    with booted_guest(args) as guest:
        # One argument is a shell snippet as typed ('ethtool -i eth0; ...'); several are an argv.
        result = guest.run(command[0] if len(command) == 1 else command, check=False, timeout=args.timeout)
        sys.stdout.write(result.stdout)
        sys.stderr.write(result.stderr)
        return result.rc


def cmd_shell(args: argparse.Namespace) -> int:
    with booted_guest(args) as guest:
        ssh = guest.ssh_command()
        print("harness: interactive shell in the guest; exit it to stop the guest.\n"
              f"  NICs under test: {', '.join(f'{n.name} ({n.driver}, {n.mac})' for n in guest.nics)}\n"
              f"  from another terminal: {shlex.join(ssh)}\n"
              f"  console log: {guest.console_log}", file=sys.stderr, flush=True)
        return subprocess.call(ssh)


def cmd_check(args: argparse.Namespace) -> int:
    from .smoke import run_smoke

    return run_smoke(booted_guest, args)


def cmd_run(args: argparse.Namespace) -> int:
    from .claims.lab import Lab
    from .claims.runner import run_claims, select
    from .report import write_report
    from .smoke import qemu_version

    claims = select([c.strip() for c in args.claims.split(",")] if args.claims else None)
    cache = Cache(args.cache)
    fixed = None
    if args.kernel == "debian":
        from .distro_kernel import get_debian_kernel

        fixed = get_debian_kernel(cache)
    run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)
    started = time.monotonic()
    lab = Lab(cache, run_id, tree=args.kernel_tree, accel=args.accel, kernel=fixed)
    try:
        kernel = lab.kernel("stock")  # fail early on a kernel that cannot be had
        results = run_claims(lab, claims)
    finally:
        lab.close()
    accel = lab.boots[0]["accel"] if lab.boots else "none"
    meta = {
        "run_id": run_id, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": shlex.join(["harness", *sys.argv[1:]]), "wall_s": round(time.monotonic() - started, 1),
        "kernel": {"release": kernel.release, "key": kernel.key, **kernel.meta},
        "qemu": {"version": qemu_version(), "accel": accel},
    }
    record = write_report(args.out, lab, results, meta)
    for r in results:
        print(f"  {r.verdict:12s} {r.id:18s} {r.checks[0].describe() if r.checks else ''}")
    print(f"harness: {', '.join(f'{n} {v}' for v, n in record['tally'].items())} in {record['wall_s']:.0f}s; "
          f"report: {args.out / 'report.html'}", file=sys.stderr)
    return 1 if record["tally"].get("refuted") else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="harness", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    k = sub.add_parser("kernel", help="build or fetch the kernel; print its artifact paths")
    _add_kernel_args(k)
    k.set_defaults(func=cmd_kernel)
    i = sub.add_parser("image", help="build the guest image; print its paths")
    i.add_argument("--recipe", default="default")
    i.add_argument("--cache", type=Path)
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
    r.add_argument("--claims", metavar="ID,...", help="only these claims (default: all)")
    r.add_argument("--out", type=Path, default=Path("out"), help="directory for the report (default out/)")
    r.set_defaults(func=cmd_run)
    c = sub.add_parser("check", help="boot a guest and check the test bed (NICs bound, links, frames, tracing)")
    _add_guest_args(c)
    c.add_argument("--out", type=Path, default=Path("out"), help="directory for results (default out/)")
    c.set_defaults(func=cmd_check)
    return p


def _sigterm_as_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    args = build_parser().parse_args(argv)
    started = time.monotonic()
    try:
        return args.func(args)
    except HarnessError as e:
        print(f"harness: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"harness: interrupted after {time.monotonic() - started:.0f}s; guests stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
