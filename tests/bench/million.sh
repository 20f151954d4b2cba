#!/usr/bin/env bash
# million.sh: a million connections on one node (issue 21), end to end,
# with one command; --size makes it small enough to run on a shared box.
#
# N connections (default 1,000,000) connect with a token and subscribe to
# one channel that all of them share, spread over enough herald-bench
# processes and loopback source addresses (one per 10,000). Then, in one
# herald-bench run of two steps:
#   step 1, idle (--hold s): nothing is published. While it runs, this
#     script records herald's memory and the kernel's (/proc/meminfo Slab,
#     /proc/net/sockstat), herald's CPU while idle (heartbeats only), the
#     /metrics render time (5 GETs), and a SIGHUP scale change (one worker
#     more; nobody may be dropped: closes must stay 0);
#   step 2, fan-out (--hold s): one publication a second to the shared
#     channel, so each one is delivered to all N; the step's max latency
#     is the time until the last delivery, and herald's CPU per delivery.
# The connect storm (connects/s, handshake p99) comes from the connect
# phase. Results: million-N.json (herald-bench), million.txt (what this
# script measured), machine.txt, sysctl.txt, summary.json.
#
# As root (unless --no-sysctl) it sets the kernel settings a million
# sockets on one box need (docs/operations.md, "A million connections")
# and puts the old values back at exit; it also raises the fd limits
# herald and herald-bench inherit. Not root: it runs with what it has and
# says so (the worker count then follows the fd limit).
#
#   tests/bench/million.sh [--size N] [--ramp R] [--hold SECONDS]
#                          [--no-sysctl] [--results DIR] [--keep]
#                          [--smoke]            (2,000 connections, short)
HB_NAME=million
source "$(dirname "${BASH_SOURCE[0]}")/hb_lib.sh"
hb_parse_common "$@"

SIZE=1000000 RAMP=20000 HOLD=60 SYSCTL=1
if [ "$HB_SMOKE" = 1 ]; then
    SIZE=2000 RAMP=0 HOLD=6
fi
set -- "${HB_ARGS[@]+"${HB_ARGS[@]}"}"
while [ $# -gt 0 ]; do
    case "$1" in
    --size) SIZE=$2; shift ;;
    --ramp) RAMP=$2; shift ;;
    --hold) HOLD=$2; shift ;;
    --no-sysctl) SYSCTL=0 ;;
    *) hb_die "unknown option $1" ;;
    esac
    shift
done
[ "$SIZE" -ge 1 ] 2>/dev/null || hb_die "--size: a positive count"
[ "$HOLD" -ge 4 ] 2>/dev/null || hb_die "--hold: at least 4 seconds"

OUT="$HB_RESULTS/million.txt"
: > "$OUT"
note() { echo "$*" | tee -a "$OUT" >&2; }

