"""Build the guest root file system from a recipe in guest-images/<name>/:
mmdebstrap a Debian directory tree, install the harness init, sshd drop-in and
the harness SSH key, pack it as a raw ext4 file. The result is an immutable
cache artifact keyed by the recipe files, the public key, mirror and suite.

A recipe directory holds:
  packages.txt       Debian packages, one a line ('#' comments)
  init.sh.j2         jinja2 template of /sbin/harness-init (PID 1)
  sshd_config.conf   installed as /etc/ssh/sshd_config.d/harness.conf
  fstab              /etc/fstab: what the init mounts with `mount -a`
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from harness.build_errors import log_error_lines
from harness.cache import Cache, hash_parts
from harness.errors import BuildError, HarnessError
from harness.guest.qemu_cmd import MODULES_TAG
from harness.hostcmd import require_tool, run_checked, run_logged
from harness.nics import MGMT_MAC
from harness.paths import RECIPES_DIR

RECIPE_FILES = ("packages.txt", "init.sh.j2", "sshd_config.conf", "fstab")
RECIPE_FORMAT_VERSION = "1"  # bump when the build steps below change what they produce
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
INIT_PATH = "/sbin/harness-init"
SIZE_SLACK = 1.30  # free space in the image: used * SLACK + HEADROOM
SIZE_HEADROOM = 64 << 20

# Values rendered into the init template. The markers are what console.py scans for.
INIT_CONTEXT = {
    "init_path": INIT_PATH,
    "mgmt_mac": MGMT_MAC,  # the management NIC is found by its MAC, never by its driver
    "modules_tag": MODULES_TAG,  # 9p share with a self-built kernel's driver modules
    "ready_marker": "HARNESS-READY",
    "failed_marker": "HARNESS-INIT-FAILED",
    "hostname": "harness-guest",
    "mgmt_address": "10.0.2.15/24",  # QEMU user networking: guest address ...
    "gateway": "10.0.2.2",  # ... and the host side
}

# Shrinks the tree before packing; also keeps dpkg from unpacking these at all.
STRIP_PATHS = ("/usr/share/doc", "/usr/share/man", "/usr/share/locale", "/usr/share/info")
STRIP_HOOK = "rm -rf " + " ".join(
    f'"$1"{p}/*' for p in (*STRIP_PATHS, "/var/lib/apt/lists")
)  # mmdebstrap's own cleanup then runs `apt-get clean`
KEYGEN_HOOK = 'chroot "$1" ssh-keygen -A'


@dataclass(frozen=True)
class GuestImage:
    rootfs: Path  # raw ext4 file, used read-only (QEMU snapshot=on)
    ssh_key: Path  # private ed25519 key (OpenSSH format, 0600) that root in the guest accepts
    recipe: str
    key: str  # cache key
    meta: dict = field(default_factory=dict)
    init: str = INIT_PATH


@dataclass(frozen=True)
class Recipe:
    name: str
    path: Path
    files: dict[str, bytes]  # RECIPE_FILES contents, by name

    @property
    def packages(self) -> list[str]:
        return parse_packages(self.files["packages.txt"].decode())

    def text(self, name: str) -> str:
        return self.files[name].decode()


# ---------------------------------------------------------------- recipes


def available_recipes(recipes_dir: Path = RECIPES_DIR) -> list[str]:
    if not recipes_dir.is_dir():
        return []
    return sorted(p.name for p in recipes_dir.iterdir() if (p / "packages.txt").is_file())


def load_recipe(name: str, recipes_dir: Path = RECIPES_DIR) -> Recipe:
    """A recipe by name (guest-images/<name>), or by directory path."""
    path = Path(name).expanduser() if "/" in name else recipes_dir / name
    if not (path / "packages.txt").is_file():
        have = ", ".join(available_recipes(recipes_dir)) or "none"
        raise HarnessError(f"unknown guest image recipe {name!r}: available recipes in {recipes_dir}: {have}")
    missing = [f for f in RECIPE_FILES if not (path / f).is_file()]
    if missing:
        raise HarnessError(f"guest image recipe {path} is incomplete: missing {', '.join(missing)}")
    files = {f: (path / f).read_bytes() for f in RECIPE_FILES}
    recipe = Recipe(name=path.name, path=path.resolve(), files=files)
    if not recipe.packages:
        raise HarnessError(f"{path / 'packages.txt'} lists no packages")
    return recipe


def parse_packages(text: str) -> list[str]:
    """One package per line; '#' starts a comment; duplicates dropped, order kept."""
    out: list[str] = []
    for line in text.splitlines():
        for word in line.split("#", 1)[0].split():
            if word not in out:
                out.append(word)
    return out


def render_init(recipe: Recipe) -> str:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             autoescape=False)
    try:
        return env.from_string(recipe.text("init.sh.j2")).render(recipe=recipe.name, **INIT_CONTEXT)
    except jinja2.TemplateError as e:
        raise HarnessError(f"{recipe.path / 'init.sh.j2'}: cannot render: {e}") from e


# ---------------------------------------------------------------- the Debian mirror


def mirror_from_deb822(text: str, suite: str = SUITE) -> str | None:
    """The first URI of an enabled `Types: deb` stanza that has `suite` in Suites."""
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        last = ""
        for line in stanza.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            if line[0].isspace() and last:  # continuation line
                fields[last] += " " + line.strip()
            elif ":" in line:
                last, value = (s.strip() for s in line.split(":", 1))
                last = last.lower()
                fields[last] = value
        if ("deb" in fields.get("types", "").split() and suite in fields.get("suites", "").split()
                and fields.get("enabled", "yes").lower() != "no"):
            uris = [u for u in fields.get("uris", "").split() if _usable_uri(u)]
            if uris:
                return uris[0].rstrip("/")
    return None


ONE_LINE = re.compile(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)")


def mirror_from_one_line(text: str, suite: str = SUITE) -> str | None:
    """The URI of the first `deb [opts] URI suite ...` line for `suite`."""
    for line in text.splitlines():
        m = ONE_LINE.match(line.split("#", 1)[0].strip())
        if m and m.group(2) == suite and _usable_uri(m.group(1)):
            return m.group(1).rstrip("/")
    return None


def _usable_uri(uri: str) -> bool:
    return uri.startswith(("http://", "https://", "file:/"))


def host_mirror(apt_dir: Path = Path("/etc/apt"), suite: str = SUITE) -> str:
    """The host's Debian mirror for `suite` (apt's sources), else deb.debian.org."""
    candidates = [(p, mirror_from_deb822) for p in sorted((apt_dir / "sources.list.d").glob("*.sources"))]
    candidates += [(apt_dir / "sources.list", mirror_from_one_line)]
    candidates += [(p, mirror_from_one_line) for p in sorted((apt_dir / "sources.list.d").glob("*.list"))]
    for path, parse in candidates:
        try:
            found = parse(path.read_text(errors="replace"), suite)
        except OSError:
            continue
        if found:
            return found
    return DEFAULT_MIRROR


# ---------------------------------------------------------------- SSH key


def ensure_ssh_key(cache: Cache) -> Path:
    """The harness's ed25519 key pair at <cache>/ssh/id_ed25519{,.pub}, made once."""
    ssh_dir = cache.dir("ssh")
    os.chmod(ssh_dir, 0o700)
    key = ssh_dir / "id_ed25519"
    pub = ssh_dir / "id_ed25519.pub"
    if not (key.is_file() and pub.is_file()):
        with cache.lock("ssh", "id_ed25519", timeout=120):
            if not (key.is_file() and pub.is_file()):
                _generate_key(ssh_dir, key, pub)
    os.chmod(key, 0o600)  # ssh refuses a key others can read
    return key


