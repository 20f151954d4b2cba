#!/usr/bin/env bash
# idle.sh: memory per idle authenticated connection. N connections do the
# WebSocket upgrade and the connect command, subscribe to nothing, and are
# held for --hold seconds; herald's resident memory (the sum of
# herald_process_resident_memory_bytes over master and workers) is read
# before connecting and once all are up. Sizes 10k, 50k and 100k; the
# worker count grows with the size so that no worker passes its fd limit.
# The hold (40 s) outlasts herald's ping interval (25 s): a connection
# only counts as held if it also answered a ping round.
#
# Connections open at --ramp per second (5000 by default: a 100k storm on
# 2 cores starves both sides for long enough that herald's heartbeat
# closes early connections as stale; connect.sh measures storms).
#
# --subs N: each connection also subscribes to N channels (all to the
# same N, as a fan-out to everyone would): memory per idle subscribed
# connection.
#
#   tests/bench/idle.sh [--smoke] [--runs N] [--results DIR]
#                       [--sizes N1,N2,...] [--hold SECONDS] [--ramp R]
#                       [--subs N]
HB_NAME=idle
source "$(dirname "${BASH_SOURCE[0]}")/hb_lib.sh"
hb_parse_common "$@"

SIZES=10000,50000,100000 HOLD=40 RAMP=5000 SUBS=0
if [ "$HB_SMOKE" = 1 ]; then
    SIZES=300 HOLD=1 RAMP=0
fi
set -- "${HB_ARGS[@]+"${HB_ARGS[@]}"}"
while [ $# -gt 0 ]; do
    case "$1" in
    --sizes) SIZES=$2; shift ;;
    --hold) HOLD=$2; shift ;;
    --ramp) RAMP=$2; shift ;;
    --subs) SUBS=$2; shift ;;
    *) hb_die "unknown option $1" ;;
    esac
    shift
done

hard=$(ulimit -Hn)
hb_start_redis
status=0 set=100
for n in ${SIZES//,/ }; do
    # workers: at most ~60 % of the fd hard limit each, at least 2
    per=$(( hard * 6 / 10 ))
    workers=$(( (n + per - 1) / per ))
    [ "$workers" -lt 2 ] && workers=2
    for run in $(seq 1 "$HB_RUNS"); do
        # a fresh herald per run: memory freed by the previous run's
        # connections stays in herald's heap and would hide the growth
        hb_start_herald "$workers" 256
        set=$((set + 1))
        hb_log "$n idle connections, $SUBS subscriptions each, $workers workers, run $run/$HB_RUNS"
        hb_bench "$HB_RESULTS/idle-$n-$run.json" --label "idle n=$n run=$run" \
            -c "$n" --subs-per-conn "$SUBS" --channels "$(( SUBS > 0 ? SUBS : 1 ))" --publishers 0 --duration "$HOLD" --warmup 0 \
            --ramp "$RAMP" --inflight 1000 --connect-timeout 300 --source-addrs "$(hb_sources "$n" "$set")" -q >/dev/null || status=1
        jq -r '"  ready \(.connect.ready)/\(.connect.attempted); herald RSS \(.server.before.rss_bytes / 1048576 | round) -> \(.server.connected.rss_bytes / 1048576 | round) MiB: \(.server.rss_per_connection_bytes | round) B per connection; herald_connections gauge \(.server.connected.connections // "-"), closes \(.counts.closes)"' \
            "$HB_RESULTS/idle-$n-$run.json" >&2
        hb_stop_herald
    done
done

rows=$(jq -s "$HB_JQ_DEFS"'group_by(.options.connections) | map({
    connections: .[0].options.connections, runs: length,
    ready: (map(.connect.ready) | median),
    held_until_end: (map(.connect.ready - .counts.closes) | min),
    rss_per_connection_bytes: (map(.server.rss_per_connection_bytes) | median | r(0)),
    rss_connected_mib: (map(.server.connected.rss_bytes / 1048576) | median | r(1)),
    workers: (.[0].server.connected.workers)
  })' "$HB_RESULTS"/idle-*.json)
counts=$(hb_counts_json "$HB_RESULTS"/idle-*.json)
jq -n --argjson rows "$rows" --argjson counts "$counts" \
    '{scenario: "idle", counts: $counts, sizes: $rows}' > "$HB_RESULTS/summary.json"
printf '\nidle authenticated connections (medians of %s)\n' "$HB_RUNS"
printf '%12s %8s %8s %10s %12s %12s\n' connections workers ready held RSS_MiB B/conn
jq -r '.sizes[] | [.connections, .workers, .ready, .held_until_end, .rss_connected_mib,
    .rss_per_connection_bytes] | map(if . == null then "-" else tostring end) | @tsv' \
    "$HB_RESULTS/summary.json" |
    while IFS=$'\t' read -r a b c d e f; do
        printf '%12s %8s %8s %10s %12s %12s\n' "$a" "$b" "$c" "$d" "$e" "$f"
    done
[ "$(jq .counts.ok "$HB_RESULTS/summary.json")" = true ] || status=1
hb_finish $status
