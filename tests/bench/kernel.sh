#!/usr/bin/env bash
# kernel.sh: the machine's own limit for small messages over loopback TCP:
# raw write() of 100-byte messages, one per syscall and coalesced 16 and
# 256 to a write, over 1 socket and over 1 000 sockets (what a fan-out
# writes to), a writer and a reader process. herald's figures are reported
# as a ratio to these (fanout.sh also runs the probe in its own run).
#
#   tests/bench/kernel.sh [--smoke] [--runs N] [--results DIR] [--seconds S]
HB_NAME=kernel
source "$(dirname "${BASH_SOURCE[0]}")/hb_lib.sh"
hb_parse_common "$@"

SECS=3 SOCKS=1,1000
[ "$HB_SMOKE" = 1 ] && SECS=0.3 SOCKS=1,100
set -- "${HB_ARGS[@]+"${HB_ARGS[@]}"}"
while [ $# -gt 0 ]; do
    case "$1" in
    --seconds) SECS=$2; shift ;;
    *) hb_die "unknown option $1" ;;
    esac
    shift
done

status=0
for run in $(seq 1 "$HB_RUNS"); do
    hb_log "run $run/$HB_RUNS"
    "$HB_BENCH" kernel --sockets "$SOCKS" --batch 1,16,256 --size 100 --seconds "$SECS" \
        --json "$HB_RESULTS/kernel-$run.json" >&2 || status=1
done
rows=$(jq -s "$HB_JQ_DEFS"'[.[].results[]] | group_by([.sockets, .batch]) | map({
    sockets: .[0].sockets, batch: .[0].batch, runs: length,
    msgs_per_s: (map(.msgs_per_s) | median | r(0)),
    msgs_per_writer_cpu_s: (map(.msgs_per_writer_cpu_s) | median | r(0)),
    writer_us_per_write: (map(.writer_us_per_write) | median | r(3))})' "$HB_RESULTS"/kernel-*.json)
jq -n --argjson rows "$rows" '{scenario: "kernel", size: 100, results: $rows}' > "$HB_RESULTS/summary.json"
printf '\nloopback write() of 100-byte messages (medians of %s)\n' "$HB_RUNS"
printf '%8s %6s %14s %20s %14s\n' sockets batch msgs/s msgs/writer-CPU-s us/write
jq -r '.results[] | [.sockets, .batch, .msgs_per_s, .msgs_per_writer_cpu_s, .writer_us_per_write] | @tsv' \
    "$HB_RESULTS/summary.json" | while IFS=$'\t' read -r a b c d e; do
        printf '%8s %6s %14s %20s %14s\n' "$a" "$b" "$c" "$d" "$e"
    done
hb_finish $status
