"""The guest image built once, booted anywhere: `harness image --export FILE` writes
it as one archive, `harness image --import FILE` (or `--image-artifact FILE` on the
commands that boot guests) makes it this cache's image for its recipe, so a test job
on a fresh runner boots it without mmdebstrap.

The archive (harness.artifacts.archive) holds export.json, the image's cache entry
(rootfs.ext4, its build log and recipe files, its manifest) and the SSH key pair
whose public half the image's root accepts: the guest listens on a port forwarded
from 127.0.0.1 only, and the key grants nothing else. An import is used only while
the harness's recipe is the one the image was built from (image.recipe_digest)."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

from harness.artifacts import archive as arc
from harness.artifacts.image import GuestImage, imported_image, imported_record, load_recipe, recipe_digest
from harness.cache import Cache, sha256_file
from harness.errors import HarnessError

EXPORT_FORMAT = 1
FLAG = "--image-artifact"
IMAGE_DIR, SSH_DIR = "image", "ssh"
KEY_NAME = "id_ed25519"


def log(msg: str) -> None:
    print(f"harness: {msg}", file=sys.stderr, flush=True)


def export_image(image: GuestImage, dest: Path) -> dict:
    """Write the archive of `image` (a cached image) to `dest`; returns its export.json."""
    started = time.monotonic()
    rec = load_recipe(image.recipe)
    entry = image.rootfs.parent
    keys = [(image.ssh_key, f"{SSH_DIR}/{KEY_NAME}"),
            (image.ssh_key.with_name(image.ssh_key.name + ".pub"), f"{SSH_DIR}/{KEY_NAME}.pub")]
    files = {name: digest for name, digest in arc.digests(entry, IMAGE_DIR).items()
             if not name.startswith(f"{IMAGE_DIR}/{SSH_DIR}/")}  # an imported image's key travels once, below
    files.update({name: sha256_file(path) for path, name in keys})
    info = {"format": EXPORT_FORMAT, "kind": "image", "key": image.key, "recipe": rec.name,
            "recipe_digest": recipe_digest(rec), "mirror": image.meta.get("mirror"),
            "packages": len(image.meta.get("packages", [])),
            "exported": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "files": files}
    log(f"exporting guest image {rec.name} ({image.key}) to {dest} ...")
    members = [(p, f"{IMAGE_DIR}/{p.name}") for p in sorted(entry.iterdir()) if p.name != SSH_DIR]
    arc.write_archive(dest, info, members + keys)
    log(f"exported {dest} ({dest.stat().st_size / 2**20:.0f} MiB) in {time.monotonic() - started:.0f}s")
    return info


def read_info(archive: Path) -> dict:
    return arc.read_info(archive, FLAG, "image", EXPORT_FORMAT)


def import_image(archive: Path, cache: Cache) -> GuestImage:
    """The image of `archive` in this cache under its own key (unpacked and every file
    checked the first time), noted as the cache's image for its recipe."""
    info = read_info(archive)
    rec = load_recipe(info["recipe"])
    if info["recipe_digest"] != recipe_digest(rec):
        raise HarnessError(f"{FLAG} {archive}: built from another guest-images/{rec.name} recipe than this "
                           f"harness's (digest {info['recipe_digest']}, here {recipe_digest(rec)}): export it "
                           "again with this harness version")

    def unpack(out: Path) -> dict:
        started = time.monotonic()
        log(f"importing guest image {rec.name} ({info['key']}) from {archive} ...")
        with arc.unpacked(archive, info, cache.dir("imports"), FLAG) as staging:
            meta = arc.adopt_entry(staging / IMAGE_DIR, out)
            shutil.move(staging / SSH_DIR, out / SSH_DIR)
        log(f"imported guest image {rec.name} in {time.monotonic() - started:.0f}s")
        return {**meta, "imported_from": {"archive": str(archive), "exported": info["exported"]}}

    cache.get_or_build("images", info["key"], unpack)
    record = imported_record(cache, rec.name)
    tmp = record.with_name(record.name + ".tmp")
    tmp.write_text(json.dumps({"key": info["key"], "recipe_digest": info["recipe_digest"],
                               "archive": str(archive)}, indent=1) + "\n")
    tmp.replace(record)
    image = imported_image(rec, cache)
    assert image is not None
    return image
