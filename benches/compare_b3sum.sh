#!/usr/bin/env bash
# Whole-process comparison of `keel store hash` with `b3sum` on a generated 1 GiB file, at
# the same thread count, in one run (issue 2: keel should reach at least 90% of b3sum's
# throughput), plus the peak RSS of `keel store add` and `keel store cat` of that file
# (both must stay under 64 MiB).
#
# Usage: benches/compare_b3sum.sh            (from anywhere in the repository)
# Environment:
#   ROUNDS=3       how many times to alternate the keel and b3sum runs; on a shared,
#                  noisy machine the median of the rounds' ratios is the number to quote
#   RUNS=10        timed runs per command per round (after 3 warmup runs)
#   TMPDIR         where the 1 GiB file and the store go (a real disk, not tmpfs)
#   KEEL           a keel binary to use instead of building one
#
# Needs hyperfine, b3sum, jq and GNU time (Debian: hyperfine b3sum jq time).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
rounds=${ROUNDS:-3}
runs=${RUNS:-10}

for tool in hyperfine b3sum jq /usr/bin/time; do
    command -v "$tool" >/dev/null || {
        echo "error: $tool is needed (Debian: apt-get install hyperfine b3sum jq time)" >&2
        exit 1
    }
done

if [[ -z ${KEEL:-} ]]; then
    (cd "$root" && cargo build --release --locked --bin keel)
    KEEL=${CARGO_TARGET_DIR:-$root/target}/release/keel
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/keel-compare-b3sum.XXXXXX")
trap 'rm -rf "$work"' EXIT
file=$work/big.bin
store=$work/store
# Run from the work directory so that no keel.toml above the caller's directory applies.
cd "$work"

echo "== generating a 1 GiB file in $work"
head -c 1073741824 /dev/urandom >"$file"
sync "$file"

echo "== checking that both print the same digest"
keel_line=$("$KEEL" store hash "$file")
b3_line=$(b3sum "$file")
if [[ $keel_line != "$b3_line" ]]; then
    printf 'error: digests differ\n  keel:  %s\n  b3sum: %s\n' "$keel_line" "$b3_line" >&2
    exit 1
fi
echo "$keel_line"

# seconds (median) of command $2 in hyperfine's JSON $1
median() { jq -r ".results[$2].median" "$1"; }
min() { jq -r ".results[$2].min" "$1"; }
# CPU seconds (user + system, mean): a second view that load from other processes
# disturbs less than wall time
cpu() { jq -r ".results[$2].user + .results[$2].system" "$1"; }

declare -A ratios
for threads in 1 2; do
    ratios[$threads]=""
    for round in $(seq 1 "$rounds"); do
        echo "== $threads thread(s), round $round of $rounds"
        json=$work/hyperfine-$threads-$round.json
        # Alternate which command goes first, so neither always runs on the quieter side
        # of a burst of load from elsewhere.
        keel_cmd="$KEEL -j$threads store hash $file"
        b3_cmd="b3sum --num-threads $threads $file"
        if ((round % 2)); then
            cmds=("$keel_cmd" "$b3_cmd") names=("keel -j$threads" "b3sum --num-threads $threads") k=0 b=1
        else
            cmds=("$b3_cmd" "$keel_cmd") names=("b3sum --num-threads $threads" "keel -j$threads") k=1 b=0
        fi
        hyperfine -N --warmup 3 --runs "$runs" --style basic --export-json "$json" \
            -n "${names[0]}" -n "${names[1]}" "${cmds[0]}" "${cmds[1]}" >/dev/null
        kt=$(median "$json" $k)
        bt=$(median "$json" $b)
        kmin=$(min "$json" $k)
        bmin=$(min "$json" $b)
        ratio=$(jq -n "$bt / $kt")
        ratios[$threads]+="$ratio "
        printf '  keel  %.3f s median (%.3f min)  %.2f GiB/s\n' "$kt" "$kmin" "$(jq -n "1 / $kt")"
        printf '  b3sum %.3f s median (%.3f min)  %.2f GiB/s\n' "$bt" "$bmin" "$(jq -n "1 / $bt")"
        kcpu=$(cpu "$json" $k)
        bcpu=$(cpu "$json" $b)
        printf '  keel/b3sum throughput: %.1f%% (on medians), %.1f%% (on minimums)\n' \
            "$(jq -n "100 * $ratio")" "$(jq -n "100 * $bmin / $kmin")"
        printf '  CPU time (user+sys): keel %.3f s, b3sum %.3f s, b3sum/keel %.1f%%\n' \
            "$kcpu" "$bcpu" "$(jq -n "100 * $bcpu / $kcpu")"
    done
done

echo "== summary: keel/b3sum throughput, median of $rounds rounds (target: at least 90%)"
for threads in 1 2; do
    # shellcheck disable=SC2086
    med=$(printf '%s\n' ${ratios[$threads]} | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    printf '  -j%s vs --num-threads %s: %.1f%%   (rounds: %s)\n' "$threads" "$threads" \
        "$(jq -n "100 * $med")" "${ratios[$threads]% }"
done

echo "== peak RSS (target: under 64 MiB)"
rss_add=$( { /usr/bin/time -f %M "$KEEL" --store "$store" store add "$file" >"$work/added"; } 2>&1 | tail -n1)
digest=$(cut -d' ' -f1 "$work/added")
rss_cat=$( { /usr/bin/time -f %M "$KEEL" --store "$store" store cat "$digest" >/dev/null; } 2>&1 | tail -n1)
printf '  keel store add (1 GiB file): %s KiB = %.1f MiB\n' "$rss_add" "$(jq -n "$rss_add / 1024")"
printf '  keel store cat (1 GiB blob): %s KiB = %.1f MiB\n' "$rss_cat" "$(jq -n "$rss_cat / 1024")"
