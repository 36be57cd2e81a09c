"""A kernel exported by one cache and imported by another (an empty one, as on a
fresh runner): every file arrives checked, the source is unpacked where this host
keeps it, and a damaged or foreign archive is refused with the reason."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from harness.artifacts.kernel_choice import KernelChoice, kernel_choices
from harness.artifacts.kernel_export import EXPORT_INFO, export_kernel, import_kernel, read_info
from harness.artifacts.source_tree import extract_debian_source
from harness.cache import Cache
from harness.errors import HarnessError


def debian_tarball(tmp_path: Path) -> Path:
    """A stand-in linux-source tarball (top directory and one driver file)."""
    tree = tmp_path / "linux-source-6.12" / "drivers/net/ethernet/intel/igb"
    tree.mkdir(parents=True)
    (tree / "igb_main.c").write_text("/* igb */\n")
    out = tmp_path / "linux-source-6.12.tar.xz"
    with tarfile.open(out, "w:xz") as tf:
        tf.add(tmp_path / "linux-source-6.12", "linux-source-6.12")
    return out


@pytest.fixture
def built(tmp_path):
    """A base build in the exporting cache, as get_kernel leaves it (files, manifest, meta)."""
    cache = Cache(tmp_path / "build-host")
    origin = extract_debian_source(cache, debian_tarball(tmp_path))

    def build(out: Path) -> dict:
        for name in ("bzImage", "vmlinux", "System.map", "config", "Module.symvers"):
            (out / name).write_bytes(name.encode() * 100)
        (out / "modules").mkdir()
        (out / "modules" / "igb.ko").write_bytes(b"\x7fELF igb")
        (out / "src/drivers/net/ethernet/intel/igb").mkdir(parents=True)
        (out / "src/drivers/net/ethernet/intel/igb/igb_main.c").write_text("/* igb */\n")
        return {"source": "debian-source", "release": "6.12.95", "compiler": "gcc (Debian 12.2.0-14) 12.2.0",
                "fragments": ["base", "nics"], "source_id": "linux-source-6.12.tar.xz:abc",
                "source_origin": str(origin), "build_dir": str(tmp_path / "build-host/build/x"),
                "module_sources": {"igb": "d1"}}

    return cache, cache.get_or_build("kernels", "2a81307c1d2ea06bc28a", build)


def test_an_exported_kernel_imports_into_an_empty_cache_with_every_file_checked(tmp_path, built):
    _, base = built
    archive = tmp_path / "source.tar.gz"
    info = export_kernel(base, "source", archive)
    assert read_info(archive) == info and info["label"] == "source" and info["key"] == base.path.name
    fresh = Cache(tmp_path / "test-host")
    got = import_kernel(archive, fresh)
    assert got.path == fresh.root / "kernels" / base.path.name
    for name in ("bzImage", "vmlinux", "modules/igb.ko", "src/drivers/net/ethernet/intel/igb/igb_main.c"):
        assert got.file(name).read_bytes() == base.file(name).read_bytes()
    origin = Path(got.meta["source_origin"])
    assert origin.is_relative_to(fresh.root) and (origin / "drivers/net/ethernet/intel/igb/igb_main.c").is_file()
    assert not Path(got.meta["build_dir"]).exists()  # a module build prepares one here
    assert got.meta["imported_from"]["label"] == "source" and got.meta["release"] == "6.12.95"
    assert import_kernel(archive, fresh).path == got.path  # the second time: the cache's


def test_the_imported_kernel_is_labelled_as_it_was_built(tmp_path, built):
    _, base = built
    archive = tmp_path / "k.tar.gz"
    export_kernel(base, "source-latest", archive)
    (choice,) = kernel_choices(None, None, artifact=archive)
    assert choice == KernelChoice("artifact", artifact=archive.resolve()) and choice.label == "source-latest"
    with pytest.raises(HarnessError, match="built already: its config is the export's"):
        kernel_choices(None, None, ("debug",), artifact=archive)


def test_a_corrupt_file_in_the_archive_is_named(tmp_path, built):
    _, base = built
    good = tmp_path / "good.tar.gz"
    export_kernel(base, "source", good)
    bad = tmp_path / "bad.tar.gz"
    with tarfile.open(good) as src, tarfile.open(bad, "w:gz") as dst:
        for m in src.getmembers():
            data = src.extractfile(m).read() if m.isfile() else None
            if m.name == "kernel/vmlinux":
                data = b"x" + data[1:]
            dst.addfile(m, io.BytesIO(data) if data is not None else None)
    with pytest.raises(HarnessError, match="kernel/vmlinux is corrupt"):
        import_kernel(bad, Cache(tmp_path / "other"))
    assert not (tmp_path / "other" / "kernels" / base.path.name).exists()


def test_what_is_not_an_export_is_refused(tmp_path):
    with pytest.raises(HarnessError, match="no such file"):
        read_info(tmp_path / "none.tar.gz")
    plain = tmp_path / "plain.tar.gz"
    with tarfile.open(plain, "w:gz") as tf:
        data = b"{}"
        m = tarfile.TarInfo("hello.txt")
        m.size = len(data)
        tf.addfile(m, io.BytesIO(data))
    with pytest.raises(HarnessError, match=f"not a kernel export \\(no {EXPORT_INFO} first\\)"):
        read_info(plain)


def test_a_prebuilt_or_tree_kernel_is_not_exported(tmp_path, built):
    _, base = built
    tree_built = type(base)(base.path, {**base.meta, "source": "tree"})
    with pytest.raises(HarnessError, match="only Debian-source builds"):
        export_kernel(tree_built, "tree-x", tmp_path / "x.tar.gz")
    assert json.loads((base.path / "manifest.json").read_text())["meta"]["source"] == "debian-source"


def test_a_variant_the_export_cannot_be_is_refused(tmp_path, built):
    """A variant needing a fragment the export lacks, or a patch outside the NIC drivers,
    would need the full build: refused, never silently run on the export's config."""
    _, base = built
    archive = tmp_path / "k.tar.gz"
    export_kernel(base, "source", archive)
    (choice,) = kernel_choices(None, None, artifact=archive)
    fresh = Cache(tmp_path / "test-host")
    with pytest.raises(HarnessError, match=r"needs fragment\(s\) cost, which the export was not built with"):
        choice.get(fresh, variant="cost", fragments=("base", "nics", "cost"))
    patch = tmp_path / "core.patch"
    patch.write_text("--- a/net/core/skbuff.c\n+++ b/net/core/skbuff.c\n@@ -1 +1 @@\n-a\n+b\n")
    with pytest.raises(HarnessError, match=r"core\.patch patches outside the NIC driver directories"):
        choice.get(fresh, patches=(patch,), variant="x")
