#!/usr/bin/env bash
# ExUM: CPU per call of a call diverted to voice mail vs a plainly proxied
# call, both through umproxy in one run on this machine (DESIGN.md §8 target:
# diverted ≤ 1.2× plain; issue #6).
#
# One umproxy configuration for every mode (UDP + TCP listeners, domain
# bench.test, record_route, 127.0.0.1 trusted, a catch-all route to the callee
# UAS, a directory file with an `unsecured` UM dial plan whose one server,
# um.bench.test, is a SIPp UAS on TCP). The caller is a SIPp UAC on UDP
# (benches/exum/uac.xml: INVITE/(100)/(18x)/200/ACK/BYE/200) at a fixed rate:
#   plain      bench@remote.test → catch-all route → callee UAS over UDP
#              (the umproxy side of benches/compare.sh)
#   plain-tcp  the same with the route's next hop over TCP: the transport of
#              the diverted calls' UM leg, to tell ExUM's cost from TCP's
#   immediate  vm@bench.test, `forward_to_voicemail = true` → UM UAS over TCP
#   busy       busy@bench.test, registered (digest auth) at a UAS answering
#              486 over UDP → the proxy diverts to the UM UAS over TCP
# Each run starts the proxy fresh. Runs alternate modes so that background
# load hits all alike. CPU = user+sys of umproxy (all threads) from
# /proc/PID/stat, sampled once the UASes are up (and the busy callee
# registered) and again SETTLE_S after the UAC exits; ÷ successful calls.
#
# A smoke of SMOKE_CALLS calls per mode must all succeed first, else the
# script aborts with SIPp's errors and the proxy log ([log] level = "warn").
# Prints a table (medians of RUNS) and, last, exactly one line:
#   exum diverted/plain cpu ratio: immediate=X busy=Y
# (µs per call of the mode ÷ plain's, each at RATE where every run of both
# completed all calls with none failed, else n/a).
#
# Environment (defaults in brackets; the defaults take about 8 minutes):
#   RATE [300] calls/s   DURATION_S [20]   RUNS [4]   SETTLE_S [3]
#   MODES ["plain plain-tcp immediate busy"]   SMOKE_CALLS [10]
#   PROXY_PORT [37260] UAS_PORT [37270] UM_PORT [37275] UAC_PORT [37280]
#   REG_PORT [37285]   SIPP [sipp]
#   SKIP_BUILD [0]  1 = use the umproxy binary already built (honours CARGO_TARGET_DIR)
#   OUT [a new temporary directory]  configs, logs, SIPp CSVs, results.tsv
set -euo pipefail
cd "$(dirname "$0")/.."

