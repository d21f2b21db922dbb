#!/usr/bin/env bash
# Proxy CPU per call: umproxy vs Kamailio (tm + rr + sl + maxfwd, -x tlsf),
# side by side in one run on this machine (DESIGN.md §8, issue #4).
#
# Each proxy in turn carries the same SIPp traffic — INVITE/(100)/180/200/ACK/
# BYE/200 through the record-routing proxy to one SIPp UAS — at fixed call
# rates, over UDP and over TCP (SIPp -t t1: one connection). For every run we
# record the proxy's CPU time (user+sys of all its threads and, for Kamailio,
# of all its forked workers, from /proc/PID/stat) over the traffic window plus
# SETTLE_S, and SIPp's counts of calls attempted, successful, failed and
# retransmissions (UAC and UAS). Runs alternate proxies (kamailio, umproxy,
# kamailio, …) so that background load hits both alike.
#
# Prints a table (medians of RUNS runs) and, last, exactly one line:
#   proxy cpu ratio vs kamailio: udp=X tcp=Y tls=n/a
# where X = umproxy µs/call ÷ Kamailio µs/call at the highest rate both
# carried cleanly (every run: all calls successful, none failed at the UAC
# nor at the UAS), or n/a.
# TLS is n/a: the packaged SIPp has no TLS.
#
# Environment (defaults in brackets; the defaults take about 9 minutes):
#   RATES ["2000 4000"]   calls/s        DURATION_S [15]  seconds per run
#   RUNS [3]              runs per point TRANSPORTS ["udp tcp"]
#   PROXIES ["kamailio umproxy"]         HOLD_MS [0]      ACK→BYE pause
#   SETTLE_S [3]  seconds of CPU counted after the last call (timers, purge)
#   PROXY_PORT [25060] UAS_PORT [25070] UAC_PORT [25080] ADMIN_PORT [25090]
#   KAMAILIO [kamailio] SIPP [sipp] KAMAILIO_SHM_MB [1024] KAMAILIO_PKG_MB [64]
#   SKIP_BUILD [0]  1 = use the umproxy binary already built
#   OUT [a new temporary directory]  logs, SIPp CSVs and results.tsv
set -euo pipefail
cd "$(dirname "$0")/.."

RATES=${RATES:-"2000 4000"}
DURATION_S=${DURATION_S:-15}
RUNS=${RUNS:-3}
TRANSPORTS=${TRANSPORTS:-"udp tcp"}
PROXIES=${PROXIES:-"kamailio umproxy"}
HOLD_MS=${HOLD_MS:-0}
SETTLE_S=${SETTLE_S:-3}
PROXY_PORT=${PROXY_PORT:-25060}
UAS_PORT=${UAS_PORT:-25070}
UAC_PORT=${UAC_PORT:-25080}
ADMIN_PORT=${ADMIN_PORT:-25090}
KAMAILIO=${KAMAILIO:-kamailio}
SIPP=${SIPP:-sipp}
KAMAILIO_SHM_MB=${KAMAILIO_SHM_MB:-1024}
KAMAILIO_PKG_MB=${KAMAILIO_PKG_MB:-64}
SKIP_BUILD=${SKIP_BUILD:-0}
OUT=${OUT:-$(mktemp -d -t umproxy-compare.XXXXXX)}
mkdir -p "$OUT"

SMOKE_CALLS=10
CLK_TCK=$(getconf CLK_TCK)
BENCH_NAME=compare
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"

for tool in "$KAMAILIO" "$SIPP" python3 ss; do
    command -v "$tool" >/dev/null || die "$tool not found in PATH"
done
for p in "$PROXY_PORT" "$UAS_PORT" "$UAC_PORT" "$ADMIN_PORT"; do
    if [ -n "$(ss -Hlntu "sport = :$p" 2>/dev/null)" ]; then
        die "port $p is already in use on this machine (set PROXY_PORT/UAS_PORT/UAC_PORT/ADMIN_PORT)"
    fi
done

# --- umproxy binary ----------------------------------------------------------
umproxy_binary

# --- process bookkeeping: only what this script started is ever stopped -----
proxy_pid=""
uas_pid=""
cleanup() {
    stop_pid "$uas_pid" TERM
    stop_pid "$proxy_pid" TERM
}
trap cleanup EXIT
trap 'exit 130' INT TERM


