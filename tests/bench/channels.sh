#!/usr/bin/env bash
# channels.sh: many channels with few subscribers each (10 000 channels,
# 2 subscribers each by default: 10 000 connections x 2 subscriptions,
# round-robin). Publishers spread over every channel; each publish reaches
# 2 subscribers, so this measures the per-publish path (Redis script,
# per-channel routing) rather than the fan-out.
#
#   tests/bench/channels.sh [--smoke] [--runs N] [--results DIR]
#                           [--channels N] [--conns N] [--subs-per-conn N]
#                           [--rates R1,R2,...] [--via ws|http]
HB_NAME=channels
source "$(dirname "${BASH_SOURCE[0]}")/hb_lib.sh"
hb_parse_common "$@"

CHANNELS=10000 CONNS=10000 SPC=2 PUBS=10 RATES=2000,5000,10000,20000 DUR=5 WARM=2 WORKERS=2 VIA=ws
if [ "$HB_SMOKE" = 1 ]; then
    CHANNELS=200 CONNS=200 PUBS=2 RATES=500 DUR=1.5 WARM=0.5
fi
set -- "${HB_ARGS[@]+"${HB_ARGS[@]}"}"
while [ $# -gt 0 ]; do
    case "$1" in
    --channels) CHANNELS=$2; shift ;;
    --conns) CONNS=$2; shift ;;
    --subs-per-conn) SPC=$2; shift ;;
    --rates) RATES=$2; shift ;;
    --via) VIA=$2; shift ;;
    --workers) WORKERS=$2; shift ;;
    *) hb_die "unknown option $1" ;;
    esac
    shift
done

hb_start_redis
hb_start_herald "$WORKERS" 256
status=0
for run in $(seq 1 "$HB_RUNS"); do
    hb_log "run $run/$HB_RUNS: $CHANNELS channels, $CONNS connections x $SPC, rates $RATES via $VIA"
    hb_bench "$HB_RESULTS/channels-$run.json" --label "channels run=$run" \
        -c "$CONNS" --channels "$CHANNELS" --subs-per-conn "$SPC" --spread rr \
        --publishers "$PUBS" --publish-via "$VIA" --http-pipeline 1 --rate "$RATES" \
        --duration "$DUR" --warmup "$WARM" --drain 30 --stop-p99 2s -q || status=1
done
hb_stop_herald

steps=$(hb_steps_json "$HB_RESULTS"/channels-*.json)
counts=$(hb_counts_json "$HB_RESULTS"/channels-*.json)
jq -n --argjson steps "$steps" --argjson counts "$counts" \
    --arg ch "$CHANNELS" --arg c "$CONNS" --arg spc "$SPC" --arg via "$VIA" '
    {scenario: "channels", channels: ($ch | tonumber), connections: ($c | tonumber),
     subs_per_conn: ($spc | tonumber), publish_via: $via, counts: $counts, steps: $steps,
     max_sustained: ([$steps[] | select((.keepup // 0) >= 0.95 and (.p99_ms // 1e9) <= 1000)]
                     | max_by(.pubs_per_s))}' \
    > "$HB_RESULTS/summary.json"
hb_print_steps "$CHANNELS channels x $(( CONNS * SPC / CHANNELS )) subscribers, publish via $VIA, medians of $HB_RUNS" "$steps"
jq -r '"max sustained (keep >= 95%, p99 <= 1 s): \(.max_sustained.pubs_per_s // "none") publishes/s, \(.max_sustained.deliveries_per_s // "none") deliveries/s"' "$HB_RESULTS/summary.json"
[ "$(jq .counts.ok "$HB_RESULTS/summary.json")" = true ] || status=1
hb_finish $status
