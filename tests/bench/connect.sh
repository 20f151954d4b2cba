#!/usr/bin/env bash
# connect.sh: connect storms. Each connection does the full setup herald
# clients do: TCP connect, WebSocket upgrade, and the connect command with
# a signed JWT; "connect time" is from connect() to the connect result.
# Sizes 10k, 25k and 50k as fast as the bench can open them (a bounded
# number in flight per load process), then 50k at a fixed ramp of 20k/s
# (the goal rate), which gives an open-loop connect p99.
#
#   tests/bench/connect.sh [--smoke] [--runs N] [--results DIR]
#                          [--sizes N1,N2,...] [--ramp R] [--workers N]
HB_NAME=connect
source "$(dirname "${BASH_SOURCE[0]}")/hb_lib.sh"
hb_parse_common "$@"

SIZES=10000,25000,50000 RAMP=20000 RAMPN=50000 WORKERS=4 INFL=1000
if [ "$HB_SMOKE" = 1 ]; then
    SIZES=300 RAMP=1000 RAMPN=300 WORKERS=2 INFL=100
fi
set -- "${HB_ARGS[@]+"${HB_ARGS[@]}"}"
while [ $# -gt 0 ]; do
    case "$1" in
    --sizes) SIZES=$2; shift ;;
    --ramp) RAMP=$2; shift ;;
    --workers) WORKERS=$2; shift ;;
    *) hb_die "unknown option $1" ;;
    esac
    shift
done

hb_start_redis
hb_start_herald "$WORKERS" 256
status=0 set=0
storm() { # NAME N RAMP
    local name=$1 n=$2 ramp=$3 run
    for run in $(seq 1 "$HB_RUNS"); do
        set=$((set + 1))
        hb_log "$name run $run/$HB_RUNS: $n connections, ramp ${ramp:-max}"
        hb_bench "$HB_RESULTS/$name-$run.json" --label "connect $name run=$run" \
            -c "$n" --subs-per-conn 0 --publishers 0 --duration 1 --warmup 0 \
            --ramp "${ramp:-0}" --inflight "$INFL" --source-addrs "$(hb_sources "$n" "$set")" \
            -q >/dev/null || status=1
        jq -r '"  ready \(.connect.ready)/\(.connect.attempted) in \(.connect.duration_s) s: \(.connect.per_second | round) conn/s, p50 \(.connect.connect_ms.p50) ms, p99 \(.connect.connect_ms.p99) ms, max \(.connect.connect_ms.max) ms"' \
            "$HB_RESULTS/$name-$run.json" >&2
    done
}
for n in ${SIZES//,/ }; do storm "storm-$n" "$n" ""; done
storm "ramp-$RAMPN" "$RAMPN" "$RAMP"
hb_stop_herald

summ() { # NAME
    jq -s "$HB_JQ_DEFS"'{
        connections: .[0].options.connections, ramp: .[0].options.ramp, runs: length,
        ready: (map(.connect.ready) | median),
        failed: (map(.connect.failed) | max),
        per_second: (map(.connect.per_second) | median | r(0)),
        p50_ms: (map(.connect.connect_ms.p50) | median | r(3)),
        p95_ms: (map(.connect.connect_ms.p95) | median | r(3)),
        p99_ms: (map(.connect.connect_ms.p99) | median | r(3)),
        max_ms: (map(.connect.connect_ms.max) | median | r(3)),
        server_cpu_us_per_connect: (map(.server.cpu_us_per_connect) | median | r(2)),
        client_cpu_us_per_connect: (map(.connect.client_cpu_us_per_attempt) | median | r(2))
      }' "$HB_RESULTS/$1"-*.json
}
rows="[]"
for n in ${SIZES//,/ }; do rows=$(jq --argjson r "$(summ "storm-$n")" '. + [$r]' <<<"$rows"); done
rows=$(jq --argjson r "$(summ "ramp-$RAMPN")" '. + [$r]' <<<"$rows")
counts=$(hb_counts_json "$HB_RESULTS"/storm-*.json "$HB_RESULTS"/ramp-*.json)
jq -n --argjson rows "$rows" --argjson counts "$counts" --arg w "$WORKERS" \
    '{scenario: "connect", workers: ($w | tonumber), counts: $counts, runs: $rows}' \
    > "$HB_RESULTS/summary.json"
printf '\nconnect storms against %s workers (medians of %s)\n' "$WORKERS" "$HB_RUNS"
printf '%12s %8s %8s %7s %10s %9s %9s %9s %9s %12s %12s\n' connections ramp/s ready failed conn/s \
    p50_ms p95_ms p99_ms max_ms srv_us/conn cli_us/conn
jq -r '.runs[] | [.connections, (if .ramp == 0 then "max" else .ramp end), .ready, .failed,
    .per_second, .p50_ms, .p95_ms, .p99_ms, .max_ms, .server_cpu_us_per_connect,
    .client_cpu_us_per_connect]
    | map(if . == null then "-" else tostring end) | @tsv' "$HB_RESULTS/summary.json" |
    while IFS=$'\t' read -r a b c d e f g h i j k; do
        printf '%12s %8s %8s %7s %10s %9s %9s %9s %9s %12s %12s\n' "$a" "$b" "$c" "$d" "$e" "$f" "$g" "$h" "$i" "$j" "$k"
    done
[ "$(jq .counts.ok "$HB_RESULTS/summary.json")" = true ] || status=1
hb_finish $status
