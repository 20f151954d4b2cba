#!/usr/bin/env bash
# Run every libFuzzer target for a bounded time (default 60 s each).
#   tests/fuzz/run.sh [SECONDS]
# Builds build-fuzz (clang, ASan+UBSan, libFuzzer) on first use. New
# crashes land in build-fuzz/crash-*; add a minimized input to
# tests/fuzz/seeds/<target>/ once fixed so every CI run replays it.
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-60}
if [ ! -d build-fuzz ]; then
    CC=clang meson setup build-fuzz -Dfuzz=true \
        -Db_sanitize=address,undefined -Db_lundef=false >/dev/null
fi
meson compile -C build-fuzz >/dev/null
for t in conf jwt cmd envelope proxy jwks proxyreply apibody wsguard; do
    corpus=build-fuzz/corpus-$t
    mkdir -p "$corpus"
    echo "== fuzz_$t for ${secs}s"
    (cd build-fuzz && ./tests/fuzz/fuzz_$t -max_total_time="$secs" \
        -max_len=70000 "corpus-$t" "../tests/fuzz/seeds/$t")
done
