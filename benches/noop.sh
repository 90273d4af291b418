#!/usr/bin/env bash
# Whole-process timings of `keel build` on a generated tree shaped like a distribution
# (rules/src/gentree.rs: a toolchain core most packages build against, chains above it),
# with the deterministic test executor, from process start to exit:
#   - the first build, a no-op build (nothing changed), and after one leaf spec edit the
#     dry run (deciding the rebuild set) and the build itself.
# Usage: benches/noop.sh [SPECS=3000] [RUNS=7]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-3000}
runs=${2:-7}
cargo build --release --quiet --bin keel
cargo build --release --quiet -p keel-rules --example gentree
target=${CARGO_TARGET_DIR:-target}
keel=$(realpath "$target")/release/keel
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$target"/release/examples/gentree "$work/tree" "$n" 2>/dev/null
k() { "$keel" --store "$work/store" -C "$work/tree" -q "$@" --executor test >/dev/null 2>&1; }
ms() { local s e; s=$(date +%s%N); "$@"; e=$(date +%s%N); echo $(((e - s) / 1000000)); }
stats() { sort -n | awk '{a[NR]=$1} END {printf "min %d ms, median %d ms (%d runs)\n", a[1], a[int((NR+1)/2)], NR}'; }

echo "tree: $n specs, $(find "$work/tree/SPECS" -type f | wc -l) files"
echo "first build:            $(ms k build) ms"
sleep 2.1 # past the racy window, as any later edit would be
k build
echo -n "no-op build:            "
for _ in $(seq "$runs"); do ms k build; done | stats
leaf="$work/tree/SPECS/pkg$(printf %04d $((n - 1)))/pkg$(printf %04d $((n - 1))).spec"
echo -n "leaf edit, --dry-run:   "
for i in $(seq "$runs"); do
    sed -i "s/^%global gen_content .*/%global gen_content $i/" "$leaf"
    ms k build --dry-run
done | stats
echo -n "leaf edit, build:       "
for i in $(seq "$runs"); do
    sed -i "s/^%global gen_content .*/%global gen_content 1$i/" "$leaf"
    ms k build
done | stats
