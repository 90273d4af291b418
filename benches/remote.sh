#!/usr/bin/env bash
# Machine A builds the example distribution from nothing with a read-write remote cache
# (a real nginx + WebDAV on loopback, emptied each round); machine B, a fresh store and its
# own copy of the tree, builds with the same remote read-only. Release binary, real rpmbuild,
# process start to exit. Prints each round and B's time as a share of A's, and the bytes B
# downloaded against the bytes of outputs it stored.
# Usage: benches/remote.sh [ROUNDS=3]   (needs root, nginx, rpmbuild, bwrap: make test installs them)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
cargo build --release --quiet --bin keel
keel=$(realpath "${CARGO_TARGET_DIR:-target}")/release/keel
work=$(mktemp -d)
ng=$work/nginx
cleanup() {
    [ -f "$ng/nginx.pid" ] && kill "$(cat "$ng/nginx.pid")" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$ng/root" "$ng/tmp" "$ng/logs"
chmod -R 777 "$work"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$ng/nginx.conf" <<CONF
pid $ng/nginx.pid;
error_log $ng/logs/error.log;
worker_processes 2;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path $ng/tmp/body;
    server {
        listen 127.0.0.1:$port;
        root $ng/root;
        client_max_body_size 0;
        dav_methods PUT DELETE;
        create_full_put_path on;
        dav_access user:rw group:rw all:r;
    }
}
CONF
nginx -p "$ng" -c "$ng/nginx.conf"
url=http://127.0.0.1:$port
"$keel" cache keygen "$work/ci.key" >"$work/trusted.pub"
ms() { local s e; s=$(date +%s%N); "$@" >/dev/null 2>&1; e=$(date +%s%N); echo $(((e - s) / 1000000)); }
for r in $(seq "$rounds"); do
    rm -rf "$ng/root"/* "$work"/a "$work"/b "$work"/sa "$work"/sb
    cp -r examples/distro "$work/a" && rm -rf "$work/a/out"
    cp -r "$work/a" "$work/b"
    a=$(ms "$keel" --store "$work/sa" -C "$work/a" build --remote-cache "$url" \
        --remote-read-write --remote-signing-key "$work/ci.key")
    b=$(ms "$keel" --store "$work/sb" -C "$work/b" build --remote-cache "$url" \
        --remote-trusted-keys "$work/trusted.pub")
    same=$(diff -r "$work/a/out" "$work/b/out" >/dev/null && echo "identical outputs" || echo "OUTPUTS DIFFER")
    echo "round $r: A (cold, uploading) $a ms, B (fresh store, remote warm) $b ms = $((b * 1000 / a / 10)).$((b * 1000 / a % 10))% of A; $same"
done
"$keel" --store "$work/sb" --json cache stats | python3 -c '
import json, sys
for name, t in json.load(sys.stdin)["tiers"].items():
    l = t["last"]
    ratio = l["bytes_down"] / max(l["output_bytes"], 1)
    print("B downloaded %d bytes for %d bytes of outputs (%.3fx), %d hits, %d misses"
          % (l["bytes_down"], l["output_bytes"], ratio, l["hits"], l["misses"]))
'
