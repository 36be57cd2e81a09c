"""Build once, test anywhere: a built kernel as one archive (`harness kernel --export
FILE`), and that archive as the kernel of a run on another host (`--kernel-artifact
FILE`) without building.

The archive holds export.json first (what it is: the base build's cache key, the
release, the compiler, the label of the kernel it was built as, the sha256 of every
file), then the base build's artifact directory as the cache keeps it (bzImage,
vmlinux, System.map, config, Module.symvers, the NIC driver modules, the kept
driver sources, its manifest), then the Debian source tarball it was built from:
a variant or a breaker rebuilds one driver module against it, and the selftests
come from its tools/testing/selftests. The importing host unpacks the source into
its cache (once per tarball) and rebuilds only modules; its compiler should be the
one the export names (the CI recipes pin it with their container image), and a
different one is said, not hidden."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

from harness.artifacts import archive as arc
from harness.cache import Artifact, Cache, sha256_file
from harness.errors import HarnessError

EXPORT_FORMAT = 1
EXPORT_INFO = arc.EXPORT_INFO
FLAG = "--kernel-artifact"
KERNEL_DIR = "kernel"
SOURCE_DIR = "source"


def log(msg: str) -> None:
    print(f"harness: {msg}", file=sys.stderr, flush=True)


def source_tarball(base: Artifact) -> Path:
    """The Debian source tarball the base build was unpacked from (the source cache
    entry's manifest names it)."""
    origin = Path(base.meta["source_origin"])
    manifest = origin.parent / "manifest.json"
    try:
        tarball = Path(json.loads(manifest.read_text())["meta"]["tarball"])
    except (OSError, ValueError, KeyError) as e:
        raise HarnessError(f"the source {origin} of kernel {base.meta['release']} is not a Debian tarball the "
                           f"cache unpacked ({e}): only --kernel source / source-latest builds can be exported") from e
    if not tarball.is_file():
        raise HarnessError(f"{tarball}, the source kernel {base.meta['release']} was built from, is gone: "
                           "build it again (harness kernel) before exporting")
    return tarball


def export_kernel(base: Artifact, label: str, dest: Path) -> dict:
    """Write the archive of `base` (a base build, by the cache) to `dest`; returns its export.json."""
    if base.meta.get("source") != "debian-source":
        raise HarnessError(f"--export: kernel {base.meta.get('release')} was built from "
                           f"{base.meta.get('source', '?')}; only Debian-source builds (--kernel source, "
                           "source-latest) are exported (a prebuilt Debian kernel is fetched by each job itself)")
    started = time.monotonic()
    tarball = source_tarball(base)
    files = arc.digests(base.path, KERNEL_DIR)
    files[f"{SOURCE_DIR}/{tarball.name}"] = sha256_file(tarball)
    info = {"format": EXPORT_FORMAT, "kind": "kernel", "key": base.path.name,
            "label": label, "release": base.meta["release"],
            "compiler": base.meta.get("compiler"), "fragments": base.meta.get("fragments", []),
            "source_id": base.meta.get("source_id"), "exported": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "files": files}
    log(f"exporting kernel {base.meta['release']} ({base.path.name}) and {tarball.name} to {dest} ...")
    arc.write_archive(dest, info, [(base.path, KERNEL_DIR), (tarball, f"{SOURCE_DIR}/{tarball.name}")])
    log(f"exported {dest} ({dest.stat().st_size / 2**20:.0f} MiB) in {time.monotonic() - started:.0f}s")
    return info


def read_info(archive: Path) -> dict:
    """export.json of a kernel archive."""
    return arc.read_info(archive, FLAG, "kernel", EXPORT_FORMAT)


def import_kernel(archive: Path, cache: Cache) -> Artifact:
    """The base build of `archive` in this cache under its own key (unpacked and every
    file checked against export.json the first time), its source unpacked beside it."""
    from harness.artifacts.kernel import _compiler_id
    from harness.artifacts.source_tree import extract_debian_source

    info = read_info(archive)

    def unpack(out: Path) -> dict:
        started = time.monotonic()
        log(f"importing kernel {info['release']} ({info['key']}) from {archive} ...")
        with arc.unpacked(archive, info, cache.dir("imports"), FLAG) as staging:
            tarballs = list((staging / SOURCE_DIR).iterdir())
            keep = Path(cache.dir("imports", info["key"])) / tarballs[0].name
            shutil.move(tarballs[0], keep)
            meta = arc.adopt_entry(staging / KERNEL_DIR, out)
        origin = extract_debian_source(cache, keep)
        here = _compiler_id()
        if meta.get("compiler") != here:
            log(f"the imported kernel was built by {meta.get('compiler')}; this host has {here}: driver modules "
                "rebuilt here (variants, breakers) use this host's")
        log(f"imported kernel {info['release']} in {time.monotonic() - started:.0f}s")
        # Where this host keeps its source; no build directory yet (a module build prepares one).
        return {**meta, "source_origin": str(origin), "build_dir": str(cache.root / "build" / "none-imported"),
                "imported_from": {"archive": str(archive), "label": info["label"], "exported": info["exported"]}}

    return cache.get_or_build("kernels", info["key"], unpack)