def _generate_key(ssh_dir: Path, key: Path, pub: Path) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=".keygen-", dir=ssh_dir))
    try:
        run_checked(["ssh-keygen", "-t", "ed25519", "-N", "", "-q", "-C", "harness",
                     "-f", str(tmp / key.name)], what="generating the harness SSH key")
        os.chmod(tmp / key.name, 0o600)
        # Public half first: a pair is complete only once the private key is in place.
        os.replace(tmp / pub.name, pub)
        os.replace(tmp / key.name, key)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- build


def _recipe_parts(recipe: Recipe) -> list[tuple[str, bytes | str]]:
    return ([(f"file:{name}", recipe.files[name]) for name in sorted(recipe.files)]
            + [("init", render_init(recipe))])  # the template's values too (INIT_CONTEXT)


def image_key(recipe: Recipe, pubkey: str, mirror: str, suite: str = SUITE) -> str:
    return hash_parts([("format", RECIPE_FORMAT_VERSION), ("suite", suite), ("mirror", mirror),
                       ("pubkey", pubkey.strip()), *_recipe_parts(recipe)])


def recipe_digest(recipe: Recipe, suite: str = SUITE) -> str:
    """What an image must have been built from to serve this harness's `recipe`
    (image_key without the host's mirror and SSH key): an imported image must match it."""
    return hash_parts([("format", RECIPE_FORMAT_VERSION), ("suite", suite), *_recipe_parts(recipe)])


