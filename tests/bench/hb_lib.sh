# herald-bench scenario helpers, sourced by tests/bench/*.sh (not run on
# its own). Each scenario starts its own redis-server and herald on free
# loopback ports with a generated config, runs herald-bench, and leaves
# nothing running: hb_cleanup runs on exit, on error and on Ctrl-C.
#
# Common flags (parsed by hb_parse_common; the rest is left in HB_ARGS):
#   --smoke            tiny sizes for CI: a few seconds, a few hundred conns
#   --runs N           repeat each measurement N times (medians; default 3,
#                      1 with --smoke)
#   --results DIR      where JSON and tables go (default
#                      $HB_RESULTS_ROOT/<scenario>-<date>, HB_RESULTS_ROOT
#                      defaulting to /tmp/herald-bench-results)
#   --herald BIN       herald binary   (env HERALD_BIN, else build/master/herald)
#   --bench BIN        herald-bench    (env HERALD_BENCH, else
#                      build/tests/bench/herald-bench)
#   --keep             keep the temp dir (configs, logs) for inspection

set -euo pipefail

HB_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HB_SMOKE=0
HB_RUNS=
HB_RESULTS=
HB_KEEP=0
HB_ARGS=()
HB_TMP=
HB_REDIS_PID=
HB_HERALD_PID=
HB_SECRET="herald-bench-secret-0123456789abcdef-not-for-production"
HB_API_KEY="herald-bench-api-key-0123456789"
HB_PY=/usr/bin/python3

hb_die() { echo "$HB_NAME: $*" >&2; exit 2; }
hb_log() { echo "== $HB_NAME: $*" >&2; }

hb_parse_common() {
    HB_HERALD=${HERALD_BIN:-$HB_ROOT/build/master/herald}
    HB_BENCH=${HERALD_BENCH:-$HB_ROOT/build/tests/bench/herald-bench}
    while [ $# -gt 0 ]; do
        case "$1" in
        --smoke) HB_SMOKE=1 ;;
        --runs) HB_RUNS=$2; shift ;;
        --results) HB_RESULTS=$2; shift ;;
        --herald) HB_HERALD=$2; shift ;;
        --bench) HB_BENCH=$2; shift ;;
        --keep) HB_KEEP=1 ;;
        *) HB_ARGS+=("$1") ;;
        esac
        shift
    done
    [ -x "$HB_HERALD" ] || hb_die "herald binary not found: $HB_HERALD (--herald or HERALD_BIN)"
    [ -x "$HB_BENCH" ] || hb_die "herald-bench not found: $HB_BENCH (--bench or HERALD_BENCH)"
    command -v redis-server >/dev/null || hb_die "redis-server not found"
    command -v jq >/dev/null || hb_die "jq not found"
    if [ -z "$HB_RUNS" ]; then
        if [ "$HB_SMOKE" = 1 ]; then HB_RUNS=1; else HB_RUNS=3; fi
    fi
    if [ -z "$HB_RESULTS" ]; then
        HB_RESULTS=${HB_RESULTS_ROOT:-/tmp/herald-bench-results}/$HB_NAME-$(date +%Y%m%d-%H%M%S)
        [ "$HB_SMOKE" = 1 ] && HB_RESULTS=$(mktemp -d /tmp/hb-smoke-$HB_NAME.XXXXXX)
    fi
    mkdir -p "$HB_RESULTS"
    HB_TMP=$(mktemp -d /tmp/hb-$HB_NAME.XXXXXX)
    trap hb_cleanup EXIT
    trap 'exit 130' INT TERM
    hb_machine > "$HB_RESULTS/machine.txt"
}

hb_machine() {
    echo "nproc: $(nproc)"
    echo "kernel: $(uname -sr)"
    echo "memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
    echo "fd limit: soft $(ulimit -Sn) hard $(ulimit -Hn)"
    echo "ephemeral ports: $(cat /proc/sys/net/ipv4/ip_local_port_range | tr '\t' '-')"
    echo "somaxconn: $(cat /proc/sys/net/core/somaxconn)"
    lscpu 2>/dev/null | head -n 15
}

hb_cleanup() {
    local rc=$?
    hb_stop_herald
    if [ -n "$HB_REDIS_PID" ]; then
        kill "$HB_REDIS_PID" 2>/dev/null || true
        wait "$HB_REDIS_PID" 2>/dev/null || true
        HB_REDIS_PID=
    fi
    if [ -n "$HB_TMP" ] && [ "$HB_KEEP" = 0 ]; then
        rm -rf "$HB_TMP"
    elif [ -n "$HB_TMP" ]; then
        echo "$HB_NAME: kept $HB_TMP" >&2
    fi
    return $rc
}

