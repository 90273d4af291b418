#!/usr/bin/env bash
# Builds real Azure Linux 3.0 packages on this (Debian 12) host with the rpmbuild executor and
# examples/azurelinux/keel.toml, and sorts every outcome by cause (benches/azl-classify.py):
# the README's table of SPECS-EXTENDED packages.
#
# Usage: benches/azl-build.sh AZL_CHECKOUT MIRROR [PACKAGE...]
#   AZL_CHECKOUT  github.com/microsoft/azurelinux, branch 3.0 (SPECS, SPECS-EXTENDED, toolkit/)
#   MIRROR        the source mirror ../shared/azl-sources/mirror.py made (file:// mirror of
#                 Debian's identical tarballs; its packages.txt lists what it holds)
#   PACKAGE...    what to build [default: every package of MIRROR/packages.txt]
# Environment: WORK (a directory kept afterwards: the tree copy, store, logs, events)
#   [default: a temporary one, removed on exit], JOBS [2], TIMEOUT per package [900 s].
# The host needs the stand-ins for Azure Linux's toolchain:
#   apt-get install --no-install-recommends $(grep -v '^#' examples/azurelinux/debian-host-packages.txt)
# The run uses the toolkit's RUN_CHECK=n (with_check 0, rpmbuild --nocheck): %check suites
# are the packages' business and take hours on two cores.
set -euo pipefail
cd "$(dirname "$0")/.."
src=$(realpath "${1:?usage: benches/azl-build.sh AZL_CHECKOUT MIRROR [PACKAGE...]}")
mirror=$(realpath "${2:?usage: benches/azl-build.sh AZL_CHECKOUT MIRROR [PACKAGE...]}")
shift 2
if [ $# -eq 0 ]; then
    mapfile -t pkgs <"$mirror/packages.txt"
else
    pkgs=("$@")
fi
cargo build --release --quiet --bin keel
keel=$(realpath "${CARGO_TARGET_DIR:-target}")/release/keel
if [ -n "${WORK:-}" ]; then
    work=$WORK
    mkdir -p "$work"
else
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
fi
if [ ! -d "$work/tree" ]; then
    mkdir -p "$work/tree/toolkit"
    cp -r "$src/SPECS" "$src/SPECS-EXTENDED" "$work/tree/"
    cp -r "$src/toolkit/resources" "$work/tree/toolkit/"
fi
python3 - "$work/tree/keel.toml" "$mirror" "${TIMEOUT:-900}" <<'EOF'
import sys
out, mirror, timeout = sys.argv[1:]
s = open("examples/azurelinux/keel.toml").read()
for old, new in [('with_check = "1"', 'with_check = "0"'), ("check = true", "check = false"),
                 ('rcfile = "/usr/lib/rpm/azl/rpmrc"\n',
                  f'rcfile = "/usr/lib/rpm/azl/rpmrc"\ntimeout = {timeout}\n')]:
    assert old in s, old
    s = s.replace(old, new)
s += f'\n[sources]\nmirrors = ["file://{mirror}"]\n'
open(out, "w").write(s)
EOF
printf '%s\n' "${pkgs[@]}" >"$work/packages.txt"
start=$(date +%s)
"$keel" --store "$work/store" -C "$work/tree" -j "${JOBS:-2}" build -k --json "${pkgs[@]}" \
    >"$work/events.json" 2>"$work/build.err" || true
end=$(date +%s)
"$keel" --store "$work/store" -C "$work/tree" graph --format json >"$work/graph.json" 2>/dev/null
echo "built in $((end - start)) s; events: $work/events.json, logs: $work/store/logs"
python3 benches/azl-classify.py "$work/packages.txt" "$work/events.json" "$work/graph.json" \
    --details "$work/outcomes.tsv"
echo "per package: $work/outcomes.tsv"
