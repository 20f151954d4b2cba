#!/usr/bin/env bash
# smoke.sh: every benchmark scenario at a tiny size (a few seconds, a few
# hundred connections), for CI. It checks counts, not speed: a scenario
# fails when a subscriber missed or got a duplicated message, a publish
# went unanswered, the bench saw a protocol error, or connections failed.
# Also runs herald-bench's self-test. Takes about 30-40 s.
#
#   tests/bench/smoke.sh [--herald BIN] [--bench BIN]
#   (or HERALD_BIN / HERALD_BENCH in the environment; meson sets both for
#    `meson test --suite bench-smoke`)
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
pass=()
while [ $# -gt 0 ]; do
    case "$1" in
    --herald|--bench) pass+=("$1" "$2"); shift ;;
    *) echo "smoke.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
bench=${HERALD_BENCH:-$here/../../build/tests/bench/herald-bench}
for ((i = 0; i < ${#pass[@]}; i += 2)); do
    [ "${pass[i]}" = --bench ] && bench=${pass[i+1]}
done

start=$SECONDS
failed=()
if ! "$bench" --self-test; then
    failed+=(self-test)
fi
for s in fanout channels latency connect idle kernel; do
    echo "---- $s --smoke"
    out=$(mktemp -d /tmp/hb-smoke-$s.XXXXXX)
    if "$here/$s.sh" --smoke --results "$out" "${pass[@]+"${pass[@]}"}" > "$out/output.txt" 2>&1; then
        tail -n 4 "$out/output.txt" | grep -v '^results:' || true
        rm -rf "$out"
    else
        echo "$s FAILED; its output (kept in $out):"
        tail -n 40 "$out/output.txt"
        failed+=("$s")
    fi
done
echo "---- smoke: $((SECONDS - start)) s"
if [ ${#failed[@]} -gt 0 ]; then
    echo "smoke: FAILED: ${failed[*]}"
    exit 1
fi
echo "smoke: all scenarios OK"
