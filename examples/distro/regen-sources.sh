#!/bin/sh
# Regenerates every source tarball of the example distribution from src/, bit for bit:
# sorted names, owner 0/0, mtime 0, GNU tar format, gzip without name or time stamp.
# Then rewrites each <pkg>.signatures.json from the files in its spec directory.
#
#   ./regen-sources.sh          regenerate tarballs and signatures
#   ./regen-sources.sh --check  regenerate into a scratch directory and fail if anything
#                               committed differs (what CI runs)
set -eu
cd "$(dirname "$0")"
check=0
[ "${1:-}" = "--check" ] && check=1

# src/<name>-<version>/ goes to SPECS/<name>/<name>-<version>.tar.gz.
pack() {
    dir=$1 out=$2
    (cd src && tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 \
        --mode='u+rwX,go+rX,go-w' --format=gnu -c "$dir") | gzip -n -9 >"$out"
}

sign() {
    specdir=$1
    {
        printf '{\n "Signatures": {'
        first=1
        for f in $(ls "$specdir" | LC_ALL=C sort); do
            case $f in *.spec | *.signatures.json) continue ;; esac
            if [ $first = 1 ]; then printf '\n'; else printf ',\n'; fi
            first=0
            printf '  "%s": "%s"' "$f" "$(sha256sum "$specdir/$f" | cut -d' ' -f1)"
        done
        if [ $first = 1 ]; then printf '}\n}\n'; else printf '\n }\n}\n'; fi
    }
}

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
status=0
for src in src/*/; do
    dir=$(basename "$src")
    pkg=${dir%-*}
    if [ ! -f "SPECS/$pkg/$pkg.spec" ]; then
        echo "regen-sources: no SPECS/$pkg/$pkg.spec for src/$dir" >&2
        exit 1
    fi
    if [ $check = 1 ]; then
        pack "$dir" "$scratch/$dir.tar.gz"
        if ! cmp -s "$scratch/$dir.tar.gz" "SPECS/$pkg/$dir.tar.gz"; then
            echo "regen-sources: SPECS/$pkg/$dir.tar.gz differs from src/$dir" >&2
            status=1
        fi
    else
        pack "$dir" "SPECS/$pkg/$dir.tar.gz"
    fi
done
for specdir in SPECS/*/; do
    specdir=${specdir%/}
    pkg=$(basename "$specdir")
    sign "$specdir" >"$scratch/sig.json"
    if [ $check = 1 ]; then
        if ! cmp -s "$scratch/sig.json" "$specdir/$pkg.signatures.json"; then
            echo "regen-sources: $specdir/$pkg.signatures.json is not up to date" >&2
            status=1
        fi
    else
        cp "$scratch/sig.json" "$specdir/$pkg.signatures.json"
    fi
done
exit $status