def imported_record(cache: Cache, recipe: str) -> Path:
    """Where `harness image --import` notes the image it imported for `recipe`."""
    return cache.dir("imports") / f"image-{recipe}.json"


def imported_image(rec: Recipe, cache: Cache) -> GuestImage | None:
    """The image imported into this cache for `rec` (harness image --import, or
    --image-artifact), while it is there and was built from this very recipe."""
    record = imported_record(cache, rec.name)
    if not record.is_file():
        return None
    noted = json.loads(record.read_text())
    here = recipe_digest(rec)
    art = cache.lookup("images", noted["key"])
    if noted["recipe_digest"] != here or art is None:
        why = "built from another recipe than this harness's" if art else "no longer in the cache (pruned)"
        print(f"harness: the imported guest image {noted['key']} ({noted['archive']}) is {why}: not used",
              file=sys.stderr, flush=True)
        return None
    ssh_key = art.file("ssh/id_ed25519")
    if not ssh_key.is_file():  # this host's own build under the same key: the same key pair
        ssh_key = ensure_ssh_key(cache)
    os.chmod(ssh_key, 0o600)  # ssh refuses a key others can read
    return GuestImage(rootfs=art.file("rootfs.ext4"), ssh_key=ssh_key, recipe=rec.name, key=noted["key"],
                      meta=art.meta)


def build_image(recipe: str = "default", cache: Cache | None = None) -> GuestImage:
    """The guest image for `recipe`: the one imported into this cache for it, else
    built with mmdebstrap unless already cached."""
    cache = cache or Cache()
    rec = load_recipe(recipe)
    if (imported := imported_image(rec, cache)) is not None:
        return imported
    ssh_key = ensure_ssh_key(cache)
    pubkey = ssh_key.with_name(ssh_key.name + ".pub").read_text()
    mirror = host_mirror()
    key = image_key(rec, pubkey, mirror)
    # The log lives outside the artifact's temp dir, which a failed build deletes.
    log = cache.dir("logs") / f"image-{rec.name}-{key}.log"
    art = cache.get_or_build("images", key, lambda out: _build(out, rec, pubkey, mirror, log))
    return GuestImage(rootfs=art.file("rootfs.ext4"), ssh_key=ssh_key, recipe=rec.name, key=key,
                      meta=art.meta)


