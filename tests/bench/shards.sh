#!/usr/bin/env bash
# shards.sh: publish throughput of one herald node through 1 Redis
# (redis.url) and through 3 shards (redis.shards), and the CPU each
# publication costs herald and Redis (issue 18; figures in
# docs/benchmarks.md "Redis shards").
#
# Per shard count: CHANNELS channels with one subscriber each (so one
# delivery per publish), PUBS publishers spread over every channel.
#   1. a rate ladder (--rates) with --stop-p99 2s: the highest step that
#      kept up (>= 95 %, p99 <= 1 s) is the sustained throughput;
#   2. a fixed rate (--cpu-rate) for CPU: utime+stime of herald (master +
#      workers) and of every redis-server, read from /proc before and after
#      the run, divided by the publications made (rate x (warmup +
#      duration)); connection set-up is included and is small next to it.
#
#   tests/bench/shards.sh [--smoke] [--runs N] [--results DIR]
#                         [--channels N] [--rates R1,R2,...] [--cpu-rate R]
#                         [--workers N]
HB_NAME=shards
source "$(dirname "${BASH_SOURCE[0]}")/hb_lib.sh"
hb_parse_common "$@"

CHANNELS=1000 PUBS=8 RATES=5000,10000,20000,40000 CPU_RATE=5000 DUR=5 WARM=1 WORKERS=2
if [ "$HB_SMOKE" = 1 ]; then
    CHANNELS=100 PUBS=2 RATES=500 CPU_RATE=500 DUR=1 WARM=0.5
fi
set -- "${HB_ARGS[@]+"${HB_ARGS[@]}"}"
while [ $# -gt 0 ]; do
    case "$1" in
    --channels) CHANNELS=$2; shift ;;
    --rates) RATES=$2; shift ;;
    --cpu-rate) CPU_RATE=$2; shift ;;
    --workers) WORKERS=$2; shift ;;
    *) hb_die "unknown option $1" ;;
    esac
    shift
done

TICK=$(getconf CLK_TCK)
SHARD_PIDS=() SHARD_PORTS=()

# cpu_ticks PID...: utime + stime of the processes (and their children's
# live processes: herald's workers)
cpu_ticks() {
    local total=0 p kids
    for p in "$@"; do
        kids=$(pgrep -P "$p" || true)
        for q in $p $kids; do
            [ -r "/proc/$q/stat" ] || continue
            # the process title may hold spaces: count fields after ")"
            total=$(( total + $(sed 's/.*) //' "/proc/$q/stat" | awk '{print $12 + $13}') ))
        done
    done
    echo "$total"
}

start_shards() {
    local n=$1 i port
    SHARD_PIDS=() SHARD_PORTS=()
    for i in $(seq 1 "$n"); do
        port=$(hb_free_port)
        redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
            --daemonize no --maxclients 10000 --logfile "$HB_TMP/redis-$port.log" &
        SHARD_PIDS+=($!)
        SHARD_PORTS+=("$port")
        for _ in $(seq 1 100); do
            redis-cli -p "$port" ping 2>/dev/null | grep -q PONG && break
            sleep 0.05
        done
    done
    # hb_start_herald writes redis.url from HB_REDIS_PORT; the shard list
    # replaces it below
    HB_REDIS_PORT=${SHARD_PORTS[0]}
}

stop_shards() {
    local p
    for p in "${SHARD_PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    SHARD_PIDS=()
}

start_herald_on_shards() {
    local n=$1
    hb_start_herald "$WORKERS" 256   # writes $HB_TMP/herald.json, starts it
    [ "$n" -gt 1 ] || return 0
    hb_stop_herald
    local list
    list=$(printf '{"url": "redis://127.0.0.1:%s"},' "${SHARD_PORTS[@]}")
    jq --argjson shards "[${list%,}]" 'del(.redis.url) | .redis.shards = $shards' \
        "$HB_TMP/herald.json" > "$HB_TMP/herald-shards.json"
    mv "$HB_TMP/herald-shards.json" "$HB_TMP/herald.json"
    "$HB_HERALD" -c "$HB_TMP/herald.json" >>"$HB_TMP/herald.log" 2>&1 &
    HB_HERALD_PID=$!
    for _ in $(seq 1 200); do
        if curl -s "$HB_METRICS" 2>/dev/null | grep -q '^herald_redis_up{.*} 1' \
            && ! curl -s "$HB_METRICS" | grep -q '^herald_redis_up{.*} 0'; then
            return 0
        fi
        sleep 0.05
    done
    hb_die "herald did not come up on $n shards"
}

