#!/usr/bin/env bash
# `make test` after the install step: the whole suite — every test binary even when one
# fails — ending with its time and one line of totals:
#   N passed, M failed
# Exits non-zero if any step failed. Arguments go to `cargo test`.
set -uo pipefail
cd "$(dirname "$0")/.."
cargo=${CARGO:-cargo}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
start=$(date +%s)
status=0
$cargo test --workspace --locked --no-fail-fast "$@" 2>&1 | tee "$log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
# libtest ends each binary with "test result: ok. 12 passed; 0 failed; 0 ignored; …".
read -r passed failed binaries < <(awk '
  /^test result:/ {
    for (i = 1; i < NF; i++) {
      if ($(i + 1) ~ /^passed/) p += $i
      if ($(i + 1) ~ /^failed/) f += $i
    }
    b++
  }
  END { print p + 0, f + 0, b + 0 }' "$log")
# A binary that did not build or crashed prints no result line: the status says so.
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi
end=$(date +%s)
echo "make test: $((end - start)) s (building and running $binaries test binaries)"
echo "$passed passed, $failed failed"
exit "$status"
