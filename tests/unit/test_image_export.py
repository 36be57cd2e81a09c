"""A guest image exported by one cache and imported by another (an empty one, as on a
fresh runner): it arrives checked with the SSH key its root accepts, becomes that
cache's image without mmdebstrap, and a damaged, foreign or stale one is refused."""

from __future__ import annotations

import json
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from harness.artifacts import image as image_module
from harness.artifacts.archive import EXPORT_INFO, write_archive
from harness.artifacts.image import build_image, image_key, imported_record, load_recipe
from harness.artifacts.image_export import export_image, import_image, read_info
from harness.cache import Cache
from harness.cli import main
from harness.errors import HarnessError

MIRROR = "http://deb.debian.org/debian"


def no_mmdebstrap(out, *args):
    raise AssertionError("mmdebstrap ran: the imported image was not used")


@pytest.fixture
def exported(tmp_path, monkeypatch) -> Path:
    """An image as the build host's cache keeps it (its own SSH key), exported."""
    monkeypatch.setattr(image_module, "host_mirror", lambda: MIRROR)
    cache = Cache(tmp_path / "build-host")
    key_file = image_module.ensure_ssh_key(cache)
    key = image_key(load_recipe("default"), key_file.with_name("id_ed25519.pub").read_text(), MIRROR)

    def build(out: Path) -> dict:
        (out / "rootfs.ext4").write_bytes(b"ext4" * 4096)
        (out / "build.log").write_text("mmdebstrap ...\n")
        return {"recipe": "default", "mirror": MIRROR, "packages": ["openssh-server", "ethtool"]}

    cache.get_or_build("images", key, build)
    built = build_image(cache=cache)
    assert built.key == key
    info = export_image(built, tmp_path / "image.tar.gz")
    assert info["kind"] == "image" and info["key"] == key and "ssh/id_ed25519" in info["files"]
    return tmp_path / "image.tar.gz"


def test_an_imported_image_is_the_caches_image_without_a_build(exported, tmp_path, monkeypatch):
    monkeypatch.setattr(image_module, "_build", no_mmdebstrap)
    runner = Cache(tmp_path / "runner")
    imported = import_image(exported, runner)
    again = build_image(cache=runner)  # what every command and the pytest plugin ask for
    assert again.rootfs == imported.rootfs and again.rootfs.read_bytes() == b"ext4" * 4096
    assert again.key == read_info(exported)["key"]
    # The key pair the image's root accepts came with it, private to its owner.
    assert again.ssh_key.read_text() == (tmp_path / "build-host/ssh/id_ed25519").read_text()
    assert os.stat(again.ssh_key).st_mode & 0o077 == 0
    assert again.meta["imported_from"]["archive"] == str(exported)
    # Exported again from the runner: the same image, one key pair.
    info = export_image(again, tmp_path / "again.tar.gz")
    assert sorted(n for n in info["files"] if n.startswith("ssh/")) == ["ssh/id_ed25519", "ssh/id_ed25519.pub"]
    assert not any(n.startswith("image/ssh/") for n in info["files"])


def test_image_artifact_on_a_booting_command_imports_before_it_runs(exported, tmp_path, monkeypatch):
    monkeypatch.setattr(image_module, "_build", no_mmdebstrap)
    runner = tmp_path / "runner"
    # `boot` with no command fails after the import: the import is what is checked here.
    assert main(["boot", "--cache", str(runner), "--image-artifact", str(exported)]) == 2
    assert json.loads(imported_record(Cache(runner), "default").read_text())["key"] == read_info(exported)["key"]


def test_an_image_of_another_recipe_is_refused(exported, tmp_path):
    stale = tmp_path / "stale.tar.gz"
    with tarfile.open(exported) as tf:
        info = json.loads(tf.extractfile(EXPORT_INFO).read())
        tf.extractall(tmp_path / "x", filter="data")
    info["recipe_digest"] = "0" * 20
    write_archive(stale, info, [(p, p.relative_to(tmp_path / "x").as_posix())
                                for p in sorted((tmp_path / "x").iterdir()) if p.name != EXPORT_INFO])
    with pytest.raises(HarnessError, match="another guest-images/default recipe"):
        import_image(stale, Cache(tmp_path / "runner"))


def test_a_damaged_image_is_refused_and_nothing_is_kept(exported, tmp_path):
    damaged = tmp_path / "damaged.tar.gz"
    with tarfile.open(exported) as tf:
        info = json.loads(tf.extractfile(EXPORT_INFO).read())
        tf.extractall(tmp_path / "x", filter="data")
    (tmp_path / "x/image/rootfs.ext4").write_bytes(b"not the image")
    write_archive(damaged, info, [(tmp_path / "x/image", "image"), (tmp_path / "x/ssh", "ssh")])
    runner = Cache(tmp_path / "runner")
    with pytest.raises(HarnessError, match=r"image/rootfs\.ext4 is corrupt"):
        import_image(damaged, runner)
    assert not imported_record(runner, "default").exists()
    assert not [p for p in (runner.root / "images").iterdir() if not p.name.startswith(".")]


def test_a_kernel_export_is_no_image(tmp_path):
    kernel = tmp_path / "kernel.tar.gz"
    write_archive(kernel, {"format": 1, "kind": "kernel", "files": {}}, [])
    with pytest.raises(HarnessError, match="an export of kind kernel, not image"):
        read_info(kernel)


def test_an_imported_image_that_was_pruned_is_built_again(exported, tmp_path, monkeypatch, capsys):
    runner = Cache(tmp_path / "runner")
    imported = import_image(exported, runner)
    shutil.rmtree(imported.rootfs.parent)
    assert image_module.imported_image(load_recipe("default"), runner) is None
    assert "no longer in the cache (pruned): not used" in capsys.readouterr().err


def test_a_shard_imports_the_image_its_job_names_before_the_job_runs(exported, tmp_path, monkeypatch):
    from harness import cli
    from harness.scale.plan import PLAN_FORMAT

    seen = []
    monkeypatch.setattr(cli, "cmd_check", lambda args: seen.append(imported_record(Cache(args.cache), "default")
                                                                   .is_file()) or 0)
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"format": PLAN_FORMAT, "plan": "p1", "jobs": [
        {"job": "j1", "kernel": "source", "command": "check", "covers": {},
         "argv": ["check", "--image-artifact", str(exported)]}]}))
    runner = tmp_path / "runner"
    assert main(["shard", str(plan), "j1", "--out", str(tmp_path / "out"), "--cache", str(runner)]) == 0
    assert seen == [True]
