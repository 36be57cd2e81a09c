"""The shared build dir of a source's variants: files a patch touched get fresh
mtimes, so make recompiles them whichever way the work tree switched."""

import os

from harness.artifacts.source_tree import patched_paths
from harness.artifacts.source_tree import record_patched_files as _record_patched_files
from harness.artifacts.source_tree import refresh_patched_files as _refresh_patched_files
from harness.paths import PATCHES_DIR

PATCH = """--- a/drivers/net/ethernet/intel/igb/igb_main.c
+++ b/drivers/net/ethernet/intel/igb/igb_main.c
@@ -1,1 +1,1 @@
-a
+b
--- /dev/null
+++ b/drivers/net/ethernet/intel/igb/new.h
@@ -0,0 +1 @@
+x
"""


def test_patched_paths_strip_one_component_and_skip_dev_null():
    assert patched_paths(PATCH) == {"drivers/net/ethernet/intel/igb/igb_main.c",
                                    "drivers/net/ethernet/intel/igb/new.h"}


def test_the_no_reuse_patch_touches_igb_main_only():
    text = (PATCHES_DIR / "igb-no-page-reuse.patch").read_text()
    assert patched_paths(text) == {"drivers/net/ethernet/intel/igb/igb_main.c"}


def _tree(tmp_path):
    work, build = tmp_path / "work", tmp_path / "build"
    src = work / "drivers/net/ethernet/intel/igb/igb_main.c"
    src.parent.mkdir(parents=True)
    build.mkdir()
    origin = tmp_path / "origin.c"
    origin.write_text("stock")
    os.link(origin, src)  # the work tree hard-links unchanged files to the origin
    os.utime(origin, (1_000_000, 1_000_000))
    patch = tmp_path / "p.patch"
    patch.write_text(PATCH)
    return work, build, src, origin, patch


def test_patched_build_then_stock_build_refreshes_the_file(tmp_path):
    work, build, src, origin, patch = _tree(tmp_path)
    patched = _refresh_patched_files(work, build, [patch])
    assert os.stat(src).st_mtime > 1_000_000 and os.stat(origin).st_mtime == 1_000_000  # origin untouched
    _record_patched_files(build, patched)
    os.utime(src, (1_000_000, 1_000_000))  # the work tree restored the stock file's old mtime
    assert _refresh_patched_files(work, build, []) == set()
    assert os.stat(src).st_mtime > 1_000_000 and src.read_text() == "stock"


def test_stock_after_stock_touches_nothing(tmp_path):
    work, build, src, _, _ = _tree(tmp_path)
    _record_patched_files(build, _refresh_patched_files(work, build, []))
    _refresh_patched_files(work, build, [])
    assert os.stat(src).st_mtime == 1_000_000


def test_an_interrupted_patched_build_is_remembered(tmp_path):
    work, build, src, _, patch = _tree(tmp_path)
    _refresh_patched_files(work, build, [patch])  # the build never finished: nothing recorded after it
    os.utime(src, (1_000_000, 1_000_000))
    _refresh_patched_files(work, build, [])
    assert os.stat(src).st_mtime > 1_000_000


def test_a_driver_only_patch_rebuilds_that_module_alone(tmp_path):
    from harness.artifacts.kernel import split_patches
    from harness.nics import module_dirs

    igb_only = tmp_path / "igb.patch"
    igb_only.write_text(PATCH)
    both = tmp_path / "both.patch"
    both.write_text(PATCH + "--- a/net/core/dev.c\n+++ b/net/core/dev.c\n@@ -1 +1 @@\n-a\n+b\n")
    base, per_module = split_patches([igb_only, both, PATCHES_DIR / "igb-no-page-reuse.patch"], module_dirs())
    assert base == [both]  # touches the kernel outside the driver: the base build carries it
    assert per_module == {"igb": [igb_only, PATCHES_DIR / "igb-no-page-reuse.patch"]}


def test_tree_fingerprint_leaves_driver_dirs_out(tmp_path):
    from harness.artifacts.source_tree import dir_digest, tree_fingerprint

    igb = tmp_path / "drivers/net/ethernet/intel/igb"
    igb.mkdir(parents=True)
    (igb / "igb_main.c").write_text("int a;\n")
    (tmp_path / "Makefile").write_text("all:\n")
    before, digest = tree_fingerprint(tmp_path, ("drivers/net/ethernet/intel/igb",)), dir_digest(igb)
    (igb / "igb_main.c").write_text("int b;\n")  # a driver edit: the base stays, the module's digest moves
    assert tree_fingerprint(tmp_path, ("drivers/net/ethernet/intel/igb",)) == before
    edited = dir_digest(igb)
    assert edited != digest
    (igb / "igb_main.o").write_bytes(b"\x7fELF")  # build products do not count
    assert dir_digest(igb) == edited
    (tmp_path / "Makefile").write_text("all: x\n")  # an edit elsewhere: the base moves
    assert tree_fingerprint(tmp_path, ("drivers/net/ethernet/intel/igb",)) != before