RATE=${RATE:-300}
DURATION_S=${DURATION_S:-20}
RUNS=${RUNS:-4}
SETTLE_S=${SETTLE_S:-3}
MODES=${MODES:-"plain plain-tcp immediate busy"}
SMOKE_CALLS=${SMOKE_CALLS:-10}
PROXY_PORT=${PROXY_PORT:-37260}
UAS_PORT=${UAS_PORT:-37270}
UM_PORT=${UM_PORT:-37275}
UAC_PORT=${UAC_PORT:-37280}
REG_PORT=${REG_PORT:-37285}
SIPP=${SIPP:-sipp}
SKIP_BUILD=${SKIP_BUILD:-0}
OUT=${OUT:-$(mktemp -d -t umproxy-exum.XXXXXX)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

DOMAIN=bench.test
CLK_TCK=$(getconf CLK_TCK)
BENCH_NAME=exum
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"

for tool in "$SIPP" python3 ss; do
    command -v "$tool" >/dev/null || die "$tool not found in PATH"
done
for p in "$PROXY_PORT" "$UAS_PORT" "$UM_PORT" "$UAC_PORT" "$REG_PORT"; do
    [ -z "$(ss -Hlntu "sport = :$p" 2>/dev/null)" ] ||
        die "port $p is already in use (set PROXY_PORT/UAS_PORT/UM_PORT/UAC_PORT/REG_PORT)"
done

umproxy_binary

# --- directory: a user forwarding everything to voice mail, a user with voice
# mail whose phone is busy, one on-premises UM dial plan reached over TCP -----
BUSY_PASSWORD=secret
BUSY_HA1=$(printf '%s' "busy:$DOMAIN:$BUSY_PASSWORD" | md5sum | cut -d' ' -f1)
cat >"$OUT/directory.toml" <<EOF
# Written by benches/exum-compare.sh.
[[user]]
sip_address = "sip:vm@$DOMAIN"
line_uri = "tel:+15550200;ext=2200"
um_dial_plan = "dp-bench"
um_extension = "2200"
forward_to_voicemail = true

[[user]]
sip_address = "sip:busy@$DOMAIN"
line_uri = "tel:+15550201;ext=2201"
ha1 = { md5 = "$BUSY_HA1" }
um_dial_plan = "dp-bench"
um_extension = "2201"

[[um_dial_plan]]
name = "dp-bench"
security = "unsecured"
servers = [ { fqdn = "um.bench.test", address = "127.0.0.1:$UM_PORT" } ]
EOF
printf 'SEQUENTIAL\nbusy;[authentication username=busy password=%s];%s\n' \
    "$BUSY_PASSWORD" "$UAS_PORT" >"$OUT/busy.csv"

write_config() { # dir route-transport
    cat >"$1/umproxy.toml" <<EOF
# Written by benches/exum-compare.sh.
[[listen]]
transport = "udp"
address = "127.0.0.1:$PROXY_PORT"

[[listen]]
transport = "tcp"
address = "127.0.0.1:$PROXY_PORT"

[proxy]
domains = ["$DOMAIN"]
trusted_peers = ["127.0.0.1/32"]
record_route = true

[[route]]
match = "*"
next_hop = "sip:127.0.0.1:$UAS_PORT;transport=$2"

[registrar]
store = "embedded"
path = "$1/registrations.db"

[directory]
file = "$OUT/directory.toml"

[auth]
algorithms = ["MD5"]

[log]
format = "text"
level = "warn"
EOF
}

# --- processes: only what this script started is ever stopped ----------------
proxy_pid=""
uas_pid=""
um_pid=""
cleanup() {
    stop_pid "$uas_pid"
    stop_pid "$um_pid"
    stop_pid "$proxy_pid"
}
trap cleanup EXIT
trap 'exit 130' INT TERM


wait_port() { # udp|tcp port pid
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

start_uas() { # scenario transport port name dir calls cap → pid in $started
    local t=u1
    [ "$2" = tcp ] && t=t1
    "$SIPP" -sf "benches/exum/$1" -i 127.0.0.1 -p "$3" -t "$t" -mp $(($3 + 1000)) \
        -m "$6" -timeout "$(($7 + 15))s" -nostdin \
        -trace_stat -stf "$5/$4_stat.csv" -fd 1 -trace_err -error_file "$5/$4_err.log" \
        </dev/null >"$5/$4.out" 2>&1 &
    started=$!
    wait_port "$2" "$3" "$started" || die "SIPp $4 did not start on $2 port $3; see $5/$4.out"
}

# One run of MODE; its row goes to $dir/row.tsv.
run_point() { # mode rate calls dir
    local mode=$1 rate=$2 calls=$3 dir=$4 rc=0 c0 c1 cap service=vm domain=$DOMAIN
    mkdir -p "$dir"
    cap=$((calls / rate + 30))
    case $mode in
        plain) write_config "$dir" udp; service=bench; domain=remote.test ;;
        plain-tcp) write_config "$dir" tcp; service=bench; domain=remote.test ;;
        immediate) write_config "$dir" udp ;;
        busy) write_config "$dir" udp; service=busy ;;
        *) die "unknown mode $mode" ;;
    esac
    "$UMPROXY" check-config "$dir/umproxy.toml" >"$dir/proxy.log" 2>&1 ||
        die "umproxy rejects the bench config: $(cat "$dir/proxy.log")"
    "$UMPROXY" run "$dir/umproxy.toml" --grace-s 1 </dev/null >>"$dir/proxy.log" 2>&1 &
    proxy_pid=$!
    wait_port udp "$PROXY_PORT" "$proxy_pid" && wait_port tcp "$PROXY_PORT" "$proxy_pid" ||
        die "umproxy did not start; log $dir/proxy.log:
