#!/usr/bin/env bash
# keel against plain rpmbuild on real Azure Linux packages, whole process, one run each:
#   - keel: a cold `keel -j 2 build` of the packages (an empty store: the carried macro
#     packages are built too, every build sandboxed and stored);
#   - plain: `rpmbuild -ba` of each package, one at a time, with the same macro files,
#     defines, rpmrc and /bin/sh (bash), and Azure Linux's helpers installed under
#     /usr/lib/rpm the way a user would copy them there by hand (here in a private mount
#     namespace, so the host is not touched); `--nodeps`, as keel's builds (the host's rpm
#     database knows none of its Debian packages); rpm's default `%_smp_mflags` (every core).
# Then a no-op `keel build`, and the edit of one package's spec (a changelog-only change:
# the package rebuilds and cuts off).
#
# Usage: benches/azl-vs-rpmbuild.sh WORK [PACKAGE...]
#   WORK is the directory benches/azl-build.sh was run with (WORK=... ): its tree copy,
#   its built carried packages, graph.json and outcomes.tsv. Without packages: every package that
#   built there and needs no package of the tree but the carried ones (a leaf on the host).
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(realpath "${1:?usage: benches/azl-vs-rpmbuild.sh WORK [PACKAGE...]}")
shift
keel=$(realpath "${CARGO_TARGET_DIR:-target}")/release/keel
tree=$work/tree
k() { "$keel" --store "$work/$1" -C "$tree" "${@:2}"; }
if [ $# -eq 0 ]; then
    # Built, and needing no package of the tree but the carried ones (graph.json's edges).
    mapfile -t pkgs < <(python3 -c '
import json, sys
built = [l.split("\t")[0] for l in open(sys.argv[1]) if l.split("\t")[1] == "built"]
carried = {"azurelinux-rpm-macros", "lua-rpm-macros"}
deps = {}
for e in json.load(open(sys.argv[2]))["edges"]:
    deps.setdefault(e["from"], set()).add(e["to"])
print("\n".join(p for p in built if not deps.get(p, set()) - carried - {p}))
' "$work/outcomes.tsv" "$work/graph.json")
else
    pkgs=("$@")
fi
echo "packages: ${#pkgs[@]}"
ms() { local s e; s=$(date +%s%N); "$@"; e=$(date +%s%N); echo $(((e - s) / 1000000)); }

# keel, cold.
rm -rf "$work/cold-store"
keel_cold() { k cold-store -j 2 build -k "${pkgs[@]}" >"$work/cold.out" 2>"$work/cold.err"; }
keel_ms=$(ms keel_cold)
tail -3 "$work/cold.err"

# Plain rpmbuild, serial. The carried packages' payloads over a copy of the host's rpm
# configuration, bound over /usr/lib/rpm in a private mount namespace.
plain=$work/plain
rm -rf "$plain"
mkdir -p "$plain/rpmconf" "$plain/logs"
cp -a /usr/lib/rpm/. "$plain/rpmconf/"
for r in "$tree"/out/RPMS/noarch/{azurelinux-rpm-macros,azurelinux-check-macros,lua-rpm-macros}-[0-9]*.rpm; do
    (cd "$plain" && rpm2cpio "$r" | cpio -idm --quiet './usr/lib/rpm/*')
done
cp -a "$plain/usr/lib/rpm/." "$plain/rpmconf/"
mapfile -t args < <(python3 - "$tree/keel.toml" "$tree" <<'EOF'
import sys, glob, tomllib
cfg = tomllib.load(open(sys.argv[1], "rb"))
tree = sys.argv[2]
out = []
for pat in cfg["specs"]["macro_files"]:
    for f in sorted(glob.glob(f"{tree}/{pat}")):
        out += ["--load", f]
for k, v in cfg["specs"]["defines"].items():
    out += ["--define", f"{k} {v}"]
out += ["--rcfile", "/usr/lib/rpm/rpmrc:" + cfg["build"]["rcfile"]]
if not cfg["build"].get("check", True):
    out += ["--nocheck"]
print("\n".join(out))
EOF
)
plain_one() {
    local p=$1 spec dir top
    spec=$(find "$tree/SPECS" "$tree/SPECS-EXTENDED" -maxdepth 2 -name "$p.spec" | head -1)
    dir=$(dirname "$spec")
    top=$plain/top/$p
    mkdir -p "$top/SOURCES"
    cp -r "$dir/." "$top/SOURCES/"
    for f in $(python3 -c 'import json,sys; print(" ".join(json.load(open(sys.argv[1]))["Signatures"]))' "$dir/$p.signatures.json" 2>/dev/null); do
        [ -e "$top/SOURCES/$f" ] || cp "$MIRROR/$f" "$top/SOURCES/" 2>/dev/null || true
    done
    bwrap --dev-bind / / --bind "$plain/rpmconf" /usr/lib/rpm --ro-bind /usr/bin/bash /usr/bin/dash \
        rpmbuild --nodeps "${args[@]}" --define "_topdir $top" -ba "$spec" >"$plain/logs/$p.log" 2>&1 ||
        echo "plain rpmbuild failed: $p (see $plain/logs/$p.log)" >&2
}
MIRROR=$(sed -n 's|^mirrors = \["file://\(.*\)"\]|\1|p' "$tree/keel.toml")
plain_all() { for p in "${pkgs[@]}"; do plain_one "$p"; done; }
plain_ms=$(ms plain_all)

keel_noop() { k cold-store -j 2 build -k "${pkgs[@]}" >/dev/null 2>&1; }
noop_ms=$(ms keel_noop)
echo "keel -j 2 cold:          $keel_ms ms"
echo "plain rpmbuild, serial:  $plain_ms ms"
python3 -c "print(f'ratio:                   {$keel_ms / $plain_ms:.2f}')"
echo "keel no-op:              $noop_ms ms"