# Machine-wide UDP datagrams dropped because a receive buffer was full
# (RcvbufErrors of /proc/net/snmp): loss that SIPp then sees as
# retransmissions or failed calls.
udp_rcvbuf_errors() {
    awk '$1 == "Udp:" && $2 ~ /^[0-9]+$/ { print $6 }' /proc/net/snmp
}

# Datagrams dropped so far by the UDP sockets bound to 127.0.0.1:$1 (the
# `drops` column of /proc/net/udp): the proxy did not read fast enough.
udp_socket_drops() {
    awk -v port="$(printf '%04X' "$1")" \
        '$2 == "0100007F:" port { n += $NF } END { print n + 0 }' /proc/net/udp
}

sipp_t() { [ "$1" = udp ] && echo u1 || echo t1; }

wait_listening() { # transport port pid what
    local i
    for i in $(seq 100); do
        kill -0 "$3" 2>/dev/null || return 1
        if [ "$1" = udp ]; then
            [ -n "$(ss -Hlnu "sport = :$2" 2>/dev/null)" ] && return 0
        else
            [ -n "$(ss -Hlnt "sport = :$2" 2>/dev/null)" ] && return 0
        fi
        sleep 0.1
    done
    return 1
}

start_proxy() { # proxy transport dir
    local proxy=$1 transport=$2 dir=$3
    if [ "$proxy" = kamailio ]; then
        "$KAMAILIO" -f benches/kamailio/kamailio.cfg -DD -E -x tlsf \
            -m "$KAMAILIO_SHM_MB" -M "$KAMAILIO_PKG_MB" \
            -l "udp:127.0.0.1:$PROXY_PORT" -l "tcp:127.0.0.1:$PROXY_PORT" \
            -A "UAS_PORT=$UAS_PORT" </dev/null >"$dir/proxy.log" 2>&1 &
    else
        sed -e "s/127\.0\.0\.1:25060/127.0.0.1:$PROXY_PORT/" \
            -e "s/127\.0\.0\.1:25090/127.0.0.1:$ADMIN_PORT/" \
            -e "s/127\.0\.0\.1:25070;transport=udp/127.0.0.1:$UAS_PORT;transport=$transport/" \
            benches/umproxy/umproxy.toml >"$dir/umproxy.toml"
        "$UMPROXY" check-config "$dir/umproxy.toml" >"$dir/proxy.log" 2>&1 ||
            die "umproxy rejects the bench config: $(cat "$dir/proxy.log")"
        "$UMPROXY" run "$dir/umproxy.toml" --grace-s 1 </dev/null >>"$dir/proxy.log" 2>&1 &
    fi
    proxy_pid=$!
    wait_listening udp "$PROXY_PORT" "$proxy_pid" && wait_listening tcp "$PROXY_PORT" "$proxy_pid" ||
        die "$proxy did not start listening on 127.0.0.1:$PROXY_PORT; log $dir/proxy.log:
$(tail -20 "$dir/proxy.log")"
    sleep 0.5 # let Kamailio's workers finish their child_init
}

stop_proxy() { stop_pid "$proxy_pid" TERM; proxy_pid=""; }

# One measured (or smoke) point; its result row goes to $dir/row.tsv.
# args: proxy transport rate calls dir
run_point() {
    local proxy=$1 transport=$2 rate=$3 calls=$4 dir=$5 t rc c0 c1 d0 d1 pd cap
    t=$(sipp_t "$transport")
    mkdir -p "$dir"
    start_proxy "$proxy" "$transport" "$dir"
    cap=$((calls / rate + 30))
    "$SIPP" -sf benches/scenarios/uas.xml -i 127.0.0.1 -p "$UAS_PORT" -t "$t" \
        -mp $((UAS_PORT + 1000)) -m "$calls" -timeout "$((cap + 15))s" -nostdin \
        -trace_stat -stf "$dir/uas_stat.csv" -fd 1 \
        -trace_err -error_file "$dir/uas_err.log" \
        </dev/null >"$dir/uas.out" 2>&1 &
    uas_pid=$!
    wait_listening "$transport" "$UAS_PORT" "$uas_pid" || die "SIPp UAS did not start; see $dir/uas.out"
    d0=$(udp_rcvbuf_errors)
    c0=$(cpu_ticks "$proxy_pid")
    rc=0
    "$SIPP" 127.0.0.1:"$PROXY_PORT" -sf benches/scenarios/uac.xml -s bench -i 127.0.0.1 \
        -p "$UAC_PORT" -t "$t" -mp $((UAC_PORT + 1000)) -r "$rate" -m "$calls" -d "$HOLD_MS" \
        -recv_timeout 5000 -timeout "${cap}s" -nostdin \
        -trace_stat -stf "$dir/uac_stat.csv" -fd 1 \
        -trace_err -error_file "$dir/uac_err.log" \
        -trace_screen -screen_file "$dir/uac_screen.log" \
        </dev/null >"$dir/uac.out" 2>&1 || rc=$?
    sleep "$SETTLE_S"
    c1=$(cpu_ticks "$proxy_pid")
    d1=$(udp_rcvbuf_errors)
    pd=$(udp_socket_drops "$PROXY_PORT")
    if ! kill -0 "$proxy_pid" 2>/dev/null; then
        local status=0
        wait "$proxy_pid" || status=$?
        echo "$proxy exited during the run with status $status$([ "$status" -gt 128 ] &&
            echo " (signal $(kill -l $((status - 128))))") (log $dir/proxy.log)" >>"$dir/interrupted"
    fi
    stop_pid "$uas_pid" TERM
    uas_pid=""
    stop_proxy
    python3 - "$dir" "$proxy" "$transport" "$rate" "$calls" "$((c1 - c0))" "$CLK_TCK" "$rc" "$((d1 - d0))" "$pd" <<'PY'
