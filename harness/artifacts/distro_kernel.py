"""`--kernel debian` / `debian-6.12` / `debian-6.1`: Debian's prebuilt kernels
(no build): 6.12 from bookworm-backports, 6.1 from bookworm itself.

Its virtio_blk and ext4 are modules, so it boots through a small early
initramfs: static busybox, the modules needed to mount the root disk (and the
NIC drivers, pktgen), dependency-ordered by the host's own modprobe."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from harness.artifacts.kernel import Kernel
from harness.cache import Cache, hash_parts
from harness.errors import HarnessError
from harness.hostcmd import require_tool, run_checked
from harness.nics import module_dirs

# linux-image-6.12.38+deb12-amd64-unsigned (backports), linux-image-6.1.0-41-amd64-unsigned (bookworm)
PACKAGE_NAME = re.compile(r"^linux-image-(\d+\.\d+\.\d+(?:[-+][\w.]+?)?-amd64)-unsigned$")
SERIES = ("6.12", "6.1")  # of the host's suites; "latest" asks the newer ones
# To mount the root disk (virtio_pci is built in from 6.12 on, a module in 6.1;
# modprobe --show-depends skips built-ins).
BOOT_MODULES = ("virtio_pci", "virtio_blk", "ext4")
# Staged for harness-init (it loads those of the NICs on the hub and of the management
# NIC, nics.boot_modules): virtio_net, pktgen, and every catalogue NIC's driver.
GUEST_MODULES = ("virtio_net", "pktgen", *sorted(module_dirs()))
BUSYBOX = Path("/bin/busybox")

EARLY_INIT = """#!/bin/busybox sh
# Early init of the harness for a distro kernel: load what mounts the root disk,
# hand the modules over to the real root, switch to the harness init.
bb=/bin/busybox
$bb mkdir -p /proc /sys /dev /newroot
$bb mount -t proc proc /proc
$bb mount -t devtmpfs dev /dev
while read -r ko; do
  $bb insmod "$ko" || echo "HARNESS-INIT-FAILED: insmod $ko"