$(tail -20 "$dir/proxy.log")"
    case $mode in
        plain) start_uas uas.xml udp "$UAS_PORT" uas "$dir" "$calls" "$cap"; uas_pid=$started ;;
        plain-tcp) start_uas uas.xml tcp "$UAS_PORT" uas "$dir" "$calls" "$cap"; uas_pid=$started ;;
        immediate) start_uas uas.xml tcp "$UM_PORT" um "$dir" "$calls" "$cap"; um_pid=$started ;;
        busy)
            start_uas uas.xml tcp "$UM_PORT" um "$dir" "$calls" "$cap"; um_pid=$started
            "$SIPP" 127.0.0.1:"$PROXY_PORT" -sf benches/exum/register.xml -inf "$OUT/busy.csv" \
                -auth_uri "$DOMAIN" -i 127.0.0.1 -p "$REG_PORT" -t u1 -m 1 -recv_timeout 5000 \
                -timeout 20s -nostdin -trace_err -error_file "$dir/register_err.log" \
                </dev/null >"$dir/register.out" 2>&1 ||
                die "registering busy@$DOMAIN failed; see $dir/register_err.log and $dir/proxy.log"
            start_uas uas_busy.xml udp "$UAS_PORT" uas "$dir" "$calls" "$cap"; uas_pid=$started
            ;;
    esac
    c0=$(cpu_ticks "$proxy_pid")
    "$SIPP" 127.0.0.1:"$PROXY_PORT" -sf benches/exum/uac.xml -s "$service" -key domain "$domain" \
        -i 127.0.0.1 -p "$UAC_PORT" -t u1 -mp $((UAC_PORT + 1000)) -r "$rate" -m "$calls" -d 0 \
        -recv_timeout 5000 -timeout "${cap}s" -nostdin \
        -trace_stat -stf "$dir/uac_stat.csv" -fd 1 -trace_err -error_file "$dir/uac_err.log" \
        </dev/null >"$dir/uac.out" 2>&1 || rc=$?
    sleep "$SETTLE_S"
    if kill -0 "$proxy_pid" 2>/dev/null; then
        c1=$(cpu_ticks "$proxy_pid")
    else
        c1=$c0
        echo "umproxy exited during the run (log $dir/proxy.log)" >>"$dir/interrupted"
    fi
    stop_pid "$uas_pid"; uas_pid=""
    stop_pid "$um_pid"; um_pid=""
    stop_pid "$proxy_pid"; proxy_pid=""
    python3 - "$dir" "$mode" "$rate" "$calls" "$((c1 - c0))" "$CLK_TCK" "$rc" <<'PY'
import csv, os, sys
d, mode, rate, calls, ticks, clk, rc = sys.argv[1:]
def last(name):
    try:
        with open(os.path.join(d, name), newline="") as f:
            rows = list(csv.reader(f, delimiter=";"))
    except OSError:
        return {}
    return dict(zip(rows[0], rows[-1])) if len(rows) > 1 else {}
uac, uas, um = last("uac_stat.csv"), last("uas_stat.csv"), last("um_stat.csv")
num = lambda r, k: int(float(r.get(k, "0") or 0))
att, ok, failed = num(uac, "TotalCallCreated"), num(uac, "SuccessfulCall(C)"), num(uac, "FailedCall(C)")
failed_uas = num(uas, "FailedCall(C)") + num(um, "FailedCall(C)")
rtx = sum(num(r, "Retransmissions(C)") for r in (uac, uas, um))
um_calls = num(um, "SuccessfulCall(C)")
cpu_us = int(ticks) * 1_000_000 / int(clk)
per = cpu_us / ok if ok else float("nan")
row = [mode, rate, calls, att, ok, failed, failed_uas, rtx, um_calls, f"{cpu_us:.0f}", f"{per:.1f}", rc]
with open(os.path.join(d, "row.tsv"), "w") as f:
    f.write("\t".join(map(str, row)) + "\n")
PY
    if grep -qE 'ERROR|WARN' "$dir/proxy.log"; then
        log "  umproxy logged $(grep -cE 'ERROR|WARN' "$dir/proxy.log") warnings/errors in $dir/proxy.log, e.g.: $(grep -m1 -E 'ERROR|WARN' "$dir/proxy.log" | cut -c1-300)"
    fi
}

