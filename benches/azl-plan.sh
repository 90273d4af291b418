#!/usr/bin/env bash
# Whole-process timings of planning the real Azure Linux 3.0 tree (3,063 specs) with the
# rpmbuild executor and examples/azurelinux/keel.toml, from process start to exit:
#   - a cold `keel build --dry-run` (empty store: every spec read, every %(shell) run in
#     its sandbox, every file of the tree hashed into the store),
#   - a warm one (nothing changed), several times.
# Usage: benches/azl-plan.sh AZL_CHECKOUT [RUNS=5]
# AZL_CHECKOUT is a checkout of github.com/microsoft/azurelinux, branch 3.0 (SPECS,
# SPECS-EXTENDED and toolkit/); this script copies the example config into a scratch copy
# of its SPECS, SPECS-EXTENDED and toolkit/resources, never into the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
src=$(realpath "${1:?usage: benches/azl-plan.sh AZL_CHECKOUT [RUNS]}")
runs=${2:-5}
cargo build --release --quiet --bin keel
keel=$(realpath "${CARGO_TARGET_DIR:-target}")/release/keel
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/tree/toolkit"
cp -r "$src/SPECS" "$src/SPECS-EXTENDED" "$work/tree/"
cp -r "$src/toolkit/resources" "$work/tree/toolkit/"
cp examples/azurelinux/keel.toml "$work/tree/"
k() { "$keel" --store "$work/store" -C "$work/tree" build --dry-run >"$work/out" 2>"$work/err" || true; }
ms() { local s e; s=$(date +%s%N); "$@"; e=$(date +%s%N); echo $(((e - s) / 1000000)); }
stats() { sort -n | awk '{a[NR]=$1} END {printf "min %d ms, median %d ms (%d runs)\n", a[1], a[int((NR+1)/2)], NR}'; }

echo "tree: $(find "$work/tree" -name '*.spec' | wc -l) specs"
echo "cold --dry-run:  $(ms k) ms"
echo "plan:            $(tail -1 "$work/out")"
grep -E '^ +Excluded' "$work/err" || true
echo -n "warm --dry-run:  "
for _ in $(seq "$runs"); do ms k; done | stats
