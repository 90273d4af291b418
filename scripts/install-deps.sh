#!/usr/bin/env bash
# Installs the system tools keel's demo or test suite needs, when they are missing.
# Usage: scripts/install-deps.sh demo|test
# Debian/Ubuntu (apt-get) and Fedora/Azure Linux (dnf or tdnf). Needs root to install;
# says exactly what is missing otherwise.
set -euo pipefail

what=${1:?usage: install-deps.sh demo|test}

# command-to-check  debian-package  rpm-package
demo_tools=(
  "rpmbuild rpm rpm-build"
  "rpmspec rpm rpm-build"
  "bwrap bubblewrap bubblewrap"
  "createrepo_c createrepo-c createrepo_c"
  "gcc gcc gcc"
  "make make make"
  "mkfs.ext4 e2fsprogs e2fsprogs"
  "mkfs.vfat dosfstools dosfstools"
  "mcopy mtools mtools"
  "qemu-img qemu-utils qemu-img"
  "sfdisk fdisk util-linux"
)
test_tools=(
  "${demo_tools[@]}"
  "b3sum b3sum b3sum"
  "zstd zstd zstd"
  "nginx nginx nginx"
  "debugfs e2fsprogs e2fsprogs"
  "mksquashfs squashfs-tools squashfs-tools"
  "xorriso xorriso xorriso"
  "umoci umoci umoci"
  "skopeo skopeo skopeo"
  "python3 python3-venv python3"
  "/usr/bin/time time time"
  "unshare util-linux util-linux"
  "flock util-linux util-linux"
)

case "$what" in
  demo) tools=("${demo_tools[@]}") ;;
  test) tools=("${test_tools[@]}") ;;
  *) echo "install-deps.sh: unknown set '$what' (demo or test)" >&2; exit 2 ;;
esac

if command -v apt-get >/dev/null; then pm=apt; col=1
elif command -v tdnf >/dev/null; then pm=tdnf; col=2
elif command -v dnf >/dev/null; then pm=dnf; col=2
else pm=none; col=1
fi

missing=()
for entry in "${tools[@]}"; do
  read -r -a f <<<"$entry"
  if ! command -v "${f[0]}" >/dev/null 2>&1; then
    missing+=("${f[$((col + 1))]}")
  fi
done
# BuildGrid's virtualenv needs venv and ensurepip, which Debian ships apart from python3.
if [ "$what" = test ] && [ "$pm" = apt ] && ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  missing+=(python3-venv)
fi
# De-duplicate.
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | awk 'NF && !seen[$0]++')

if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo is not installed. keel needs Rust 1.95 or newer: install it with rustup" >&2
  echo "       (https://rustup.rs), then run this again." >&2
  exit 1
fi

# BuildGrid, the Remote Execution API server the remote-cache tests start, comes from PyPI
# into its own virtualenv (Makefile points KEEL_TEST_BGD at it).
bgd_venv=/opt/keel-buildgrid
install_buildgrid() {
  if [ "$what" = test ] && ! command -v bgd >/dev/null 2>&1 && [ ! -x "$bgd_venv/bin/bgd" ]; then
    if [ "$(id -u)" -ne 0 ]; then
      echo "error: BuildGrid is missing and installing it into $bgd_venv needs root" >&2
      exit 1
    fi
    echo "Installing BuildGrid 0.4.4 into $bgd_venv" >&2
    python3 -m venv "$bgd_venv"
    "$bgd_venv/bin/pip" install -q buildgrid==0.4.4
  fi
}

if [ ${#missing[@]} -eq 0 ]; then
  install_buildgrid
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "error: these packages are missing and installing them needs root: ${missing[*]}" >&2
  echo "       run 'make $what' as root, or install them yourself with your package manager." >&2
  exit 1
fi

echo "Installing ${missing[*]} with $pm" >&2
case "$pm" in
  apt)
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    ;;
  tdnf) tdnf install -y "${missing[@]}" ;;
  dnf) dnf install -y "${missing[@]}" ;;
  none)
    echo "error: no apt-get, dnf or tdnf here; install these yourself: ${missing[*]}" >&2
    exit 1
    ;;
esac

install_buildgrid