def _build(out: Path, recipe: Recipe, pubkey: str, mirror: str, log: Path) -> dict:
    require_tool("mmdebstrap", "needed to build the guest image")
    require_tool("mkfs.ext4", "needed to pack the guest image")
    if os.geteuid() != 0:
        raise HarnessError(
            "building the guest image needs root (mmdebstrap's directory output and mkfs.ext4 -d "
            "must keep file ownership): run the first build as root; later runs use the cache"
        )
    started = time.monotonic()
    root = out / "root"
    log.unlink(missing_ok=True)
    argv = mmdebstrap_argv(recipe.packages, root, mirror)
    print(f"harness: building guest image '{recipe.name}' ({len(recipe.packages)} packages from "
          f"{mirror}; log: {log})", file=sys.stderr, flush=True)
    _run_mmdebstrap(argv, log, root, f"mmdebstrap (guest image '{recipe.name}')")
    install_files(root, recipe, pubkey)
    fs_bytes, used_bytes, inodes = pack_ext4(root, out / "rootfs.ext4")
    shutil.rmtree(root)
    shutil.copy2(log, out / "build.log")
    (out / "recipe").mkdir()
    for name, content in recipe.files.items():
        (out / "recipe" / name).write_bytes(content)
    return {
        "recipe": recipe.name,
        "recipe_path": str(recipe.path),
        "packages": recipe.packages,
        "mirror": mirror,
        "suite": SUITE,
        "size_bytes": fs_bytes,
        "used_bytes": used_bytes,
        "inodes_used": inodes,
        "init": INIT_PATH,
        "build_seconds": round(time.monotonic() - started, 1),
        "mmdebstrap_version": _mmdebstrap_version(),
        "reproduce": shlex.join(mmdebstrap_argv(recipe.packages, Path("ROOTDIR"), mirror)),
    }


def package_suites(packages: list[str]) -> list[str]:
    """The newer suites a recipe takes single packages from (apt's `name/suite`)."""
    return sorted({p.split("/", 1)[1] for p in packages if "/" in p})


def mmdebstrap_argv(packages: list[str], root: Path, mirror: str, suite: str = SUITE) -> list[str]:
    # A `name/suite` package comes from that suite, so the suite is one more source
    # of the same mirror; Default-Release keeps every other package (and the
    # dependencies the base suite can satisfy) from the base suite. Its Release is
    # signature-checked but not held to Valid-Until: a mirror's sid can lag by weeks
    # (seen here: sid's InRelease of 30 Oct, expired on 6 Nov), and a stale list
    # only means an older build of that one package.
    extra = package_suites(packages)
    return [
        "mmdebstrap", "--verbose", "--mode=root", "--variant=minbase", "--format=directory",
        f"--include={','.join(packages)}",
        *([f'--aptopt=APT::Default-Release "{suite}"'] if extra else []),
        *[f"--dpkgopt=path-exclude={p}/*" for p in STRIP_PATHS],
        f"--customize-hook={KEYGEN_HOOK}",
        f"--customize-hook={STRIP_HOOK}",
        suite, str(root), mirror, *[f"deb [check-valid-until=no] {mirror} {s} main" for s in extra],
    ]


def _run_mmdebstrap(argv: list[str], log: Path, root: Path, what: str) -> None:
    try:
        run_logged(argv, log, what="mmdebstrap", timeout=1800, progress=MmdebstrapProgress().update,
                   progress_every=10)
    except BuildError as e:
        raise BuildError(what, str(log), mmdebstrap_error_lines(log)) from e
    finally:
        # mmdebstrap killed hard (timeout, Ctrl-C) leaves /proc, /sys, /dev/pts mounted
        # in the tree; unmount before anyone rmtree's it.
        _unmount_below(root)


class MmdebstrapProgress:
    """A status line from mmdebstrap --verbose output: its phase and apt/dpkg's last action."""

    ACTION = re.compile(r"^(Get:\d+ \S+ \S+ \S+|Unpacking|Setting up)\s+(\S+)")
    PHASE = re.compile(r"^I: (.*?)\.*$")

    def __init__(self) -> None:
        self.phase = "starting"
        self.action = ""
        self.fetched = 0

    def update(self, line: str) -> str:
        if m := self.PHASE.match(line):
            self.phase, self.action = m.group(1), ""
        elif m := self.ACTION.match(line):
            verb, what = m.group(1), m.group(2)
            if verb.startswith("Get:"):
                self.fetched += 1
                verb = f"fetched {self.fetched}:"
            self.action = f"{verb} {what.split(':')[0]}"
        return f"{self.phase}: {self.action}" if self.action else self.phase


