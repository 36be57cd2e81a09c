"""Unit tests of harness.image: recipe parsing, mirror detection, cache keys and the
rendered init. Nothing here runs mmdebstrap or mkfs."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from harness.artifacts.image import (
    DEFAULT_MIRROR,
    RECIPE_FILES,
    RECIPES_DIR,
    MmdebstrapProgress,
    ensure_ssh_key,
    host_mirror,
    image_key,
    image_size,
    install_files,
    load_recipe,
    mirror_from_deb822,
    mirror_from_one_line,
    mmdebstrap_argv,
    mmdebstrap_error_lines,
    parse_packages,
    render_init,
)
from harness.cache import Cache
from harness.errors import HarnessError

# The shape of Debian 12's /etc/apt/sources.list.d/debian.sources on the build host:
# a commented snapshot URL right before the real URIs line, and a security stanza.
HOST_DEB822 = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
# http://snapshot.debian.org/archive/debian-security/20250520T000000Z
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""

PUBKEY_A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA harness"
PUBKEY_B = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB harness"


def copy_recipe(tmp_path: Path, name: str = "mine") -> Path:
    dest = tmp_path / "recipes" / name
    shutil.copytree(RECIPES_DIR / "default", dest)
    return dest


# ---------------------------------------------------------------- mirror


def test_deb822_skips_commented_snapshot_uri() -> None:
    assert mirror_from_deb822(HOST_DEB822) == "http://deb.debian.org/debian"


def test_deb822_picks_the_stanza_of_the_suite() -> None:
    text = HOST_DEB822.replace("http://deb.debian.org/debian\n", "http://mirror.example/debian/\n", 1)
    assert mirror_from_deb822(text, "bookworm") == "http://mirror.example/debian"
    assert mirror_from_deb822(text, "bookworm-security") == "http://deb.debian.org/debian-security"
    assert mirror_from_deb822(text, "trixie") is None


def test_deb822_ignores_disabled_and_source_stanzas() -> None:
    text = (
        "Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\n\n"
        "Enabled: no\nTypes: deb\nURIs: http://off.example/debian\nSuites: bookworm\n\n"
        "Types: deb\nURIs: http://on.example/debian\nSuites: bookworm\n"
    )
    assert mirror_from_deb822(text) == "http://on.example/debian"


def test_one_line_format() -> None:
    text = (
        "# deb http://commented.example/debian bookworm main\n"
        "deb-src http://src.example/debian bookworm main\n"
        "deb http://security.debian.org/debian-security bookworm-security main\n"
        "deb [arch=amd64 signed-by=/usr/share/keyrings/k.gpg] http://mirror.example/debian/ bookworm main\n"
    )
    assert mirror_from_one_line(text) == "http://mirror.example/debian"
    assert mirror_from_one_line("deb cdrom:[Debian]/ bookworm main\n") is None


def test_host_mirror_reads_sources_dir_and_falls_back(tmp_path: Path) -> None:
    assert host_mirror(tmp_path) == DEFAULT_MIRROR  # no apt config at all
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d/debian.sources").write_text(
        HOST_DEB822.replace("deb.debian.org/debian\n", "local.example/debian\n", 1)
    )
    assert host_mirror(tmp_path) == "http://local.example/debian"


# ---------------------------------------------------------------- recipe


def test_package_list_skips_comments_and_blank_lines() -> None:
    text = "# tools\nopenssh-server\n\n  iproute2  # inline comment\n#ethtool\ntini\niproute2\n"
    assert parse_packages(text) == ["openssh-server", "iproute2", "tini"]


def test_default_recipe_has_what_the_init_needs() -> None:
    recipe = load_recipe("default")
    names = [p.split("/", 1)[0] for p in recipe.packages]
    for pkg in ("openssh-server", "iproute2", "kmod", "tini", "ethtool", "bpftool", "xdp-tools",
                "linux-perf", "python3", "python3-yaml", "socat", "iperf3", "util-linux", "procps"):
        assert pkg in names
    assert set(recipe.files) == set(RECIPE_FILES)


def test_unknown_recipe_lists_available_ones() -> None:
    with pytest.raises(HarnessError, match=r"unknown guest image recipe 'nope'.*default"):
        load_recipe("nope")


def test_incomplete_recipe_names_missing_file(tmp_path: Path) -> None:
    path = copy_recipe(tmp_path)
    (path / "fstab").unlink()
    with pytest.raises(HarnessError, match="missing fstab"):
        load_recipe(str(path))


# ---------------------------------------------------------------- cache key


def test_key_changes_with_recipe_files_pubkey_and_mirror(tmp_path: Path) -> None:
    path = copy_recipe(tmp_path)
    base = image_key(load_recipe(str(path)), PUBKEY_A, DEFAULT_MIRROR)
    assert image_key(load_recipe(str(path)), PUBKEY_A, DEFAULT_MIRROR) == base  # stable
    assert image_key(load_recipe(str(path)), PUBKEY_A + "\n", DEFAULT_MIRROR) == base  # whitespace only
    assert image_key(load_recipe(str(path)), PUBKEY_B, DEFAULT_MIRROR) != base
    assert image_key(load_recipe(str(path)), PUBKEY_A, "http://other.example/debian") != base
    assert image_key(load_recipe(str(path)), PUBKEY_A, DEFAULT_MIRROR, "trixie") != base
    keys = {base}
    for name in RECIPE_FILES:
        with (path / name).open("a") as f:
            f.write("\n# changed\n")
        key = image_key(load_recipe(str(path)), PUBKEY_A, DEFAULT_MIRROR)
        assert key not in keys, f"editing {name} did not change the key"
        keys.add(key)


# ---------------------------------------------------------------- init


def test_rendered_init_prints_ready_line_and_fails_loudly() -> None:
    text = render_init(load_recipe("default"))
    assert text.startswith("#!/bin/sh\n")
    assert "{{" not in text and "{%" not in text
    assert 'echo "HARNESS-READY nics=$nics"' in text
    assert 'nics="${nics:+$nics,}$name:$driver:$mac"' in text
    assert 'echo "HARNESS-INIT-FAILED: $*"' in text
    assert "echo o > /proc/sysrq-trigger" in text
    assert "addr add 10.0.2.15/24 dev $mgmt" in text
    assert "route add default via 10.0.2.2" in text
    assert "exec /usr/bin/tini -s -- /bin/sh -c 'trap \"\" TERM INT HUP; while :; do" in text
    assert "if [ $$ -ne 1 ]" in text  # never reconfigures a host it is run on by mistake


@pytest.mark.skipif(shutil.which("dash") is None, reason="dash (the guest's /bin/sh) not installed")
def test_rendered_init_is_valid_posix_sh(tmp_path: Path) -> None:
    script = tmp_path / "harness-init"
    script.write_text(render_init(load_recipe("default")))
    proc = subprocess.run(["dash", "-n", str(script)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_fstab_mounts_what_the_guest_needs() -> None:
    fstab = load_recipe("default").text("fstab")
    rows = [line.split() for line in fstab.splitlines() if line.strip() and not line.startswith("#")]
    mounts = {row[1]: (row[2], row[3]) for row in rows}
    assert list(mounts)[:2] == ["/proc", "/sys"]  # order matters for mount -a
    for target, fstype in (("/dev", "devtmpfs"), ("/dev/pts", "devpts"), ("/run", "tmpfs"),
                           ("/tmp", "tmpfs"), ("/sys/kernel/tracing", "tracefs"),
                           ("/sys/kernel/debug", "debugfs"), ("/sys/fs/bpf", "bpf")):
        assert mounts[target][0] == fstype
    assert "ptmxmode=0666" in mounts["/dev/pts"][1]


def test_sshd_dropin_is_key_only() -> None:
    conf = load_recipe("default").text("sshd_config.conf").splitlines()
    for line in ("PermitRootLogin prohibit-password", "PasswordAuthentication no",
                 "KbdInteractiveAuthentication no", "UseDNS no", "ListenAddress 0.0.0.0"):
        assert line in conf


# ---------------------------------------------------------------- build pieces


def test_install_files_into_a_merged_usr_tree(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr/sbin").mkdir(parents=True)
    (root / "sbin").symlink_to("usr/sbin")
    (root / "etc").mkdir()
    (root / "etc/resolv.conf").symlink_to("/run/systemd/resolve/stub-resolv.conf")
    install_files(root, load_recipe("default"), PUBKEY_A)
    init = root / "usr/sbin/harness-init"
    assert stat.S_IMODE(init.stat().st_mode) == 0o755
    assert (root / "root/.ssh/authorized_keys").read_text() == PUBKEY_A + "\n"
    assert stat.S_IMODE((root / "root/.ssh/authorized_keys").stat().st_mode) == 0o600
    assert stat.S_IMODE((root / "root/.ssh").stat().st_mode) == 0o700
    assert "UseDNS no" in (root / "etc/ssh/sshd_config.d/harness.conf").read_text()
    assert not (root / "etc/resolv.conf").is_symlink()


def test_install_refuses_to_write_outside_the_tree(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "sbin").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(HarnessError, match="outside the image tree"):
        install_files(root, load_recipe("default"), PUBKEY_A)
    assert not (tmp_path / "elsewhere/harness-init").exists()


def test_image_size_has_headroom() -> None:
    size, inodes = image_size(300 << 20, 20_000)
    assert size >= int((300 << 20) * 1.3) + (64 << 20)
    assert size % (1 << 20) == 0
    assert inodes >= 26_000


def test_mmdebstrap_argv() -> None:
    argv = mmdebstrap_argv(["openssh-server", "tini"], Path("/t/root"), "http://m.example/debian")
    assert argv[:2] == ["mmdebstrap", "--verbose"]
    assert "--variant=minbase" in argv and "--format=directory" in argv
    assert "--include=openssh-server,tini" in argv
    assert '--customize-hook=chroot "$1" ssh-keygen -A' in argv
    assert argv[-3:] == ["bookworm", "/t/root", "http://m.example/debian"]
    assert not any(a.startswith("--aptopt") for a in argv)


def test_mmdebstrap_argv_takes_a_package_from_a_newer_suite() -> None:
    argv = mmdebstrap_argv(["tini", "ethtool/sid"], Path("/t/root"), "http://m.example/debian")
    assert "--include=tini,ethtool/sid" in argv
    assert '--aptopt=APT::Default-Release "bookworm"' in argv
    assert argv[-4:] == ["bookworm", "/t/root", "http://m.example/debian",
                         "deb [check-valid-until=no] http://m.example/debian sid main"]


def test_progress_reports_phase_and_last_action() -> None:
    p = MmdebstrapProgress()
    assert p.update("I: downloading packages with apt...\n") == "downloading packages with apt"
    assert p.update("Get:7 http://deb.debian.org/debian bookworm/main amd64 libc6 amd64 2.36 [2 MB]\n") \
        == "downloading packages with apt: fetched 1: libc6"
    p.update("I: installing remaining packages inside the chroot...\n")
    assert p.update("Setting up openssh-server:amd64 (1:9.2p1-2) ...\n") \
        == "installing remaining packages inside the chroot: Setting up openssh-server"
    assert p.update("some other line\n").endswith("Setting up openssh-server")


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen not installed")
def test_ssh_key_is_made_once_with_private_mode(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    key = ensure_ssh_key(cache)
    assert key == cache.root / "ssh" / "id_ed25519"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    pub = key.with_name("id_ed25519.pub").read_text()
    assert pub.startswith("ssh-ed25519 ")
    os.chmod(key, 0o644)
    assert ensure_ssh_key(cache) == key
    assert key.with_name("id_ed25519.pub").read_text() == pub  # reused, not regenerated
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert not [p for p in key.parent.iterdir() if p.name.startswith(".keygen-")]


def test_mmdebstrap_error_lines_are_apts_e_lines(tmp_path: Path) -> None:
    log = tmp_path / "build.log"
    log.write_text("I: running apt-get update...\nGet:1 http://x bookworm InRelease\n"
                   "E: Unable to locate package no-such-pkg\nE: apt-get install failed\n")
    assert mmdebstrap_error_lines(log) == ["E: Unable to locate package no-such-pkg",
                                           "E: apt-get install failed"]
