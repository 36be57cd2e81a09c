import os
import stat

import pytest

from harness.errors import MissingToolError
from harness.guest.qemu_check import check_qemu, missing_devices

# Lines as `qemu-system-x86_64 -device help` (QEMU 10.0.2) prints them.
HELP_10 = '''Network devices:
name "e1000", bus PCI, alias "e1000-82540em", desc "Intel Gigabit Ethernet"
name "e1000e", bus PCI, desc "Intel 82574L GbE Controller"
name "igb", bus PCI, desc "Intel 82576 Gigabit Ethernet Controller"
name "virtio-net-pci", bus PCI, alias "virtio-net"
Storage devices:
name "virtio-blk-pci", bus PCI, alias "virtio-blk"
'''


def test_all_devices_present():
    assert missing_devices(HELP_10) == []


def test_old_qemu_without_igb():
    old = HELP_10.replace('name "igb", bus PCI, desc "Intel 82576 Gigabit Ethernet Controller"\n', "")
    assert missing_devices(old) == ["igb"]


def fake_qemu(tmp_path, version: str, help_text: str) -> None:
    script = tmp_path / "qemu-system-x86_64"
    script.write_text(f"""#!/bin/sh
case "$1" in
  --version) echo "QEMU emulator version {version}" ;;
  -device) cat <<'EOT'
{help_text}EOT
  ;;
esac
""")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def test_qemu_7_without_igb_names_the_package(tmp_path, monkeypatch):
    fake_qemu(tmp_path, "7.2.19 (Debian 1:7.2+dfsg-7+deb12u16)", HELP_10.replace('name "igb"', 'name "x-igb-gone"'))
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    check_qemu.cache_clear()
    with pytest.raises(MissingToolError) as e:
        check_qemu()
    check_qemu.cache_clear()
    msg = str(e.value)
    assert "QEMU emulator version 7.2.19" in msg and "has no igb device" in msg
    assert "bookworm-backports qemu-system-x86" in msg


def test_no_qemu_at_all_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    check_qemu.cache_clear()
    with pytest.raises(MissingToolError, match=r"'qemu-system-x86_64' not found.*qemu-system-x86"):
        check_qemu()
    check_qemu.cache_clear()