def mmdebstrap_error_lines(log: Path, limit: int = 12) -> list[str]:
    """apt's and mmdebstrap's `E:` lines, or else the generic first error lines."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return []
    hits = [line for line in lines if line.startswith("E: ") or "dpkg: error" in line]
    return hits[:limit] if hits else log_error_lines(log, limit)


def _unmount_below(root: Path) -> None:
    prefix = str(root) + "/"
    try:
        mountinfo = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return
    points = [_unescape_mount(line.split()[4]) for line in mountinfo.splitlines()]
    for mp in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", mp], check=False, capture_output=True)


def _unescape_mount(field_text: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field_text)


def install_files(root: Path, recipe: Recipe, pubkey: str) -> None:
    """The harness's files in the tree mmdebstrap made."""
    hostname = INIT_CONTEXT["hostname"]
    _put(root, INIT_PATH, render_init(recipe), 0o755)
    _put(root, "/etc/ssh/sshd_config.d/harness.conf", recipe.text("sshd_config.conf"), 0o644)
    _put(root, "/etc/fstab", recipe.text("fstab"), 0o644)
    _put(root, "/root/.ssh/authorized_keys", pubkey.strip() + "\n", 0o600, dir_mode=0o700)
    _put(root, "/etc/hostname", hostname + "\n", 0o644)
    _put(root, "/etc/hosts", f"127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n::1\tlocalhost\n", 0o644)
    # No DNS is reachable (restricted user networking): with no nameserver, lookups
    # fail at once on 127.0.0.1:53 instead of timing out on the build host's resolver.
    _put(root, "/etc/resolv.conf", "# harness guest: no DNS\n", 0o644)


def _put(root: Path, guest_path: str, text: str, mode: int, dir_mode: int | None = None) -> None:
    """Write a file inside the tree; symlinked directories (merged /usr) are followed,
    but never out of the tree, and a symlink at the file itself is replaced."""
    dest = root / guest_path.lstrip("/")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dir_mode is not None:
        os.chmod(dest.parent, dir_mode)
    parent = dest.parent.resolve()
    if not parent.is_relative_to(root.resolve()):
        raise HarnessError(f"{guest_path}: resolves outside the image tree ({parent})")
    target = parent / dest.name
    if target.is_symlink():
        target.unlink()
    target.write_text(text)
    os.chmod(target, mode)


def image_size(used_bytes: int, inodes: int) -> tuple[int, int]:
    """(file system bytes, inode count) for a tree of `used_bytes` / `inodes`:
    30% more plus 64 MiB, rounded up to a MiB, so the guest can write to it."""
    size = int(used_bytes * SIZE_SLACK) + SIZE_HEADROOM
    size = -(-size // (1 << 20)) * (1 << 20)
    return size, int(inodes * SIZE_SLACK) + 8192


def pack_ext4(root: Path, image: Path) -> tuple[int, int, int]:
    """mkfs.ext4 -d: returns (image bytes, used bytes, inodes used)."""
    used = int(run_checked(["du", "-s", "-x", "--block-size=1", str(root)]).split()[0])
    inodes = int(run_checked(["du", "-s", "-x", "--inodes", str(root)]).split()[0])
    size, n_inodes = image_size(used, inodes)
    run_checked(["mkfs.ext4", "-q", "-F", "-L", "harness-root", "-b", "4096", "-N", str(n_inodes),
                 "-d", str(root), str(image), f"{size // 1024}k"],
                what="packing the guest image (mkfs.ext4 -d)", timeout=1200)
    return image.stat().st_size, used, inodes


def _mmdebstrap_version() -> str:
    out = run_checked(["mmdebstrap", "--version"]).strip()
    return out.split()[-1] if out else "unknown"


def describe(image: GuestImage) -> str:
    meta = image.meta
    return "\n".join([
        f"guest image {image.recipe}  key {image.key}",
        f"  rootfs     {image.rootfs} ({meta.get('size_bytes', 0) / 2**20:.0f} MiB, "
        f"{meta.get('used_bytes', 0) / 2**20:.0f} MiB used)",
        f"  ssh key    {image.ssh_key}",
        f"  packages   {' '.join(meta.get('packages', []))}",
        f"  from       {meta.get('mirror')} {meta.get('suite')} (mmdebstrap {meta.get('mmdebstrap_version')})",
    ])