done < /early-modules
$bb mount -t ext4 -o rw /dev/vda /newroot || { echo "HARNESS-INIT-FAILED: mount /dev/vda"; $bb poweroff -f; }
$bb mkdir -p /newroot/lib/modules
$bb cp -a /lib/modules/* /newroot/lib/modules/
$bb umount /proc
$bb umount /dev
exec $bb switch_root /newroot "${init:-/sbin/harness-init}"
"""


def newest_package(series: str = "6.12", apt_search: str | None = None) -> tuple[str, str]:
    """(package name, kernel release) of the newest linux-image-<series>.*-amd64-unsigned apt knows."""
    if series not in SERIES:
        raise HarnessError(f"no Debian prebuilt kernel series {series!r}; known: {', '.join(SERIES)}")
    pattern = rf"^linux-image-{re.escape(series)}\..*-amd64-unsigned$"
    out = apt_search if apt_search is not None else run_checked(["apt-cache", "search", "--names-only", pattern])
    found = []
    for line in out.splitlines():
        name = line.split(" - ")[0].strip()
        if (m := PACKAGE_NAME.match(name)) and m.group(1).startswith(series + "."):
            found.append((tuple(int(x) for x in re.findall(r"\d+", m.group(1))[:4]), name, m.group(1)))
    if not found:
        where = "bookworm-backports" if series == "6.12" else "bookworm"
        raise HarnessError(f"apt knows no linux-image-{series}.*-amd64-unsigned package: it comes from {where}; "
                           "run apt-get update (scripts/bootstrap-host.sh sets up both suites)")
    _, name, release = max(found)
    return name, release


def get_debian_kernel(cache: Cache, series: str = "6.12") -> Kernel:
    """Debian's prebuilt kernel of `series` (6.12 from bookworm-backports, 6.1 from
    bookworm), or with series "latest" the newest image of the newest series in
    Debian's newer suites (trixie-backports, sid), with its source and the DWARF of
    its NIC driver modules (the -dbg package) so barriers and the source-derived
    checks can judge it."""
    require_tool("dpkg-deb")
    require_tool("depmod", "to order the distro kernel's modules")
    if not BUSYBOX.is_file():
        raise HarnessError(f"{BUSYBOX} not found: apt-get install busybox-static (needed to boot a distro kernel)")
    if series == "latest":
        from harness.artifacts.debian_suites import download, kernel_parts, private_apt
        from harness.artifacts.latest_kernel import latest_image_package

        package, release = latest_image_package(cache)

        def fetch(work: Path) -> list[Path]:
            apt = private_apt(cache)
            return [download(apt, part, work) for part in kernel_parts(apt, package)]
    else:
        package, release = newest_package(series)

        def fetch(work: Path) -> list[Path]:
            run_checked(["apt-get", "download", package], cwd=work, what=f"apt-get download {package}")
            return sorted(work.glob("*.deb"))
    key = hash_parts([("package", package), ("early-init", EARLY_INIT),
                      ("modules", ",".join(BOOT_MODULES + GUEST_MODULES))])

    def build(out: Path) -> dict:
        with tempfile.TemporaryDirectory(prefix="harness-deb-") as tmp:
            work = Path(tmp)
            print(f"harness: fetching {package} ...", file=sys.stderr, flush=True)
            root = work / "x"
            debs = fetch(work)
            for deb in debs:
                run_checked(["dpkg-deb", "-x", str(deb), str(root)], what=f"unpacking {deb.name}")
            files = _kernel_files(root, release, debs)
            for name, src in files.items():
                shutil.copy2(src, out / name)
            modules = _stage_modules(root, release, work / "initrd")
            _write_cpio(work / "initrd", out / "initrd.cpio")
        return {"source": "debian-prebuilt", "package": package, "release": release, "variant": "stock",
                "modules": list(GUEST_MODULES), "early_modules": modules}

    art = cache.get_or_build("kernels", key, build)
    kernel = Kernel(bzimage=art.file("bzImage"), config=art.file("config"), release=release, key=key,
                    system_map=art.file("System.map"), initrd=art.file("initrd.cpio"),
                    modules=GUEST_MODULES, meta=art.meta)
    return with_debug_info(kernel, cache, package) if series == "latest" else kernel


def with_debug_info(kernel: Kernel, cache: Cache, package: str) -> Kernel:
    """The prebuilt kernel with its version's source (linux-source-X.Y, unpacked) and
    its NIC modules' DWARF (the -dbg package)."""
    from harness.artifacts.debian_debug import debug_modules
    from harness.artifacts.debian_suites import package_version, private_apt
    from harness.artifacts.latest_kernel import latest_source
    from harness.artifacts.source_tree import extract_debian_source

    source, apt = latest_source(cache), private_apt(cache)
    image_version = package_version(apt, package)
    if image_version != source.version:
        # Line numbers of another version's source would attribute the -dbg object's
        # instructions to the wrong lines: better no source than a wrong one.
        print(f"harness: {package} is {image_version} but {source.package} is {source.version}: the claims that "
              "read the driver's source or DWARF are not judged on it", file=sys.stderr, flush=True)
        return replace(kernel, meta={**kernel.meta, "source_mismatch": f"{package} {image_version} vs "
                                                                       f"{source.package} {source.version}"})
    tree = extract_debian_source(cache, source.tarball)
    modules = debug_modules(cache, apt, package, kernel.release)
    meta = {**kernel.meta, "source_package": f"{source.package} {source.version}",
            "debug_package": f"{package}-dbg", "source_origin": str(tree)}
    return replace(kernel, source_roots=(tree,), debug_objects=modules, meta=meta)


def _kernel_files(root: Path, release: str, debs: list[Path]) -> dict[str, Path]:
    """bzImage, config and System.map of an unpacked kernel package: in /boot up to
    6.x; in /usr/lib/modules/<release>/ beside the modules since Debian's 7.x split
    packages, whose modules this moves to /lib/modules (where depmod -b looks)."""
    usr = root / "usr/lib/modules" / release
    if usr.is_dir() and not (root / "lib/modules" / release).exists():
        (root / "lib/modules").mkdir(parents=True, exist_ok=True)
        usr.rename(root / "lib/modules" / release)
    moddir = root / "lib/modules" / release
    candidates = {"bzImage": (root / f"boot/vmlinuz-{release}", moddir / "vmlinuz"),
                  "config": (root / f"boot/config-{release}", moddir / "config"),
                  "System.map": (root / f"boot/System.map-{release}", moddir / "System.map")}
    files = {}
    for name, paths in candidates.items():
        found = next((p for p in paths if p.is_file()), None)
        if found is None:
            raise HarnessError(f"no {' or '.join('/' + str(p.relative_to(root)) for p in paths)} in "
                               f"{', '.join(d.name for d in debs)}")
        files[name] = found
    return files


def _stage_modules(root: Path, release: str, initrd: Path) -> list[str]:
    """Copy the wanted modules and their dependencies, decompressed, into the
    initrd tree with a fresh depmod; write /early-modules in load order."""
    run_checked(["depmod", "-b", str(root), release], what="depmod on the distro kernel")
    order: list[Path] = []
    for mod in BOOT_MODULES + GUEST_MODULES:
        out = run_checked(["modprobe", "-d", str(root), "-S", release, "--show-depends", mod],
                          what=f"resolving module {mod}")
        for line in out.splitlines():
            if line.startswith("insmod ") and (p := Path(line.split()[1])) not in order:
                order.append(p)
    moddir = initrd / "lib/modules" / release
    early: list[str] = []
    boot_paths = _boot_module_paths(root, release)
    for src in order:
        rel = src.relative_to(root / "lib/modules" / release)
        dest = (moddir / rel).with_suffix("") if src.suffix == ".xz" else moddir / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if src.suffix == ".xz":
            with dest.open("wb") as f:
                subprocess.run(["xz", "-dc", str(src)], stdout=f, check=True)
        else:
            shutil.copy2(src, dest)
        if src in boot_paths:
            early.append("/" + str(dest.relative_to(initrd)))
    for meta in ("modules.order", "modules.builtin", "modules.builtin.modinfo"):
        if (root / "lib/modules" / release / meta).exists():
            shutil.copy2(root / "lib/modules" / release / meta, moddir / meta)
    run_checked(["depmod", "-b", str(initrd), release], what="depmod on the staged modules")
    (initrd / "bin").mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, initrd / "bin/busybox")
    (initrd / "init").write_text(EARLY_INIT)
    (initrd / "init").chmod(0o755)
    (initrd / "early-modules").write_text("\n".join(early) + "\n")
    return early


def _boot_module_paths(root: Path, release: str) -> set[Path]:
    paths: set[Path] = set()
    for mod in BOOT_MODULES:
        out = run_checked(["modprobe", "-d", str(root), "-S", release, "--show-depends", mod])
        paths |= {Path(line.split()[1]) for line in out.splitlines() if line.startswith("insmod ")}
    return paths


def _write_cpio(tree: Path, dest: Path) -> None:
    require_tool("cpio", "to pack the early initramfs")
    files = subprocess.run(["find", "."], cwd=tree, capture_output=True, check=True).stdout
    with dest.open("wb") as f:
        subprocess.run(["cpio", "--quiet", "-o", "-H", "newc", "-R", "0:0"], cwd=tree, input=files,
                       stdout=f, check=True)
