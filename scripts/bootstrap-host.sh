#!/usr/bin/env bash
# Install what the host lacks to build kernels, guest images and run QEMU guests.
# Idempotent: a second run installs nothing. Needs root for apt (says so when not).
set -euo pipefail

QEMU_MIN_MAJOR=8
APT_PACKAGES=(
  # kernel build
  build-essential flex bison bc libelf-dev libssl-dev dwarves ccache cpio kmod xz-utils zstd rsync patch
  # barriers claim: igb_main.c also compiled for arm64 (dmb vs dsb)
  gcc-aarch64-linux-gnu
  # guest image
  mmdebstrap e2fsprogs busybox-static
  # BPF programs; libxdp-dev: the AF_XDP receiver (xsk-zero-copy claim)
  clang llvm bpftool libbpf-dev libxdp-dev
  # the cost probe's QEMU plugin (harness/measurement/plugin): glib's headers
  pkg-config libglib2.0-dev
  # python
  python3-venv python3-pip
  # host tools used by the harness
  openssh-client procps
)
BACKPORTS_PACKAGES=(qemu-system-x86 linux-source-6.12)

log() { printf 'bootstrap: %s\n' "$*" >&2; }
die() { printf 'bootstrap: error: %s\n' "$*" >&2; exit 1; }

need_root() {
  [ "$(id -u)" -eq 0 ] && return 0
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then return 0; fi
  die "installing Debian packages needs root: run 'sudo $0' (missing: $*)"
}
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi; }

missing_debs() {
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || printf '%s\n' "$p"
  done
}

ensure_backports() {
  grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/ && return 0
  local uri
  # The mirror the host already uses for bookworm (deb822 'URIs:' or a one-line 'deb' entry).
  uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null \
        | awk '/^URIs:/ && $2 ~ /\/debian\/?$/ {print $2; exit} /^deb / && $0 ~ /bookworm/ {for (i=2;i<=NF;i++) if ($i ~ /^http/) {print $i; exit}}' || true)
  uri=${uri:-http://deb.debian.org/debian}
  log "adding bookworm-backports ($uri)"
  as_root tee /etc/apt/sources.list.d/bookworm-backports.sources >/dev/null <<SRC
Types: deb
URIs: $uri
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  APT_UPDATED=0
}

APT_UPDATED=${APT_UPDATED:-0}
apt_update_once() {
  [ "$APT_UPDATED" = 1 ] && return 0
  as_root apt-get update -qq
  APT_UPDATED=1
}

install_debs() {
  local base bp
  mapfile -t base < <(missing_debs "${APT_PACKAGES[@]}")
  mapfile -t bp < <(missing_debs "${BACKPORTS_PACKAGES[@]}")
  # An old QEMU (Debian 12's 7.2) counts as missing: it has no igb device.
  if ! qemu_has_igb >/dev/null 2>&1; then
    printf '%s\n' "${bp[@]}" | grep -qx qemu-system-x86 || bp+=(qemu-system-x86)
  fi
  [ ${#base[@]} -eq 0 ] && [ ${#bp[@]} -eq 0 ] && { log "Debian packages: all present"; return 0; }
  need_root "${base[@]}" "${bp[@]}"
  ensure_backports
  apt_update_once
  export DEBIAN_FRONTEND=noninteractive
  if [ ${#base[@]} -gt 0 ]; then
    log "apt-get install ${base[*]}"
    as_root apt-get install -y -qq --no-install-recommends "${base[@]}" >/dev/null
  fi
  if [ ${#bp[@]} -gt 0 ]; then
    log "apt-get install -t bookworm-backports ${bp[*]}"
    as_root apt-get install -y -qq --no-install-recommends -t bookworm-backports "${bp[@]}" >/dev/null
  fi
}

qemu_has_igb() {
  command -v qemu-system-x86_64 >/dev/null || { echo "qemu-system-x86_64 not found (package qemu-system-x86 from bookworm-backports)"; return 1; }
  local ver major
  ver=$(qemu-system-x86_64 --version | sed -n 's/.*version \([0-9][0-9.]*\).*/\1/p' | head -n1)
  major=${ver%%.*}
  [ "${major:-0}" -ge "$QEMU_MIN_MAJOR" ] || { echo "qemu-system-x86_64 $ver is too old for igb (need >= $QEMU_MIN_MAJOR: apt-get install -t bookworm-backports qemu-system-x86)"; return 1; }
  qemu-system-x86_64 -device help 2>/dev/null | grep -q '"igb"' || { echo "qemu-system-x86_64 $ver lists no igb device (apt-get install -t bookworm-backports qemu-system-x86)"; return 1; }
  qemu-system-x86_64 -device help 2>/dev/null | grep -q '"e1000e"' || { echo "qemu-system-x86_64 $ver lists no e1000e device"; return 1; }
}

ensure_venv() {
  local venv=$1 top=$2
  if [ ! -x "$venv/bin/python" ]; then
    log "creating venv $venv"
    python3 -m venv "$venv"
  fi
  local stamp="$venv/.harness-install-stamp" want
  want=$(cat "$top/pyproject.toml" | sha256sum | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "pip install -e $top[dev] into $venv"
    "$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
    "$venv/bin/python" -m pip install -q -e "$top[dev]"
    echo "$want" > "$stamp"
  fi
}

main() {
  local top venv
  top=$(cd "$(dirname "$0")/.." && pwd)
  venv=${HARNESS_VENV:-$top/.venv}
  install_debs
  local why
  why=$(qemu_has_igb) || die "$why"
  [ -n "$(ls /usr/src/linux-source-6.12*.tar.* 2>/dev/null)" ] || die "no /usr/src/linux-source-6.12 tarball (apt-get install -t bookworm-backports linux-source-6.12)"
  ensure_venv "$venv" "$top"
  log "host ready: $(qemu-system-x86_64 --version | head -n1), venv $venv"
}

main "$@"
