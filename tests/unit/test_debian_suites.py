"""Debian's newer suites through the private apt: what apt-cache says, read (the
apt-cache calls are replaced by their recorded output)."""

from pathlib import Path

import pytest

from harness.artifacts import debian_suites as ds
from harness.errors import HarnessError

APT = ds.PrivateApt(Path("/nonexistent/apt-newer"))

DEPENDS_7_3 = """\
linux-image-7.3.4+deb13-amd64
  PreDepends: linux-base
 |Depends: dracut
 |Depends: initramfs-tools
  Depends: <linux-initramfs-tool>
    dracut
    initramfs-tools
  Depends: linux-base-7.3.4+deb13-amd64
  Depends: linux-binary-7.3.4+deb13-amd64
  Depends: linux-modules-7.3.4+deb13-amd64
  Breaks: initramfs-tools
"""


def answer(monkeypatch, outputs: dict[str, str]) -> None:
    def fake(argv, **_kw):
        return next(out for word, out in outputs.items() if word in argv)
    monkeypatch.setattr(ds, "run_checked", fake)


def test_a_split_kernel_package_is_fetched_with_its_parts(monkeypatch):
    answer(monkeypatch, {"depends": DEPENDS_7_3})
    assert ds.kernel_parts(APT, "linux-image-7.3.4+deb13-amd64") == [
        "linux-image-7.3.4+deb13-amd64", "linux-base-7.3.4+deb13-amd64", "linux-binary-7.3.4+deb13-amd64",
        "linux-modules-7.3.4+deb13-amd64"]


def test_a_whole_kernel_package_is_fetched_alone(monkeypatch):
    answer(monkeypatch, {"depends": "linux-image-6.12.38+deb13-amd64\n  Depends: kmod\n  Depends: linux-base\n"})
    assert ds.kernel_parts(APT, "linux-image-6.12.38+deb13-amd64") == ["linux-image-6.12.38+deb13-amd64"]


def test_the_newest_series_is_asked_of_apt(monkeypatch):
    answer(monkeypatch, {"search": "linux-source-6.12 - Linux kernel source\nlinux-source-7.3 - Linux kernel source\n"
                                   "linux-source-7.10 - Linux kernel source\n"})
    assert ds.newest_source(APT) == "linux-source-7.10"
    answer(monkeypatch, {"search": "linux-image-7.3.2+deb13-amd64 - Linux 7.3.2\n"
                                   "linux-image-7.3.10+deb13-amd64 - Linux 7.3.10\n"})
    assert ds.newest_image(APT, "7.3") == "linux-image-7.3.10+deb13-amd64"


def test_no_candidate_is_a_clear_error(monkeypatch):
    answer(monkeypatch, {"policy": "linux-source-7.3:\n  Installed: (none)\n  Candidate: (none)\n"})
    with pytest.raises(HarnessError, match=r"linux-source-7\.3: no candidate version"):
        ds.package_version(APT, "linux-source-7.3")
