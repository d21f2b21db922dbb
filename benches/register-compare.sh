#!/usr/bin/env bash
# REGISTER with digest authentication: umproxy vs Kamailio, side by side in
# one run on this machine (DESIGN.md §8, issue #5).
#
# SIPp registers USERS distinct users (user0001…, each its own AOR and
# Contact, all with password "secret") once each: REGISTER → 401 → REGISTER
# with MD5 credentials → 200, at a fixed rate of REGISTER transactions per
# second (two per registration). Proxies:
#   kamailio       registrar + usrloc (db_mode 0, memory) + auth with
#                  pv_auth_check against the fixed password (no database),
#                  benches/register/kamailio-register.cfg, -x tlsf
#   kamailio-redis the same with usrloc writing through to a redis-server
#                  (db_redis, db_mode 1) this script starts: Kamailio's
#                  counterpart of umproxy-redis, redis-server's CPU counted
#                  with Kamailio's (needs Debian's kamailio-redis-modules)
#   umproxy        [registrar] store = "embedded" persisted to a file in OUT
#                  (the default write-behind: memory first, changed AORs
#                  committed with fsync every 100 ms), directory file with every
#                  user's HA1, [auth] algorithms = ["MD5"] (one challenge, as
#                  Kamailio sends)
#   umproxy-sync   the same with flush_interval_ms = 0 (write-through: each 200
#                  waits for its fsync; concurrent REGISTERs share one), the
#                  durability Kamailio's db_mode 0 does not offer
#   umproxy-2alg   the same with algorithms = ["MD5", "SHA-256"]: two
#                  challenges per 401 (SIPp answers only the first, so MD5 goes
#                  first; umproxy's default order, SHA-256 first, SIPp cannot
#                  answer)
#   umproxy-tmpfs  umproxy with the registrations file on a tmpfs (TMPFS_DIR):
#                  the same work minus the disk (not run by default: with
#                  write-behind the disk's share is small)
#   umproxy-redis  store = "redis" on a redis-server this script starts on
#                  REDIS_PORT (no persistence); its CPU is counted with
#                  umproxy's (Kamailio's store is in-process)
# Each run starts its proxy fresh, so every registration adds a binding.
# Runs alternate proxies (kamailio, umproxy, …) so background load hits all.
#
# Reports per proxy and rate: successful/failed registrations, retransmissions,
# CPU µs per successful registration (both transactions; user+sys of the
# process tree from /proc/PID/stat, Kamailio's forked workers included), and
# for umproxy the VmRSS growth per binding (VmRSS after the run minus before,
# ÷ successful registrations). Last line:
#   register cpu ratio vs kamailio: embedded=X sync=S tmpfs=T 2alg=Y redis=Z redis-vs-kamailio-redis=W
# (a line per rate before it gives the same ratios at every rate)
# (umproxy ÷ Kamailio µs per registration at the highest rate every run of both
# carried cleanly — all registered, none failed — else n/a).
#
# Environment (defaults in brackets; the defaults take about 8 minutes):
#   RATES ["1000 4000 8000"]  REGISTER transactions/s (SIPp -r is half: registrations/s)
#   USERS [20000]  registrations per run       RUNS [1]  runs per point
#   PROXIES ["kamailio umproxy umproxy-sync umproxy-2alg umproxy-redis kamailio-redis"]
#     (umproxy-redis is skipped without redis-server, umproxy-tmpfs without a
#     writable TMPFS_DIR [/dev/shm])
#   SETTLE_S [3]  seconds of CPU counted after the last registration
#   PROXY_PORT [37160] UAC_PORT [37180] REDIS_PORT [37179]
#   KAMAILIO [kamailio] SIPP [sipp] REDIS_SERVER [redis-server]
#   KAMAILIO_SHM_MB [1024] KAMAILIO_PKG_MB [64]
#   SKIP_BUILD [0]  1 = use the umproxy binary already built (honours CARGO_TARGET_DIR)
#   OUT [a new temporary directory]  configs, logs, SIPp CSVs, results.tsv
set -euo pipefail
cd "$(dirname "$0")/.."