status=0
echo '[]' > "$HB_RESULTS/cpu.json"
for n in 1 3; do
    start_shards "$n"
    start_herald_on_shards "$n"
    for run in $(seq 1 "$HB_RUNS"); do
        hb_log "$n shard(s), run $run/$HB_RUNS: ladder $RATES"
        hb_bench "$HB_RESULTS/shards$n-ladder-$run.json" --label "shards=$n run=$run" \
            -c "$CHANNELS" --channels "$CHANNELS" --subs-per-conn 1 --spread rr \
            --publishers "$PUBS" --rate "$RATES" --duration "$DUR" --warmup "$WARM" \
            --drain 30 --stop-p99 2s -q || status=1
        hb_log "$n shard(s), run $run/$HB_RUNS: CPU at $CPU_RATE/s"
        h0=$(cpu_ticks "$HB_HERALD_PID"); r0=$(cpu_ticks "${SHARD_PIDS[@]}")
        hb_bench "$HB_RESULTS/shards$n-cpu-$run.json" --label "shards=$n cpu run=$run" \
            -c "$CHANNELS" --channels "$CHANNELS" --subs-per-conn 1 --spread rr \
            --publishers "$PUBS" --rate "$CPU_RATE" --duration "$DUR" --warmup "$WARM" \
            --drain 30 -q || status=1
        h1=$(cpu_ticks "$HB_HERALD_PID"); r1=$(cpu_ticks "${SHARD_PIDS[@]}")
        jq --arg n "$n" --arg run "$run" --arg h "$((h1 - h0))" --arg r "$((r1 - r0))" \
            --arg tick "$TICK" --arg rate "$CPU_RATE" --arg d "$DUR" --arg w "$WARM" \
            --slurpfile b "$HB_RESULTS/shards$n-cpu-$run.json" '
            (($rate | tonumber) * (($d | tonumber) + ($w | tonumber))) as $pubs
            | . + [{shards: ($n | tonumber), run: ($run | tonumber), publishes: $pubs,
                    keepup: $b[0].steps[0].keepup,
                    herald_us_per_publish: (($h | tonumber) / ($tick | tonumber) * 1e6 / $pubs),
                    redis_us_per_publish: (($r | tonumber) / ($tick | tonumber) * 1e6 / $pubs)}]' \
            "$HB_RESULTS/cpu.json" > "$HB_RESULTS/cpu.tmp" && mv "$HB_RESULTS/cpu.tmp" "$HB_RESULTS/cpu.json"
    done
    hb_stop_herald
    stop_shards
done

summary=$(jq -n --slurpfile cpu "$HB_RESULTS/cpu.json" \
    --argjson s1 "$(hb_steps_json "$HB_RESULTS"/shards1-ladder-*.json)" \
    --argjson s3 "$(hb_steps_json "$HB_RESULTS"/shards3-ladder-*.json)" \
    --argjson counts "$(hb_counts_json "$HB_RESULTS"/shards*-*.json)" "$HB_JQ_DEFS"'
    def best: [.[] | select((.keepup // 0) >= 0.95 and (.p99_ms // 1e9) <= 1000)] | max_by(.pubs_per_s);
    def cpu(n): [$cpu[0][] | select(.shards == n)];
    {scenario: "shards", counts: $counts,
     one: {steps: $s1, max_sustained: ($s1 | best),
           herald_us_per_publish: (cpu(1) | map(.herald_us_per_publish) | median | r(1)),
           redis_us_per_publish: (cpu(1) | map(.redis_us_per_publish) | median | r(1))},
     three: {steps: $s3, max_sustained: ($s3 | best),
             herald_us_per_publish: (cpu(3) | map(.herald_us_per_publish) | median | r(1)),
             redis_us_per_publish: (cpu(3) | map(.redis_us_per_publish) | median | r(1))}}')
echo "$summary" > "$HB_RESULTS/summary.json"
hb_print_steps "1 Redis (redis.url), $CHANNELS channels x 1 subscriber, medians of $HB_RUNS" "$(echo "$summary" | jq .one.steps)"
hb_print_steps "3 shards (redis.shards), $CHANNELS channels x 1 subscriber, medians of $HB_RUNS" "$(echo "$summary" | jq .three.steps)"
echo "$summary" | jq -r '"\nat \('"$CPU_RATE"')/s, medians: 1 Redis: herald \(.one.herald_us_per_publish) us, Redis \(.one.redis_us_per_publish) us CPU per publish; 3 shards: herald \(.three.herald_us_per_publish) us, Redis (all shards) \(.three.redis_us_per_publish) us",
  "max sustained: 1 Redis \(.one.max_sustained.pubs_per_s // "none")/s, 3 shards \(.three.max_sustained.pubs_per_s // "none")/s"'
[ "$(echo "$summary" | jq .counts.ok)" = true ] || status=1
hb_finish $status