HEADER="mode\trate\tcalls\tattempted\tsuccessful\tfailed\tfailed_uas\tretrans\tum_calls\tcpu_us\tus_per_call\tsipp_rc"

log "results and logs in $OUT"
log "load before: $(uptime)"
for mode in $MODES; do
    dir=$OUT/smoke-$mode
    run_point "$mode" 10 "$SMOKE_CALLS" "$dir"
    IFS=$'\t' read -r _ _ _ _ ok failed fuas _ umc _ <"$dir/row.tsv"
    [ "$ok" = "$SMOKE_CALLS" ] || die "smoke failed: $mode completed $ok of $SMOKE_CALLS calls ($failed failed, $fuas failed at a UAS).
  SIPp UAC errors ($dir/uac_err.log):
$(head -c 1500 "$dir/uac_err.log" 2>/dev/null || true)
  umproxy log ($dir/proxy.log):
$(tail -10 "$dir/proxy.log")"
    case $mode in immediate | busy)
        [ "$umc" = "$SMOKE_CALLS" ] || die "smoke failed: $mode: the UM UAS answered $umc of $SMOKE_CALLS calls; see $dir" ;;
    esac
    log "smoke ok: $mode ($ok/$SMOKE_CALLS calls${umc:+, UM answered $umc})"
done

calls=$((RATE * DURATION_S))
printf "$HEADER\n" >"$OUT/results.tsv"
for run in $(seq "$RUNS"); do
    for mode in $MODES; do
        dir=$OUT/$mode-$run
        log "$mode ${RATE}/s run $run/$RUNS: $calls calls; load $(cut -d' ' -f1-3 /proc/loadavg)"
        run_point "$mode" "$RATE" "$calls" "$dir"
        cat "$dir/row.tsv" >>"$OUT/results.tsv"
        IFS=$'\t' read -r _ _ _ att ok failed fuas rtx umc _ per _ <"$dir/row.tsv"
        log "  -> $ok/$att ok, $failed failed (UAS: $fuas), retrans $rtx, UM answered $umc, $per µs/call"
    done
done
log "load after: $(uptime)"

python3 - "$OUT/results.tsv" <<'PY'
import csv, statistics, sys
from collections import defaultdict
runs = defaultdict(list)
with open(sys.argv[1], newline="") as f:
    for r in csv.DictReader(f, delimiter="\t"):
        runs[r["mode"]].append(r)
clean = lambda rs: bool(rs) and all(int(r["failed"]) == 0 and int(r["failed_uas"]) == 0
                                    and int(r["successful"]) == int(r["calls"]) for r in rs)
def med(rs):
    v = [float(r["us_per_call"]) for r in rs if r["us_per_call"] != "nan"]
    return statistics.median(v) if v else float("nan")
print("| mode | calls/s | runs | µs CPU/call (median) | per run | successful/attempted | failed UAC/UAS | retrans | UM answered | clean |")
print("|---|---:|---:|---:|---|---:|---:|---:|---:|---|")
for mode, rs in runs.items():
    print(f"| {mode} | {rs[0]['rate']} | {len(rs)} | {med(rs):.1f} | {', '.join(r['us_per_call'] for r in rs)} | "
          f"{sum(int(r['successful']) for r in rs)}/{sum(int(r['attempted']) for r in rs)} | "
          f"{sum(int(r['failed']) for r in rs)}/{sum(int(r['failed_uas']) for r in rs)} | "
          f"{sum(int(r['retrans']) for r in rs)} | {sum(int(r['um_calls']) for r in rs)} | {'yes' if clean(runs[mode]) else 'NO'} |")
print()
def ratio(mode, base="plain"):
    if clean(runs.get(mode, [])) and clean(runs.get(base, [])):
        return f"{med(runs[mode]) / med(runs[base]):.2f}"
    return "n/a"
for m in ("immediate", "busy"):
    if m in runs:
        print(f"{m}: ÷ plain (UDP callee) = {ratio(m)}, ÷ plain-tcp (TCP callee) = {ratio(m, 'plain-tcp')}")
print(f"exum diverted/plain cpu ratio: immediate={ratio('immediate')} busy={ratio('busy')}")
PY