# A TCP port free on 127.0.0.1 a moment ago.
hb_free_port() {
    $HB_PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

hb_start_redis() {
    HB_REDIS_PORT=$(hb_free_port)
    redis-server --port "$HB_REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
        --daemonize no --maxclients 10000 --logfile "$HB_TMP/redis.log" &
    HB_REDIS_PID=$!
    local i
    for i in $(seq 1 100); do
        if redis-cli -p "$HB_REDIS_PORT" ping 2>/dev/null | grep -q PONG; then
            return 0
        fi
        sleep 0.05
    done
    hb_die "redis-server did not start (see $HB_TMP/redis.log)"
}

# hb_start_herald WORKERS BATCH_MAX_MESSAGES [FLUSH_DELAY_MS]
# Starts herald on fresh ports; sets HB_URL, HB_METRICS. HB_REDIS_EXTRA:
# more members of the "redis" object (JSON, without braces).
hb_start_herald() {
    local workers=$1 batch_msgs=$2 delay=${3:-0}
    HB_PORT=$(hb_free_port)
    HB_ADMIN=$(hb_free_port)
    HB_URL="ws://127.0.0.1:$HB_PORT/"
    HB_METRICS="http://127.0.0.1:$HB_ADMIN/metrics"
    cat > "$HB_TMP/herald.json" <<JSON
{
    "workers": $workers,
    "listen": { "address": "127.0.0.1", "port": $HB_PORT, "backlog": 65535 },
    "admin": { "address": "127.0.0.1", "port": $HB_ADMIN },
    "redis": { "url": "redis://127.0.0.1:$HB_REDIS_PORT"${HB_REDIS_EXTRA:+, $HB_REDIS_EXTRA} },
    "auth": { "hmac_secret": "$HB_SECRET", "allow_anonymous": false },
    "api": { "key": "$HB_API_KEY" },
    "log": { "level": "warn", "format": "text" },
    "timeouts": { "shutdown_ms": 2000, "handshake_ms": 30000, "connect_ms": 60000 },
    "batch": { "max_messages": $batch_msgs, "flush_delay_ms": $delay },
    "limits": { "commands_per_second": 0, "max_connections": 0, "connections_per_ip": 0 },
    "namespaces": { "default": { "publish": true } }
}
JSON
    "$HB_HERALD" -t -c "$HB_TMP/herald.json" >/dev/null || hb_die "herald rejected the generated config"
    "$HB_HERALD" -c "$HB_TMP/herald.json" >>"$HB_TMP/herald.log" 2>&1 &
    HB_HERALD_PID=$!
    local i running
    for i in $(seq 1 200); do
        # (|| true: under set -e a refused connection must not end the script)
        running=$(curl -s "$HB_METRICS" 2>/dev/null \
                  | awk '/^herald_workers\{state="running"\}/ {print $2}' || true)
        if [ "${running:-0}" = "$workers" ]; then
            # every worker also has its Redis connections up
            if ! curl -s "$HB_METRICS" | grep -q '^herald_redis_up{.*} 0'; then
                return 0
            fi
        fi
        kill -0 "$HB_HERALD_PID" 2>/dev/null || break
        sleep 0.05
    done
    tail -n 20 "$HB_TMP/herald.log" >&2
    hb_die "herald did not come up with $workers workers"
}

hb_stop_herald() {
    [ -n "$HB_HERALD_PID" ] || return 0
    kill -TERM "$HB_HERALD_PID" 2>/dev/null || true
    local i
    for i in $(seq 1 100); do
        kill -0 "$HB_HERALD_PID" 2>/dev/null || break
        sleep 0.05
    done
    if kill -0 "$HB_HERALD_PID" 2>/dev/null; then
        kill -TERM "$HB_HERALD_PID" 2>/dev/null || true   # second signal: stop at once
        sleep 0.5
        kill -KILL "$HB_HERALD_PID" 2>/dev/null || true
    fi
    wait "$HB_HERALD_PID" 2>/dev/null || true
    HB_HERALD_PID=
}

# hb_sources N [SET]: loopback source addresses for N connections, one per
# 10000. There are ~28000 ephemeral ports per source/destination pair, and
# the kernel's port search in connect() gets expensive as they fill up (at
# 25000 per address it cost the bench ~300 us of CPU per connect instead of
# 40). SET (0..249) picks a fresh block, 127.SET+1.0.x, so that a run does
# not trip over the TIME_WAIT sockets of the run before it.
hb_sources() {
    local n=$1 set=${2:-0} k i out=""
    k=$(( (n + 9999) / 10000 ))
    [ "$k" -lt 1 ] && k=1
    for i in $(seq 2 $((k + 1))); do out="$out${out:+,}127.$((set % 250 + 1)).0.$i"; done
    echo "$out"
}

# hb_bench OUT.json [herald-bench options...]: runs herald-bench against
# the running herald; its status is returned (1 = counts failed).
hb_bench() {
    local out=$1; shift
    local rc=0
    "$HB_BENCH" --url "$HB_URL" --metrics-url "$HB_METRICS" --secret "$HB_SECRET" \
        --api-key "$HB_API_KEY" --json "$out" "$@" || rc=$?
    if [ $rc -ne 0 ]; then
        echo "$HB_NAME: herald-bench exited $rc (see $out)" >&2
    fi
    return $rc
}

# hb_median: the median of the numbers on stdin (one per line).
hb_median() {
    sort -g | awk '{a[NR]=$1} END {if (NR==0) print "null"; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'
}

# jq definitions shared by the summaries.
HB_JQ_DEFS='
def median: map(select(. != null)) | sort
  | if length == 0 then null
    elif length % 2 == 1 then .[(length - 1) / 2]
    else (.[length / 2 - 1] + .[length / 2]) / 2 end;
def r(n): if . == null then null else (. * pow(10; n) | round) / pow(10; n) end;
'

# hb_steps_json FILE...: per-step medians over several runs of the same
# herald-bench command (the files must have the same steps).
hb_steps_json() {
    jq -s "$HB_JQ_DEFS"'
      # runs stopped for overload have fewer steps: a step is summarised
      # over the runs that completed it
      (map(.steps | length) | max // 0) as $n
      | [range(0; $n) as $i | [.[] | .steps[$i] | select(. != null)] as $s | {
          rate: $s[0].rate,
          runs: ($s | length),
          pubs_per_s: ($s | map(.pubs_per_s) | median | r(1)),
          deliveries_per_s: ($s | map(.deliveries_per_s) | median | r(0)),
          server_deliveries_per_s: ($s | map(.server_deliveries_per_s) | median | r(0)),
          keepup: ($s | map(.keepup) | median | r(3)),
          p50_ms: ($s | map(.latency_ms.p50) | median | r(3)),
          p90_ms: ($s | map(.latency_ms.p90) | median | r(3)),
          p99_ms: ($s | map(.latency_ms.p99) | median | r(3)),
          p999_ms: ($s | map(.latency_ms.p999) | median | r(3)),
          max_ms: ($s | map(.latency_ms.max) | median | r(3)),
          ack_p99_ms: ($s | map(.ack_ms.p99) | median | r(3)),
          send_lag_p99_ms: ($s | map(.send_lag_ms.p99) | median | r(3)),
          deliveries_per_server_cpu_s: ($s | map(.deliveries_per_server_cpu_s) | median | r(0)),
          server_us_per_delivery: ($s | map(.server_us_per_delivery) | median | r(3)),
          client_us_per_delivery: ($s | map(.client_us_per_delivery) | median | r(3)),
          client_us_per_message: ($s | map(.client_us_per_message) | median | r(3))
        }]' "$@"
}

# hb_counts_json FILE...: did every run check out, and the worst counts.
hb_counts_json() {
    jq -s '{
        runs: length,
        overloads: map(.overload | select(. != null) | {step, rate, after_s}),
        ok: (map(.ok) | all),
        missing: (map(.counts.missing) | max),
        duplicates: (map(.counts.duplicates) | max),
        connect_failed: (map(.connect.failed) | max),
        failures: (map(.failures) | add | unique)
      }' "$@"
}

# hb_print_steps TITLE STEPS_JSON: a table of per-step medians.
hb_print_steps() {
    local title=$1 json=$2
    printf '\n%s\n' "$title"
    printf '%9s %9s %10s %6s %9s %9s %9s %12s %9s %9s\n' rate/s pubs/s deliv/s keep \
        p50_ms p99_ms p999_ms deliv/srvCPU srv_us/d cli_us/d
    echo "$json" | jq -r '.[] | [.rate, .pubs_per_s, .deliveries_per_s,
        ((.keepup // 0) * 100 | round), .p50_ms, .p99_ms, .p999_ms,
        .deliveries_per_server_cpu_s, .server_us_per_delivery, .client_us_per_delivery]
        | map(if . == null then "-" else tostring end) | @tsv' |
        while IFS=$'\t' read -r a b c d e f g h i j; do
            printf '%9s %9s %10s %5s%% %9s %9s %9s %12s %9s %9s\n' "$a" "$b" "$c" "$d" "$e" "$f" "$g" "$h" "$i" "$j"
        done
}

# hb_finish STATUS: final word; exits with STATUS.
hb_finish() {
    local st=$1
    echo
    echo "results: $HB_RESULTS"
    if [ "$st" -eq 0 ]; then
        echo "$HB_NAME: OK (all counts checked out)"
    else
        echo "$HB_NAME: FAILED (see failures in $HB_RESULTS/summary.json)"
    fi
    exit "$st"
}