import csv, os, sys
d, proxy, transport, rate, calls, ticks, clk, rc, drops, proxy_drops = sys.argv[1:]
def last_row(name):
    path = os.path.join(d, name)
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f, delimiter=";"))
    except OSError:
        return {}
    if len(rows) < 2:
        return {}
    return dict(zip(rows[0], rows[-1]))
uac, uas = last_row("uac_stat.csv"), last_row("uas_stat.csv")
num = lambda r, k: int(float(r.get(k, "0") or 0))
attempted = num(uac, "TotalCallCreated")
ok = num(uac, "SuccessfulCall(C)")
failed = num(uac, "FailedCall(C)")
# The UAS fails a call of its own when a message arrives out of order or
# twice in a new form (e.g. BYE before ACK): SIPp answers the BYE, so the UAC
# still counts the call as successful.
failed_uas = num(uas, "FailedCall(C)")
r_uac, r_uas = num(uac, "Retransmissions(C)"), num(uas, "Retransmissions(C)")
cpu_us = int(ticks) * 1_000_000 / int(clk)
per_call = cpu_us / ok if ok else float("nan")
row = [proxy, transport, rate, calls, attempted, ok, failed, r_uac, r_uas,
       f"{cpu_us:.0f}", f"{per_call:.1f}", rc, drops, failed_uas, proxy_drops]
with open(os.path.join(d, "row.tsv"), "w") as f:
    f.write("\t".join(map(str, row)) + "\n")
if attempted < int(calls):
    with open(os.path.join(d, "interrupted"), "a") as f:
        f.write(f"SIPp UAC ended after {attempted} of {calls} calls (exit {rc})\n")
PY
}

# run_point, again (up to 3 tries) if something outside ended a process of the run early
# (another user's `pkill sipp` on a shared machine): the proxy exited, or the
# UAC stopped before creating all its calls. The first try's files are kept.
measure() { # proxy transport rate calls dir
    local try
    for try in 1 2 3; do
        run_point "$@"
        [ -f "$5/interrupted" ] || return 0
        log "  run interrupted: $(cat "$5/interrupted")"
        mv "$5" "$5.interrupted-$try"
    done
    die "$1 over $2 at $3 calls/s was interrupted three times; see $5.interrupted-*"
}

HEADER="proxy\ttransport\trate\tcalls\tattempted\tsuccessful\tfailed\tretrans_uac\tretrans_uas\tcpu_us\tus_per_call\tsipp_rc\tudp_rcvbuf_drops\tfailed_uas\tproxy_udp_drops"

# --- smoke: both proxies must complete SMOKE_CALLS calls on every transport --
log "results and logs in $OUT"
log "load before: $(uptime)"
for transport in $TRANSPORTS; do
    for proxy in $PROXIES; do
        dir=$OUT/smoke-$proxy-$transport
        measure "$proxy" "$transport" 10 "$SMOKE_CALLS" "$dir"
        row=$(cat "$dir/row.tsv")
        IFS=$'\t' read -r _ _ _ _ _ ok failed _ <<<"$row"
        if [ "$ok" != "$SMOKE_CALLS" ]; then
            die "smoke test failed: $proxy over $transport completed $ok of $SMOKE_CALLS calls ($failed failed).
  SIPp UAC errors: $dir/uac_err.log