RATES=${RATES:-"1000 4000 8000"}
USERS=${USERS:-20000}
RUNS=${RUNS:-1}
PROXIES=${PROXIES:-"kamailio umproxy umproxy-sync umproxy-2alg umproxy-redis kamailio-redis"}
TMPFS_DIR=${TMPFS_DIR:-/dev/shm}
SETTLE_S=${SETTLE_S:-3}
PROXY_PORT=${PROXY_PORT:-37160}
UAC_PORT=${UAC_PORT:-37180}
REDIS_PORT=${REDIS_PORT:-37179}
KAMAILIO=${KAMAILIO:-kamailio}
SIPP=${SIPP:-sipp}
REDIS_SERVER=${REDIS_SERVER:-redis-server}
KAMAILIO_SHM_MB=${KAMAILIO_SHM_MB:-1024}
KAMAILIO_PKG_MB=${KAMAILIO_PKG_MB:-64}
SKIP_BUILD=${SKIP_BUILD:-0}
OUT=${OUT:-$(mktemp -d -t umproxy-register.XXXXXX)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

DOMAIN=bench.test
PASSWORD=secret
SMOKE=10
CLK_TCK=$(getconf CLK_TCK)
BENCH_NAME=register
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"

for tool in "$KAMAILIO" "$SIPP" python3 ss; do
    command -v "$tool" >/dev/null || die "$tool not found in PATH"
done
if [[ " $PROXIES " == *"-redis "* ]] && ! command -v "$REDIS_SERVER" >/dev/null; then
    log "no $REDIS_SERVER: skipping umproxy-redis and kamailio-redis"
    PROXIES=${PROXIES/umproxy-redis/}
    PROXIES=${PROXIES/kamailio-redis/}
fi
if [[ " $PROXIES " == *" kamailio-redis "* ]] && ! ls /usr/lib/*/kamailio/modules/db_redis.so >/dev/null 2>&1; then
    log "no Kamailio db_redis module (apt-get install kamailio-redis-modules): skipping kamailio-redis"
    PROXIES=${PROXIES/kamailio-redis/}
fi
TMPFS_RUN=""
if [[ " $PROXIES " == *" umproxy-tmpfs "* ]]; then
    if [ "$(stat -f -c %T "$TMPFS_DIR" 2>/dev/null)" = tmpfs ] &&
        TMPFS_RUN=$(mktemp -d "$TMPFS_DIR/umproxy-register.XXXXXX"); then
        :
    else
        log "no writable tmpfs at $TMPFS_DIR: skipping umproxy-tmpfs"
        PROXIES=${PROXIES/umproxy-tmpfs/}
    fi
fi
for p in "$PROXY_PORT" "$UAC_PORT" "$REDIS_PORT"; do
    [ -z "$(ss -Hlntu "sport = :$p" 2>/dev/null)" ] ||
        die "port $p is already in use (set PROXY_PORT/UAC_PORT/REDIS_PORT)"
done

# --- umproxy binary ------------------------------------------------------------
umproxy_binary

# --- users: SIPp injection file and umproxy directory (HA1s, no passwords) ----
# field1 is a whole [authentication] keyword: SIPp 3.6 cannot nest [field0]
# inside one (see benches/register/register.xml).
python3 - "$OUT" "$USERS" "$DOMAIN" "$PASSWORD" <<'PY'
import hashlib, sys
out, n, domain, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
with open(f"{out}/users.csv", "w") as csv, open(f"{out}/directory.toml", "w") as d:
    csv.write("SEQUENTIAL\n")
    for i in range(1, n + 1):
        user = f"user{i:04d}"
        csv.write(f"{user};[authentication username={user} password={password}]\n")
        a1 = f"{user}:{domain}:{password}".encode()
        d.write(f'[[user]]\nsip_address = "sip:{user}@{domain}"\n'
                f'ha1 = {{ md5 = "{hashlib.md5(a1).hexdigest()}", '
                f'sha256 = "{hashlib.sha256(a1).hexdigest()}" }}\n\n')
PY

# --- process bookkeeping: only what this script started is ever stopped -------
proxy_pid=""
redis_pid=""
cleanup() {
    stop_pid "$proxy_pid"
    stop_pid "$redis_pid"
    [ -z "$TMPFS_RUN" ] || rm -rf "$TMPFS_RUN"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

wait_udp() { # port pid
    local i
    for i in $(seq 100); do
        kill -0 "$2" 2>/dev/null || return 1
        [ -n "$(ss -Hlnu "sport = :$1" 2>/dev/null)" ] && return 0
        sleep 0.1
    done
    return 1
}

start_redis() { # dir
    "$REDIS_SERVER" --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
        --dir "$1" </dev/null >"$1/redis.log" 2>&1 &
    redis_pid=$!
    local i
    for i in $(seq 50); do
        [ -n "$(ss -Hlnt "sport = :$REDIS_PORT" 2>/dev/null)" ] && return 0
        sleep 0.1
    done
    die "redis-server did not start; see $1/redis.log"
}

start_proxy() { # proxy dir
    local proxy=$1 dir=$2 algs='["MD5"]' store
    if [ "$proxy" = kamailio ]; then
        "$KAMAILIO" -f benches/register/kamailio-register.cfg -DD -E -x tlsf \
            -m "$KAMAILIO_SHM_MB" -M "$KAMAILIO_PKG_MB" -l "udp:127.0.0.1:$PROXY_PORT" \
            -A "PASSWORD=\"$PASSWORD\"" </dev/null >"$dir/proxy.log" 2>&1 &
    elif [ "$proxy" = kamailio-redis ]; then
        start_redis "$dir"
        # usrloc checks its table version in the database at start-up.
        python3 - "$REDIS_PORT" <<'PY' || die "cannot write usrloc's table version to redis-server"
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
args = [b"HSET", b"version:entry::location", b"table_name", b"location", b"table_version", b"9"]
s.sendall(b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args))
reply = s.recv(64)
sys.exit(0 if reply.startswith(b":") else 1)
PY
        "$KAMAILIO" -f benches/register/kamailio-register.cfg -DD -E -x tlsf \
            -m "$KAMAILIO_SHM_MB" -M "$KAMAILIO_PKG_MB" -l "udp:127.0.0.1:$PROXY_PORT" \
            -A "PASSWORD=\"$PASSWORD\"" -A "REDIS_URL=\"redis://127.0.0.1:$REDIS_PORT/0\"" \
            </dev/null >"$dir/proxy.log" 2>&1 &
    else
        store="store = \"embedded\"
path = \"$dir/registrations.db\""
        [ "$proxy" = umproxy-2alg ] && algs='["MD5", "SHA-256"]'
        if [ "$proxy" = umproxy-tmpfs ]; then
            rm -f "$TMPFS_RUN/registrations.db"
            store="store = \"embedded\"
path = \"$TMPFS_RUN/registrations.db\""
        fi
        if [ "$proxy" = umproxy-sync ]; then
            store="$store
flush_interval_ms = 0"
        fi
        if [ "$proxy" = umproxy-redis ]; then
            start_redis "$dir"
            store="store = \"redis\"
redis_url = \"redis://127.0.0.1:$REDIS_PORT/\""
        fi
        cat >"$dir/umproxy.toml" <<EOF
# Written by benches/register-compare.sh ($proxy).
[[listen]]
transport = "udp"
address = "127.0.0.1:$PROXY_PORT"

[proxy]
domains = ["$DOMAIN"]

[registrar]
$store

[directory]
file = "$OUT/directory.toml"

[auth]
algorithms = $algs

# SIPp is one source address sending thousands of REGISTERs a second.
[limits]
source_rate = 0

[log]
format = "text"
level = "warn"
EOF
        "$UMPROXY" check-config "$dir/umproxy.toml" >"$dir/proxy.log" 2>&1 ||
            die "umproxy rejects the bench config: $(cat "$dir/proxy.log")"
        "$UMPROXY" run "$dir/umproxy.toml" --grace-s 1 </dev/null >>"$dir/proxy.log" 2>&1 &
    fi
    proxy_pid=$!
    wait_udp "$PROXY_PORT" "$proxy_pid" ||
        die "$proxy did not start on 127.0.0.1:$PROXY_PORT; log $dir/proxy.log:
$(tail -20 "$dir/proxy.log")"
    sleep 1 # Kamailio's child_init; umproxy loads the directory
}

# One run; its row goes to $dir/row.tsv.
run_point() { # proxy rate(transactions/s) registrations dir
    local proxy=$1 rate=$2 n=$3 dir=$4 rc=0 c0 c1 r0 r1 cap
    mkdir -p "$dir"
    start_proxy "$proxy" "$dir"
    r0=$(rss_kb "$proxy_pid")
    c0=$(cpu_ticks "$proxy_pid" "$redis_pid")
    cap=$((n * 2 / rate + 30))
    "$SIPP" 127.0.0.1:"$PROXY_PORT" -sf benches/register/register.xml \
        -inf "$OUT/users.csv" -auth_uri "$DOMAIN" -i 127.0.0.1 -p "$UAC_PORT" -t u1 \
        -r "$(python3 -c "print(max(1, round($rate / 2)))")" -m "$n" \
        -recv_timeout 5000 -timeout "${cap}s" -nostdin \
        -trace_stat -stf "$dir/uac_stat.csv" -fd 1 \
        -trace_err -error_file "$dir/uac_err.log" \
        </dev/null >"$dir/uac.out" 2>&1 || rc=$?
    sleep "$SETTLE_S"
    c1=$(cpu_ticks "$proxy_pid" "$redis_pid")
    r1=$(rss_kb "$proxy_pid")
    kill -0 "$proxy_pid" 2>/dev/null || echo "$proxy exited during the run (log $dir/proxy.log)" >"$dir/interrupted"
    stop_pid "$proxy_pid"; proxy_pid=""
    stop_pid "$redis_pid"; redis_pid=""
    python3 - "$dir" "$proxy" "$rate" "$n" "$((c1 - c0))" "$CLK_TCK" "$rc" "$r0" "$r1" <<'PY'
import csv, os, sys
d, proxy, rate, n, ticks, clk, rc, r0, r1 = sys.argv[1:]
try:
    with open(os.path.join(d, "uac_stat.csv"), newline="") as f:
        rows = list(csv.reader(f, delimiter=";"))
    last = dict(zip(rows[0], rows[-1])) if len(rows) > 1 else {}
except OSError:
    last = {}
num = lambda k: int(float(last.get(k, "0") or 0))
att, ok, failed, rtx = num("TotalCallCreated"), num("SuccessfulCall(C)"), num("FailedCall(C)"), num("Retransmissions(C)")
cpu_us = int(ticks) * 1_000_000 / int(clk)
per = cpu_us / ok if ok else float("nan")
if proxy.startswith("kamailio"):
    rss = "n/a"  # shared memory, counted in every worker: not comparable
else:
    rss = f"{(int(r1) - int(r0)) * 1024 / ok:.0f}" if ok else "nan"
row = [proxy, rate, n, att, ok, failed, rtx, f"{cpu_us:.0f}", f"{per:.1f}", r0, r1, rss, rc]
with open(os.path.join(d, "row.tsv"), "w") as f:
    f.write("\t".join(map(str, row)) + "\n")
if att < int(n):
    with open(os.path.join(d, "interrupted"), "a") as f:
        f.write(f"SIPp ended after {att} of {n} registrations (exit {rc})\n")
PY
}

HEADER="proxy\trate_tps\tusers\tattempted\tsuccessful\tfailed\tretrans\tcpu_us\tus_per_reg\trss0_kb\trss1_kb\trss_bytes_per_binding\tsipp_rc"

log "results and logs in $OUT"
log "load before: $(uptime)"
for proxy in $PROXIES; do
    dir=$OUT/smoke-$proxy
    run_point "$proxy" 20 "$SMOKE" "$dir"
    IFS=$'\t' read -r _ _ _ _ ok failed _ <"$dir/row.tsv"
    [ "$ok" = "$SMOKE" ] || die "smoke failed: $proxy registered $ok of $SMOKE users ($failed failed).
  SIPp errors ($dir/uac_err.log):
$(head -c 1500 "$dir/uac_err.log" 2>/dev/null || true)
  proxy log ($dir/proxy.log):
$(tail -10 "$dir/proxy.log")"
    log "smoke ok: $proxy ($ok/$SMOKE registrations)"
done

printf "$HEADER\n" >"$OUT/results.tsv"
for rate in $RATES; do
    for run in $(seq "$RUNS"); do
        for proxy in $PROXIES; do
            dir=$OUT/$rate-$run-$proxy
            log "$proxy ${rate} REGISTER/s run $run/$RUNS: $USERS registrations; load $(cut -d' ' -f1-3 /proc/loadavg)"
            run_point "$proxy" "$rate" "$USERS" "$dir"
            [ ! -f "$dir/interrupted" ] || log "  interrupted: $(cat "$dir/interrupted")"
            cat "$dir/row.tsv" >>"$OUT/results.tsv"
            IFS=$'\t' read -r _ _ _ att ok failed rtx _ per _ _ rss _ <"$dir/row.tsv"
            log "  -> $ok/$att registered, $failed failed, $rtx retrans, $per µs/registration, RSS $rss B/binding"
        done
    done
done
log "load after: $(uptime)"

python3 - "$OUT/results.tsv" <<'PY'
import csv, statistics, sys
from collections import defaultdict
runs = defaultdict(list)
with open(sys.argv[1], newline="") as f:
    for r in csv.DictReader(f, delimiter="\t"):
        runs[(r["proxy"], int(r["rate_tps"]))].append(r)
clean = lambda rs: all(int(r["failed"]) == 0 and int(r["successful"]) == int(r["users"]) for r in rs)
def med(rs, k):
    v = [float(r[k]) for r in rs if r[k] not in ("nan", "n/a")]
    return statistics.median(v) if v else float("nan")
print("| proxy | REGISTER/s | runs | µs CPU/registration (median) | successful/attempted | failed | retrans | RSS B/binding (median) | clean |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
for (p, rate), rs in sorted(runs.items(), key=lambda kv: (kv[0][1], kv[0][0])):
    rss = med(rs, "rss_bytes_per_binding")
    print(f"| {p} | {rate} | {len(rs)} | {med(rs, 'us_per_reg'):.1f} | "
          f"{sum(int(r['successful']) for r in rs)}/{sum(int(r['attempted']) for r in rs)} | "
          f"{sum(int(r['failed']) for r in rs)} | {sum(int(r['retrans']) for r in rs)} | "
          f"{'n/a' if rss != rss else f'{rss:.0f}'} | {'yes' if clean(rs) else 'NO'} |")
print()
# (name, umproxy variant, the Kamailio it is compared with)
variants = (("embedded", "umproxy", "kamailio"), ("sync", "umproxy-sync", "kamailio"),
            ("tmpfs", "umproxy-tmpfs", "kamailio"), ("2alg", "umproxy-2alg", "kamailio"),
            ("redis", "umproxy-redis", "kamailio"),
            ("redis-vs-kamailio-redis", "umproxy-redis", "kamailio-redis"))
for rate in sorted({r for (_, r) in runs}):
    parts = [f"{name}={med(runs[(proxy, rate)], 'us_per_reg') / med(runs[(base, rate)], 'us_per_reg'):.2f}"
             for name, proxy, base in variants if (proxy, rate) in runs and (base, rate) in runs]
    if parts:
        print(f"at {rate} REGISTER/s, cpu ratio: {' '.join(parts)}")
out = {}
for name, proxy, base in variants:
    both = [rate for (p, rate) in runs if p == proxy and (base, rate) in runs
            and clean(runs[(p, rate)]) and clean(runs[(base, rate)])]
    if both:
        rate = max(both)
        u, k = med(runs[(proxy, rate)], "us_per_reg"), med(runs[(base, rate)], "us_per_reg")
        out[name] = f"{u / k:.2f}"
        print(f"{proxy}: at {rate} REGISTER/s, {u:.1f} µs/registration vs {base} {k:.1f}")
print("register cpu ratio vs kamailio: " + " ".join(f"{name}={out.get(name, 'n/a')}" for name, _, _ in variants))
PY
