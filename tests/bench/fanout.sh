#!/usr/bin/env bash
# fanout.sh: one channel, many subscribers, a rising publish rate; how many
# deliveries herald makes per server CPU-second with batching on
# (batch.max_messages 256, the default) and off (batch.max_messages 1), and
# the same figure for the kernel (raw loopback write() of the same number
# of sockets) measured in the same run, so herald reads as a ratio of the
# machine's limit.
#
#   tests/bench/fanout.sh [--smoke] [--runs N] [--results DIR]
#                         [--subs N] [--rates R1,R2,...] [--workers N]
#
# A step whose delivery p99 passes 2 s is overload: the run stops there
# (--stop-p99) and the later, higher rates are skipped.
#
# Each step publishes at one rate for --duration after a warmup; every
# subscriber must get every publication exactly once (exit 1 otherwise).
HB_NAME=fanout
source "$(dirname "${BASH_SOURCE[0]}")/hb_lib.sh"
hb_parse_common "$@"

SUBS=10000 RATES=2,5,10,20,40,80 DUR=5 WARM=2 WORKERS=2 KSECS=2 KSOCK=1000
if [ "$HB_SMOKE" = 1 ]; then
    SUBS=300 RATES=20 DUR=1.5 WARM=0.5 KSECS=0.3 KSOCK=100
fi
set -- "${HB_ARGS[@]+"${HB_ARGS[@]}"}"
while [ $# -gt 0 ]; do
    case "$1" in
    --subs) SUBS=$2; shift ;;
    --rates) RATES=$2; shift ;;
    --workers) WORKERS=$2; shift ;;
    --duration) DUR=$2; shift ;;
    *) hb_die "unknown option $1" ;;
    esac
    shift
done

hb_log "kernel probe: $KSOCK sockets, 100-byte messages"
"$HB_BENCH" kernel --sockets "$KSOCK" --batch 1,16 --size 100 --seconds "$KSECS" \
    --json "$HB_RESULTS/kernel.json" | tee "$HB_RESULTS/kernel.txt"

hb_start_redis
status=0
for mode in on off; do
    batch=256
    [ "$mode" = off ] && batch=1
    hb_start_herald "$WORKERS" "$batch"
    for run in $(seq 1 "$HB_RUNS"); do
        hb_log "batching $mode, run $run/$HB_RUNS: $SUBS subscribers, rates $RATES"
        hb_bench "$HB_RESULTS/batch-$mode-$run.json" --label "fanout batch=$mode run=$run" \
            -c "$SUBS" --channels 1 --subs-per-conn 1 --publishers 1 --rate "$RATES" \
            --duration "$DUR" --warmup "$WARM" --drain 30 --payload 100 --stop-p99 2s -q || status=1
    done
    hb_stop_herald
done

on=$(hb_steps_json "$HB_RESULTS"/batch-on-*.json)
off=$(hb_steps_json "$HB_RESULTS"/batch-off-*.json)
counts=$(hb_counts_json "$HB_RESULTS"/batch-*.json)
kernel=$(jq '[.results[] | {batch, sockets, msgs_per_writer_cpu_s}]' "$HB_RESULTS/kernel.json")
jq -n --argjson on "$on" --argjson off "$off" --argjson counts "$counts" \
    --argjson kernel "$kernel" --arg subs "$SUBS" "$HB_JQ_DEFS"'
    def best(s): [s[] | select((.keepup // 0) >= 0.95 and (.p99_ms // 1e9) <= 1000)]
                 | max_by(.deliveries_per_s);
    ($kernel | map(select(.batch == 1))[0].msgs_per_writer_cpu_s) as $k1 |
    {scenario: "fanout", subscribers: ($subs | tonumber), counts: $counts,
     kernel: $kernel,
     batch_on: {steps: $on, max_sustained: best($on),
                peak_deliveries_per_server_cpu_s: ($on | map(.deliveries_per_server_cpu_s // 0) | max)},
     batch_off: {steps: $off, max_sustained: best($off),
                 peak_deliveries_per_server_cpu_s: ($off | map(.deliveries_per_server_cpu_s // 0) | max)},
     kernel_unbatched_msgs_per_writer_cpu_s: $k1}
    | .batch_on.ratio_to_kernel_write = ((.batch_on.peak_deliveries_per_server_cpu_s / $k1) | r(3))
    | .batch_off.ratio_to_kernel_write = ((.batch_off.peak_deliveries_per_server_cpu_s / $k1) | r(3))
    ' > "$HB_RESULTS/summary.json"

hb_print_steps "batching on (batch.max_messages 256), $SUBS subscribers, medians of $HB_RUNS" "$on"
hb_print_steps "batching off (batch.max_messages 1), $SUBS subscribers, medians of $HB_RUNS" "$off"
jq -r '"\npeak deliveries per server CPU-second: batched \(.batch_on.peak_deliveries_per_server_cpu_s), unbatched \(.batch_off.peak_deliveries_per_server_cpu_s)",
       "kernel: \(.kernel_unbatched_msgs_per_writer_cpu_s) one-message write()s per writer CPU-second over the same number of sockets",
       "ratio to the kernel: batched \(.batch_on.ratio_to_kernel_write), unbatched \(.batch_off.ratio_to_kernel_write)",
       "max sustained (keep >= 95%, p99 <= 1 s): batched \(.batch_on.max_sustained.deliveries_per_s // "none") deliveries/s, unbatched \(.batch_off.max_sustained.deliveries_per_s // "none") deliveries/s"' \
    "$HB_RESULTS/summary.json"
[ "$(jq .counts.ok "$HB_RESULTS/summary.json")" = true ] || status=1
hb_finish $status