$(head -c 1500 "$dir/uac_err.log" 2>/dev/null || true)
  proxy log: $dir/proxy.log
$(tail -10 "$dir/proxy.log")"
        fi
        log "smoke ok: $proxy over $transport ($ok/$SMOKE_CALLS calls)"
    done
done

# --- measurement --------------------------------------------------------------
printf "$HEADER\n" >"$OUT/results.tsv"
for transport in $TRANSPORTS; do
    for rate in $RATES; do
        calls=$((rate * DURATION_S))
        for run in $(seq "$RUNS"); do
            for proxy in $PROXIES; do
                dir=$OUT/$transport-$rate-$run-$proxy
                log "$proxy $transport ${rate}/s run $run/$RUNS: $calls calls"
                measure "$proxy" "$transport" "$rate" "$calls" "$dir"
                row=$(cat "$dir/row.tsv")
                printf '%s\n' "$row" >>"$OUT/results.tsv"
                IFS=$'\t' read -r _ _ _ _ att ok failed ru rs _ upc _ drops fuas pdrops <<<"$row"
                log "  -> $ok/$att ok, $failed failed (UAS: $fuas), retrans uac=$ru uas=$rs, UDP drops $drops (proxy socket $pdrops), ${upc} µs/call"
            done
        done
    done
done
log "load after: $(uptime)"

# --- report -------------------------------------------------------------------
python3 - "$OUT/results.tsv" "$TRANSPORTS" <<'PY'
import csv, statistics, sys
from collections import defaultdict
path, transports = sys.argv[1], sys.argv[2].split()
runs = defaultdict(list)
with open(path, newline="") as f:
    for r in csv.DictReader(f, delimiter="\t"):
        runs[(r["proxy"], r["transport"], int(r["rate"]))].append(r)
def clean(rs):
    return all(int(r["failed"]) == 0 and int(r["failed_uas"]) == 0
               and int(r["successful"]) == int(r["calls"]) for r in rs)
def med(rs, k):
    vals = [float(r[k]) for r in rs if r[k] != "nan"]
    return statistics.median(vals) if vals else float("nan")
print("| proxy | transport | calls/s | runs | µs CPU/call (median) | successful/attempted (sum) | failed UAC/UAS (sum) | retrans UAC+UAS (sum) | UDP drops all/proxy (sum) | clean |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
for (p, t, rate), rs in sorted(runs.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0])):
    ok = sum(int(r["successful"]) for r in rs)
    att = sum(int(r["attempted"]) for r in rs)
    fail = sum(int(r["failed"]) for r in rs)
    fail_uas = sum(int(r["failed_uas"]) for r in rs)
    rtx = sum(int(r["retrans_uac"]) + int(r["retrans_uas"]) for r in rs)
    drops = sum(int(r["udp_rcvbuf_drops"]) for r in rs)
    pdrops = sum(int(r["proxy_udp_drops"]) for r in rs)
    print(f"| {p} | {t} | {rate} | {len(rs)} | {med(rs, 'us_per_call'):.1f} | {ok}/{att} | {fail}/{fail_uas} | {rtx} | {drops}/{pdrops} | {'yes' if clean(rs) else 'NO'} |")
print()
print("umproxy ÷ kamailio µs/call by rate (clean or not): " + ", ".join(
    f"{t} {rate}/s={med(runs[('umproxy', t, rate)], 'us_per_call') / med(runs[('kamailio', t, rate)], 'us_per_call'):.2f}"
    for (p, t, rate) in sorted(runs, key=lambda k: (k[1], k[2]))
    if p == "umproxy" and ("kamailio", t, rate) in runs))
ratios = {}
for t in transports:
    both = [rate for (p, tt, rate) in runs if p == "umproxy" and tt == t
            and ("kamailio", t, rate) in runs
            and clean(runs[("umproxy", t, rate)]) and clean(runs[("kamailio", t, rate)])]
    if both:
        rate = max(both)
        u, k = med(runs[("umproxy", t, rate)], "us_per_call"), med(runs[("kamailio", t, rate)], "us_per_call")
        ratios[t] = f"{u / k:.2f}"
        print(f"{t}: at {rate} calls/s, umproxy {u:.1f} µs/call vs kamailio {k:.1f} µs/call")
    else:
        print(f"{t}: no rate carried cleanly by both proxies")
print(f"proxy cpu ratio vs kamailio: udp={ratios.get('udp', 'n/a')} tcp={ratios.get('tcp', 'n/a')} tls=n/a")
PY
