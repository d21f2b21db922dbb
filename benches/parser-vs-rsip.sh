#!/usr/bin/env bash
# Parser cost per message: umproxy's sip-message vs the rsip crate vs a bare
# memchr line scan (the floor), measured side by side in one criterion run.
# Prints a markdown table (ns per message, medians) and, last, one line:
#   parser speedup vs rsip: min=X median=Y (floor ratio Z)
# where speedup = rsip / umproxy per message and the floor ratio is the
# median of umproxy / memchr.
set -euo pipefail
cd "$(dirname "$0")/.."

target_dir=${CARGO_TARGET_DIR:-$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')}
rm -rf "$target_dir/criterion"
cargo bench -p umproxy-benches --bench parse -- "$@" >&2

python3 - "$target_dir/criterion" <<'PY'
import json, os, statistics, sys
root = sys.argv[1]
names = ["invite_sdp_764", "ok_200_record_route", "register_auth", "bye", "invite_10via_8rr"]
def ns(group, fn):
    with open(os.path.join(root, group, fn, "new", "estimates.json")) as f:
        return json.load(f)["median"]["point_estimate"]
speedups, floors = [], []
print("| message | bytes | umproxy ns | rsip ns | memchr ns | vs rsip | vs memchr |")
print("|---|---:|---:|---:|---:|---:|---:|")
def size(group):
    with open(os.path.join(root, group, "umproxy", "new", "benchmark.json")) as f:
        return json.load(f)["throughput"]["Bytes"]
for n in names:
    u, r, m = ns(n, "umproxy"), ns(n, "rsip"), ns(n, "memchr_floor")
    speedups.append(r / u)
    floors.append(u / m)
    print(f"| {n} | {size(n)} | {u:.0f} | {r:.0f} | {m:.1f} | {r / u:.1f}x | {u / m:.1f}x |")
print()
print(f"parser speedup vs rsip: min={min(speedups):.1f} median={statistics.median(speedups):.1f} "
      f"(floor ratio {statistics.median(floors):.1f})")
PY
