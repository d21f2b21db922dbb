# Shared by the side-by-side bench scripts (sourced, not run). The caller
# sets BENCH_NAME (the log prefix) and SKIP_BUILD before sourcing.

log() { printf '[%s %(%H:%M:%S)T] %s\n' "${BENCH_NAME:-bench}" -1 "$*" >&2; }
die() { log "ABORT: $*"; exit 1; }

# Stop one process this script started: the signal, up to 5 s of grace,
# then KILL. Nothing else is ever signalled.
stop_pid() { # pid [signal]
    local pid=$1 sig=${2:-TERM} i
    [ -n "$pid" ] || return 0
    kill -"$sig" "$pid" 2>/dev/null || return 0
    for i in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# Clock ticks of user+sys CPU of the process trees rooted at each PID given:
# every thread, every descendant (Kamailio forks its workers), and the times
# of children they have reaped.
cpu_ticks() {
    python3 - "$@" <<'PY'
import os, sys
stat, kids = {}, {}
for name in os.listdir("/proc"):
    if name.isdigit():
        try:
            with open(f"/proc/{name}/stat") as f:
                # Fields after "pid (comm) ": comm may hold spaces and parentheses.
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stat[int(name)] = fields
        kids.setdefault(int(fields[1]), []).append(int(name))
total, todo = 0, [int(p) for p in sys.argv[1:] if p]
while todo:
    pid = todo.pop()
    f = stat.get(pid)
    if f:
        # utime, stime, cutime, cstime: fields 14-17 of proc(5), 11-14 here.
        total += sum(int(x) for x in f[11:15])
        todo.extend(kids.get(pid, []))
print(total)
PY
}

# The release umproxy binary in $UMPROXY, built unless SKIP_BUILD=1
# (honours CARGO_TARGET_DIR).
umproxy_binary() {
    local target_dir
    target_dir=${CARGO_TARGET_DIR:-$(cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')}
    UMPROXY=$target_dir/release/umproxy
    if [ "${SKIP_BUILD:-0}" != 1 ]; then
        log "building umproxy (release)"
        cargo build --release -p umproxy >&2
    fi
    [ -x "$UMPROXY" ] || die "no umproxy binary at $UMPROXY (build with cargo build --release -p umproxy)"
}