# ---- kernel settings -------------------------------------------------------
# name value: each only ever raised (a box tuned higher keeps its value).
# Sockets: 2 per connection on one box (herald's end and the bench's).
SAVED=()
want_sysctl() {
    local name=$1 want=$2 path cur
    path=/proc/sys/${name//.//}
    [ -r "$path" ] || { note "sysctl $name: not on this kernel"; return 0; }
    cur=$(tr -s '\t ' ' ' < "$path")
    if [ "$SYSCTL" = 0 ] || [ "$(id -u)" != 0 ]; then
        note "sysctl $name = $cur (left as is)"
        return 0
    fi
    if [ "$cur" = "$want" ]; then
        note "sysctl $name = $cur"
        return 0
    fi
    if echo "$want" > "$path" 2>/dev/null; then
        SAVED+=("$name=$cur")
        note "sysctl $name = $want (was $cur)"
    else
        note "sysctl $name = $cur (could not set $want: read-only here)"
    fi
}
max_of() { local a=$1 b=$2; [ "$a" -gt "$b" ] && echo "$a" || echo "$b"; }
restore_sysctl() {
    local kv name
    for kv in "${SAVED[@]+"${SAVED[@]}"}"; do
        name=${kv%%=*}
        echo "${kv#*=}" > "/proc/sys/${name//.//}" 2>/dev/null || true
        note "sysctl $name = ${kv#*=} (restored)"
    done
    SAVED=()
}
# set +e: under errexit the trap itself stops at the first failing
# command, and `(exit $rc)` is one whenever the run failed: herald's Redis
# was then left running
trap 'rc=$?; set +e; restore_sysctl; (exit $rc); hb_cleanup' EXIT

socks=$((2 * SIZE + 100000))
want_sysctl fs.file-max "$(max_of "$(cat /proc/sys/fs/file-max)" "$socks")"
want_sysctl fs.nr_open "$(max_of "$(cat /proc/sys/fs/nr_open)" $((SIZE + 100000)))"
want_sysctl net.core.somaxconn "$(max_of "$(cat /proc/sys/net/core/somaxconn)" 65535)"
want_sysctl net.ipv4.tcp_max_syn_backlog \
    "$(max_of "$(cat /proc/sys/net/ipv4/tcp_max_syn_backlog)" 65535)"
want_sysctl net.core.netdev_max_backlog \
    "$(max_of "$(cat /proc/sys/net/core/netdev_max_backlog)" 65536)"
# ephemeral ports: left as they are (32768-60999 by default, ~28,000 per
# source address); the load side uses one loopback source address per
# 10,000 connections instead (hb_sources). Widening the range on a shared
# box would let connect() take ports that servers bind to later.
note "sysctl net.ipv4.ip_local_port_range = $(tr -s '\t ' ' ' < /proc/sys/net/ipv4/ip_local_port_range) (left as is: one source address per 10,000 connections)"
# tcp_mem (pages): what queued data may take before TCP squeezes buffers.
# Idle sockets hold no data; the fan-out step queues one message per
# socket at once: 3 / 4 / 6 GiB of 4 KiB pages at least.
read -r m1 m2 m3 < /proc/sys/net/ipv4/tcp_mem
want_sysctl net.ipv4.tcp_mem \
    "$(max_of "$m1" 786432) $(max_of "$m2" 1048576) $(max_of "$m3" 1572864)"
# orphans of a million closes at the end
want_sysctl net.ipv4.tcp_max_orphans "$(max_of "$(cat /proc/sys/net/ipv4/tcp_max_orphans)" 262144)"

# fd limits: raised for us and everything we start (herald's master raises
# its soft limit to the hard one itself)
if [ "$(id -u)" = 0 ] && [ "$SYSCTL" = 1 ]; then
    nr_open=$(cat /proc/sys/fs/nr_open)
    if [ "$(ulimit -Hn)" != unlimited ] && [ "$(ulimit -Hn)" -lt "$nr_open" ]; then
        ulimit -Hn "$nr_open" 2>/dev/null || true
    fi
fi
ulimit -Sn "$(ulimit -Hn)" 2>/dev/null || true
hb_machine > "$HB_RESULTS/machine.txt"   # again: with the limits in force
for f in fs/file-max fs/nr_open net/core/somaxconn net/ipv4/ip_local_port_range \
         net/ipv4/tcp_mem net/ipv4/tcp_max_syn_backlog net/ipv4/tcp_max_orphans; do
    echo "$f: $(tr -s '\t ' ' ' < /proc/sys/$f)"
done > "$HB_RESULTS/sysctl.txt"

# ---- herald ----------------------------------------------------------------
# workers as "workers": "auto" would count them for max_connections = N
# (docs/configuration.md): one per CPU, or more when N does not fit in
# that many workers' descriptors (less 256 each for other uses)
nofile=$(ulimit -Hn)
[ "$nofile" = unlimited ] && nofile=$(cat /proc/sys/fs/nr_open)
per=$((nofile - 256))
workers=$(( (SIZE + 1000 + per - 1) / per ))
[ "$workers" -lt "$(nproc)" ] && workers=$(nproc)
[ "$workers" -gt 255 ] && hb_die "$SIZE connections need $workers workers at $nofile fds each: raise the fd limit (run as root)"
bench_per=$(( nofile - 1000 < 15000 ? nofile - 1000 : 15000 ))
procs=$(( (SIZE + bench_per - 1) / bench_per ))
note "size $SIZE, $workers workers, $procs load processes, fd limit $nofile, ramp ${RAMP}/s"

hb_start_redis
# Redis timeouts for a box that runs the load side too: with N/15,000 load
# processes and N/20,000 workers on a few cores, the run queue is 100 deep
# during the storm and a Redis round trip can take seconds; the defaults
# (2 s command timeout, 500 ms subscriber heartbeats) then tear the Redis
# links down and fail the pending subscribes with 503 (seen at 1M on 2
# cores: 1,324 command timeouts, 405,148 subscribes refused).
HB_REDIS_EXTRA='"command_timeout_ms": 30000, "heartbeat_ms": 5000'
hb_start_herald "$workers" 256

metric_sum() {   # metric_sum NAME: the sum of a metric's series now
    curl -s "$HB_METRICS" | awk -v m="$1" '$1 == m || index($1, m "{") == 1 { s += $2 } END { printf "%.6f\n", s }'
}
meminfo() { awk -v k="$1:" '$1 == k { print $2 }' /proc/meminfo; }
sockstat() { grep '^TCP:' /proc/net/sockstat; }

slab0=$(meminfo Slab)
sock0=$(sockstat)
connect_timeout=$(( RAMP > 0 ? SIZE / RAMP * 3 + 120 : SIZE / 2000 + 120 ))
t_start=$SECONDS
hb_bench "$HB_RESULTS/million-$SIZE.json" --label "million n=$SIZE" \
    -c "$SIZE" --channels 1 --subs-per-conn 1 --publishers 1 --rate 0,1 \
    --warmup 2 --duration "$HOLD" --drain 10 --ramp "$RAMP" --inflight 1000 \
    --procs "$procs" --connect-timeout "$connect_timeout" --conn-timeout 60 \
    --source-addrs "$(hb_sources "$SIZE" 37)" -q > "$HB_TMP/bench.out" 2>&1 &
bench_pid=$!

# all connected (N subscribers and the publisher): the idle step begins
want=$((SIZE + 1)) have=0
while kill -0 "$bench_pid" 2>/dev/null; do
    have=$(metric_sum herald_connections)
    [ "${have%.*}" -ge "$want" ] && break
    [ $((SECONDS - t_start)) -gt "$connect_timeout" ] && break
    sleep 0.5
done
note "connected: ${have%.*} of $want after $((SECONDS - t_start)) s"

if [ "${have%.*}" -ge "$want" ]; then
    # idle: CPU over half the hold (heartbeats and nothing else)
    window=$(( HOLD / 2 ))
    cpu0=$(metric_sum herald_process_cpu_seconds_total)
    sleep "$window"
    cpu1=$(metric_sum herald_process_cpu_seconds_total)
    idle_cpu=$(awk -v a="$cpu0" -v b="$cpu1" -v w="$window" 'BEGIN { printf "%.4f", (b - a) / w }')
    note "idle CPU: $idle_cpu CPU-seconds a second over $window s ($(awk -v c="$idle_cpu" -v n="$SIZE" 'BEGIN { printf "%.3f", c * 1e6 / n }') us a second per connection)"
    rss=$(metric_sum herald_process_resident_memory_bytes)
    note "herald RSS: $(awk -v r="$rss" 'BEGIN { printf "%.1f MiB", r / 1048576 }')"
    slab1=$(meminfo Slab)
    note "kernel Slab: $((slab0 / 1024)) -> $((slab1 / 1024)) MiB ($(( (slab1 - slab0) * 1024 / SIZE )) B per connection, both ends)"
    note "sockstat before: $sock0"
    note "sockstat now:    $(sockstat)"
    # /metrics render time: 5 GETs, median
    tm=$(for i in 1 2 3 4 5; do curl -s -o /dev/null -w '%{time_total}\n' "$HB_METRICS"; done | hb_median)
    note "/metrics: $(curl -s "$HB_METRICS" | wc -c) bytes, median of 5 GETs $(awk -v t="$tm" 'BEGIN { printf "%.1f ms", t * 1000 }')"
    # SIGHUP scale change: one worker more; nobody is on a retired worker,
    # so nobody may be dropped (the bench counts closes)
    sed -i "s/\"workers\": $workers,/\"workers\": $((workers + 1)),/" "$HB_TMP/herald.json"
    t0=$SECONDS
    kill -HUP "$HB_HERALD_PID"
    scaled=no
    while [ $((SECONDS - t0)) -lt 30 ]; do
        r=$(curl -s "$HB_METRICS" | awk '/^herald_workers\{state="running"\}/ {print $2}')
        if [ "${r:-0}" = $((workers + 1)) ]; then scaled=yes; break; fi
        sleep 0.2
    done
    note "SIGHUP $workers -> $((workers + 1)) workers: $scaled after $((SECONDS - t0)) s; herald_connections $(metric_sum herald_connections | cut -d. -f1)"
fi

status=0
wait "$bench_pid" || status=1
J="$HB_RESULTS/million-$SIZE.json"
[ -s "$J" ] || { cat "$HB_TMP/bench.out" >&2; hb_die "herald-bench wrote no results"; }
jq -n --slurpfile r "$J" --arg size "$SIZE" --arg workers "$workers" '$r[0] as $b | {
    scenario: "million", connections: ($size | tonumber), workers: ($workers | tonumber),
    ok: $b.ok, ready: $b.connect.ready, failed: $b.connect.failed, closes: $b.counts.closes,
    connects_per_s: $b.connect.per_second, handshake_p99_ms: $b.connect.handshake_ms.p99,
    connect_p99_ms: $b.connect.connect_ms.p99,
    rss_per_connection_bytes: $b.server.rss_per_connection_bytes,
    fanout: ($b.steps[1] // {} | {deliveries_per_s, last_delivery_max_ms: .latency_ms.max,
        p50_ms: .latency_ms.p50, p99_ms: .latency_ms.p99, server_us_per_delivery}),
    missing: $b.counts.missing, duplicates: $b.counts.duplicates
  }' > "$HB_RESULTS/summary.json"
printf '\nmillion: %s connections (%s)\n' "$SIZE" "$(date -u +%FT%TZ)"
jq -r '"  ready \(.ready)/\(.connections), failed \(.failed), closes \(.closes), \(.workers) workers",
       "  connect storm: \(.connects_per_s)/s, handshake p99 \(.handshake_p99_ms) ms",
       "  herald RSS per connection: \(.rss_per_connection_bytes) B",
       "  fan-out to all: last delivery \(.fanout.last_delivery_max_ms) ms after the publish (max), p50 \(.fanout.p50_ms) ms, \(.fanout.server_us_per_delivery) us herald CPU per delivery",
       "  missing \(.missing), duplicated \(.duplicates)"' "$HB_RESULTS/summary.json"
cat "$OUT"
[ "$(jq .ok "$HB_RESULTS/summary.json")" = true ] || status=1
[ "$(jq .closes "$HB_RESULTS/summary.json")" = 0 ] || status=1
hb_finish $status
