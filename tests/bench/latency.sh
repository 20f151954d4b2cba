#!/usr/bin/env bash
# latency.sh: delivery latency at 10 %, 50 % and 90 % of the fan-out
# maximum, with the maximum measured first in the same run (same herald,
# same box state): a rising-rate pass finds the highest deliveries/s that
# the subscribers keep up with (>= 95 % of what was offered), then a
# second pass runs the three fractions. The maximum is the highest
# deliveries/s a probe step achieved (probe steps 3 s, rates rising by
# about 1.4x, stopped when a second's p99 passes 2 s). Also measures the goal point:
# 100 publishes/s to 1 000 subscribers (100k deliveries/s).
#
#   tests/bench/latency.sh [--smoke] [--runs N] [--results DIR]
#                          [--subs N] [--probe-rates R1,R2,...]
HB_NAME=latency
source "$(dirname "${BASH_SOURCE[0]}")/hb_lib.sh"
hb_parse_common "$@"

SUBS=1000 PROBE=100,200,400,700,1000,1400,2000,2800 DUR=5 WARM=2 PDUR=3 PWARM=1 WORKERS=2
if [ "$HB_SMOKE" = 1 ]; then
    SUBS=200 PROBE=50,200 DUR=1.5 WARM=0.5 PDUR=1 PWARM=0.3
fi
set -- "${HB_ARGS[@]+"${HB_ARGS[@]}"}"
while [ $# -gt 0 ]; do
    case "$1" in
    --subs) SUBS=$2; shift ;;
    --probe-rates) PROBE=$2; shift ;;
    --workers) WORKERS=$2; shift ;;
    *) hb_die "unknown option $1" ;;
    esac
    shift
done
GOAL_RATE=$(( 100000 / SUBS ))     # 100k deliveries/s

hb_start_redis
hb_start_herald "$WORKERS" 256
status=0
for run in $(seq 1 "$HB_RUNS"); do
    hb_log "run $run/$HB_RUNS: probing the maximum, $SUBS subscribers, rates $PROBE"
    hb_bench "$HB_RESULTS/probe-$run.json" --label "latency probe run=$run" \
        -c "$SUBS" --channels 1 --publishers 1 --rate "$PROBE" \
        --duration "$PDUR" --warmup "$PWARM" --drain 30 --stop-p99 2s -q >/dev/null || status=1
    # the maximum: the highest deliveries/s any completed step achieved
    # (past saturation the achieved rate is the capacity; a step stopped
    # for overload is not counted)
    max=$(jq '[.steps[] | .deliveries_per_s] | max // 0' "$HB_RESULTS/probe-$run.json")
    maxrate=$(jq -n --argjson m "$max" --argjson s "$SUBS" '$m / $s')
    if [ "$(jq -n --argjson r "$maxrate" '$r <= 0')" = true ]; then
        hb_log "run $run: no step kept up; using the lowest probe rate as the maximum"
        maxrate=${PROBE%%,*}
    fi
    rates=$(jq -rn --argjson r "$maxrate" --argjson g "$GOAL_RATE" \
            '[($r * 0.1), ($r * 0.5), ($r * 0.9), $g] | map(. * 100 | round / 100) | map(tostring) | join(",")')
    hb_log "run $run: maximum $max deliveries/s ($maxrate publishes/s); measuring at $rates"
    hb_bench "$HB_RESULTS/latency-$run.json" --label "latency run=$run max=$max" \
        -c "$SUBS" --channels 1 --publishers 1 --rate "$rates" \
        --duration "$DUR" --warmup "$WARM" --drain 30 --stop-p99 10s -q || status=1
done
hb_stop_herald

steps=$(hb_steps_json "$HB_RESULTS"/latency-*.json)
maxes=$(jq -s '[.[] | [.steps[] | .deliveries_per_s] | max // 0]' "$HB_RESULTS"/probe-*.json)
counts=$(hb_counts_json "$HB_RESULTS"/probe-*.json "$HB_RESULTS"/latency-*.json)
jq -n --argjson steps "$steps" --argjson maxes "$maxes" --argjson counts "$counts" \
    --arg subs "$SUBS" "$HB_JQ_DEFS"'
    {scenario: "latency", subscribers: ($subs | tonumber), counts: $counts,
     max_deliveries_per_s: {runs: $maxes, median: ($maxes | median)},
     at_10pct: $steps[0], at_50pct: $steps[1], at_90pct: $steps[2],
     goal_100k_deliveries_per_s: $steps[3]}' > "$HB_RESULTS/summary.json"
echo
jq -r '"fan-out maximum (median of runs): \(.max_deliveries_per_s.median) deliveries/s to \(.subscribers) subscribers (runs: \(.max_deliveries_per_s.runs | map(tostring) | join(", ")))"' "$HB_RESULTS/summary.json"
hb_print_steps "latency at 10 % / 50 % / 90 % of the maximum, then 100k deliveries/s (rates are per run; medians of $HB_RUNS)" "$steps"
[ "$(jq .counts.ok "$HB_RESULTS/summary.json")" = true ] || status=1
hb_finish $status
