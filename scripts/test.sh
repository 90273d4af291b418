#!/usr/bin/env bash
# The whole suite, every test binary even when one fails, ending with one line of totals:
#   N passed, M failed (K ignored)
# Exits with cargo's status. Arguments go to `cargo test`.
set -uo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
trap 'rm -f "$log"' EXIT
start=$(date +%s)
${CARGO:-cargo} test --workspace --locked --no-fail-fast "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
# libtest ends each binary with "test result: ok. 12 passed; 0 failed; 0 ignored; …".
read -r passed failed ignored binaries < <(awk '
  /^test result:/ {
    for (i = 1; i <= NF; i++) {
      if ($(i + 1) ~ /^passed/) p += $i
      if ($(i + 1) ~ /^failed/) f += $i
      if ($(i + 1) ~ /^ignored/) g += $i
    }
    b++
  }
  END { print p + 0, f + 0, g + 0, b + 0 }' "$log")
# A binary that did not build or crashed prints no result line: cargo's status says so.
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi
echo "test binaries: $binaries, wall time: $(( $(date +%s) - start )) s"
echo "$passed passed, $failed failed"
exit "$status"
