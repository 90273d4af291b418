#!/usr/bin/env bash
# Installs the system tools keel's demo or test suite needs, when they are missing.
# Debian/Ubuntu (apt-get) and Fedora/Azure Linux (dnf or tdnf). Needs root to install;
# says exactly what is missing otherwise.
#
#   scripts/install-deps.sh demo|test        install what `make demo` / `make test` need
#   scripts/install-deps.sh names apt|rpm    every package name this script can install
#   scripts/install-deps.sh check-index      each of those names is in this machine's package
#                                            index (apt-cache show, dnf info, tdnf info)
#   scripts/install-deps.sh check-azl DIR    each rpm name is a package that a spec of the
#                                            Azure Linux tree at DIR builds (SPECS*/**/*.spec)
set -euo pipefail

usage="usage: install-deps.sh demo|test | names apt|rpm | check-index | check-azl DIR"
what=${1:?$usage}

# command-to-check  debian-package  rpm-package ("cargo:NAME": no package; `cargo install NAME`)
demo_tools=(
  "rpmbuild rpm rpm-build"
  "rpmspec rpm rpm-build"
  "bwrap bubblewrap bubblewrap"
  "createrepo_c createrepo-c createrepo_c"
  "gcc gcc gcc"
  "make make make"
  "patch patch patch"
  "mkfs.ext4 e2fsprogs e2fsprogs"
  "mkfs.vfat dosfstools dosfstools"
  "mcopy mtools mtools"
  "qemu-img qemu-utils qemu-img"
  "sfdisk fdisk util-linux"
)
test_tools=(
  "${demo_tools[@]}"
  "b3sum b3sum cargo:b3sum"
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
  "script bsdutils util-linux"
  "man man-db man-db"
  "strace strace strace"
)

if command -v apt-get >/dev/null; then pm=apt; col=1
elif command -v tdnf >/dev/null; then pm=tdnf; col=2
elif command -v dnf >/dev/null; then pm=dnf; col=2
else pm=none; col=1
fi

# Every package name of one column (1: Debian's, 2: the rpm family's), once each, plus the
# ones installed outside the table.
names() {
  local c=$1 entry
  for entry in "${test_tools[@]}"; do
    read -r -a f <<<"$entry"
    echo "${f[$c]}"
  done | awk '!/^cargo:/ && !seen[$0]++'
}

case "$what" in
  demo) tools=("${demo_tools[@]}") ;;
  test) tools=("${test_tools[@]}") ;;
  names)
    case "${2:-}" in
      apt) names 1 ;;
      rpm) names 2 ;;
      *) echo "$usage" >&2; exit 2 ;;
    esac
    exit 0 ;;
  check-index)
    # apt answers from its lists, which a machine that never ran `apt-get update` lacks.
    if [ "$pm" = apt ] && ! ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1; then
      [ "$(id -u)" -eq 0 ] || { echo "error: apt has no package lists; run apt-get update as root" >&2; exit 1; }
      apt-get update -qq
    fi
    mapfile -t want < <(names "$col")
    bad=()
    case "$pm" in
      # One look-up for all (apt-cache reads its whole cache each time it starts).
      apt)
        found=$(apt-cache show --no-all-versions "${want[@]}" 2>/dev/null | awk '/^Package:/ { print $2 }')
        for n in "${want[@]}"; do grep -qxF "$n" <<<"$found" || bad+=("$n"); done ;;
      dnf | tdnf)
        for n in "${want[@]}"; do "$pm" -q info "$n" >/dev/null 2>&1 || bad+=("$n"); done ;;
      none) echo "error: no apt-get, dnf or tdnf here to check package names with" >&2; exit 1 ;;
    esac
    if [ ${#bad[@]} -gt 0 ]; then
      echo "error: not in the $pm package index: ${bad[*]} (scripts/install-deps.sh)" >&2
      exit 1
    fi
    echo "all $(names "$col" | wc -l) $pm package names of scripts/install-deps.sh are in the index"
    exit 0 ;;
  check-azl)
    dir=${2:?$usage}
    [ -d "$dir" ] || { echo "error: $dir is not a directory" >&2; exit 1; }
    # A spec builds `Name:`, `Name-SUB` for `%package SUB` and `SUB` for `%package -n SUB`.
    built=$(find "$dir" -path '*/SPECS*' -name '*.spec' -print0 | xargs -0 awk '
      FNR == 1 { name = "" }
      /^Name:/ && name == "" { name = $2; print name }
      /^%package/ {
        if ($2 == "-n") print $3; else if (name != "") print name "-" $2
      }' | sort -u)
    bad=()
    while read -r n; do
      grep -qxF "$n" <<<"$built" || bad+=("$n")
    done < <(names 2)
    if [ ${#bad[@]} -gt 0 ]; then
      echo "error: no spec under $dir builds: ${bad[*]} (scripts/install-deps.sh)" >&2
      exit 1
    fi
    echo "all $(names 2 | wc -l) rpm package names of scripts/install-deps.sh are built by specs under $dir"
    exit 0 ;;
  *) echo "$usage" >&2; exit 2 ;;
esac

missing=()
for entry in "${tools[@]}"; do
  read -r -a f <<<"$entry"
  if ! command -v "${f[0]}" >/dev/null 2>&1; then
    missing+=("${f[$col]}")
  fi
done
# BuildGrid's virtualenv needs venv and ensurepip, which Debian ships apart from python3.
if [ "$what" = test ] && [ "$pm" = apt ] && ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  missing+=(python3-venv)
fi
# De-duplicate; what no package provides comes from crates.io.
mapfile -t crates < <(printf '%s\n' "${missing[@]}" | awk '/^cargo:/ && !seen[$0]++ { sub(/^cargo:/, ""); print }')
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | awk 'NF && !/^cargo:/ && !seen[$0]++')

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

install_crates() {
  local c
  [ ${#crates[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "error: ${crates[*]} missing; installing into /usr/local needs root (or: cargo install ${crates[*]})" >&2
    exit 1
  fi
  for c in "${crates[@]}"; do
    echo "Installing $c with cargo into /usr/local" >&2
    cargo install -q --locked --root /usr/local "$c"
  done
}

if [ ${#missing[@]} -eq 0 ]; then
  install_crates
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

install_crates
install_buildgrid
