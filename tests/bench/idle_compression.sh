#!/usr/bin/env bash
# idle_compression.sh: resident memory per idle connection with
# permessage-deflate off and on (docs/configuration.md, compression.*).
#
# For each mode a fresh redis-server and herald (2 workers) start on free
# loopback ports; N connections (10,000 by default) are opened by several
# client processes, each from its own loopback source address
# (127.0.S.2, 127.0.S.3, ...; a fresh S per run, so no run trips over the
# TIME_WAIT sockets of the one before). Every connection does the upgrade
# offering permessage-deflate (as browsers do), sends `connect` with a
# token, reads the reply and then idles. herald's RSS is the sum of VmRSS
# over the master and its workers (/proc), read before the clients connect
# and again once every connection is up and has settled; the delta divided
# by the connections is the cost of one idle connection.
#
# Modes:
#   off     compression.enabled false (the offer is declined)
#   on      compression.enabled true; the client compresses its connect
#           command like a browser does, so herald has both an inflater
#           (for the client's messages) and a deflater (for its replies)
#   on-srv  compression.enabled true; the client negotiates the extension
#           but sends its connect uncompressed: only herald's deflater
#
# herald-bench (tests/bench) does not offer permessage-deflate, so the
# clients here are small raw-socket asyncio processes in Python.
#
#   tests/bench/idle_compression.sh [--connections N] [--runs R] [--procs P]
#       [--workers W] [--modes off,on,on-srv] [--settle S] [--results DIR]
#       [--markdown FILE] [--smoke]
#
# Prints one line per run and a table of medians (RSS bytes per connection
# and the on/off ratio); --markdown FILE writes that table as a Markdown
# section (for docs/benchmarks.md). Needs root to raise the fd limit
# (ulimit -n) beyond the hard limit for herald and the clients.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERALD=${HERALD_BIN:-$ROOT/build/master/herald}
PY=/usr/bin/python3
N=10000 RUNS=3 PROCS=4 WORKERS=2 MODES=off,on,on-srv SETTLE=3
RESULTS= MARKDOWN=

while [ $# -gt 0 ]; do
    case "$1" in
    --connections) N=$2; shift ;;
    --runs) RUNS=$2; shift ;;
    --procs) PROCS=$2; shift ;;
    --workers) WORKERS=$2; shift ;;
    --modes) MODES=$2; shift ;;
    --settle) SETTLE=$2; shift ;;
    --results) RESULTS=$2; shift ;;
    --markdown) MARKDOWN=$2; shift ;;
    --herald) HERALD=$2; shift ;;
    --smoke) N=200 RUNS=1 PROCS=2 SETTLE=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed 's/^# \{0,1\}//' | head -n -1; exit 0 ;;
    *) echo "idle_compression: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

[ -x "$HERALD" ] || { echo "idle_compression: herald not found: $HERALD" >&2; exit 2; }
command -v redis-server >/dev/null || { echo "idle_compression: redis-server not found" >&2; exit 2; }

# herald and the clients inherit this; root may raise the hard limit
ulimit -Hn 1048576 2>/dev/null || true
ulimit -n "$(ulimit -Hn)"

RESULTS=${RESULTS:-/tmp/herald-bench-results/idle-compression-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$RESULTS"
TMP=$(mktemp -d /tmp/idle-compression.XXXXXX)
REDIS_PID= HERALD_PID= CLIENT_PIDS=()
SECRET="idle-compression-secret-0123456789abcdef"

log() { echo "== idle_compression: $*" >&2; }

cleanup() {
    local p
    touch "$TMP/stop" 2>/dev/null || true
    for p in "${CLIENT_PIDS[@]+"${CLIENT_PIDS[@]}"}"; do
        kill "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    stop_herald
    if [ -n "$REDIS_PID" ]; then
        kill "$REDIS_PID" 2>/dev/null || true
        wait "$REDIS_PID" 2>/dev/null || true
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# the sum of VmRSS (KiB) of pid and its children
herald_rss_kb() {
    local pid=$1 total=0 kid kb
    for kid in $pid $(cat /proc/"$pid"/task/*/children 2>/dev/null); do
        kb=$(awk '/^VmRSS:/ {print $2}' /proc/"$kid"/status 2>/dev/null || echo 0)
        total=$((total + ${kb:-0}))
    done
    echo "$total"
}

metric() {      # metric NAME: the sum of its samples
    curl -s "http://127.0.0.1:$ADMIN/metrics" | awk -v n="$1" '
        $1 == n || index($1, n "{") == 1 { s += $2 } END { printf "%d\n", s }'
}

start_redis() {
    REDIS_PORT=$(free_port)
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
        --logfile "$TMP/redis.log" &
    REDIS_PID=$!
    for _ in $(seq 1 100); do
        redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && return 0
        sleep 0.05
    done
    echo "idle_compression: redis-server did not start" >&2
    exit 1
}

start_herald() {        # start_herald true|false
    PORT=$(free_port) ADMIN=$(free_port)
    cat > "$TMP/herald.json" <<JSON
{
    "workers": $WORKERS,
    "listen": { "address": "127.0.0.1", "port": $PORT, "backlog": 65535 },
    "admin": { "address": "127.0.0.1", "port": $ADMIN },
    "redis": { "url": "redis://127.0.0.1:$REDIS_PORT" },
    "auth": { "hmac_secret": "$SECRET", "allow_anonymous": false },
    "log": { "level": "warn", "format": "text" },
    "timeouts": { "shutdown_ms": 2000, "handshake_ms": 60000, "connect_ms": 120000 },
    "limits": { "commands_per_second": 0, "max_connections": 0, "connections_per_ip": 0 },
    "compression": { "enabled": $1 },
    "namespaces": { "default": {} }
}
JSON
    "$HERALD" -t -c "$TMP/herald.json" >/dev/null
    "$HERALD" -c "$TMP/herald.json" >>"$TMP/herald.log" 2>&1 &
    HERALD_PID=$!
    local m
    for _ in $(seq 1 200); do
        m=$(curl -s "http://127.0.0.1:$ADMIN/metrics" 2>/dev/null || true)
        if grep -q '^herald_workers{state="running"} '"$WORKERS"'$' <<<"$m" \
           && ! grep -q '^herald_redis_up{.*} 0$' <<<"$m"; then
            return 0
        fi
        kill -0 "$HERALD_PID" 2>/dev/null || break
        sleep 0.05
    done
    tail -n 20 "$TMP/herald.log" >&2
    echo "idle_compression: herald did not start" >&2
    exit 1
}

stop_herald() {
    [ -n "$HERALD_PID" ] || return 0
    kill -TERM "$HERALD_PID" 2>/dev/null || true
    for _ in $(seq 1 200); do
        kill -0 "$HERALD_PID" 2>/dev/null || break
        sleep 0.05
    done
    kill -KILL "$HERALD_PID" 2>/dev/null || true
    wait "$HERALD_PID" 2>/dev/null || true
    HERALD_PID=
}

cat > "$TMP/client.py" <<'PY'
"""N idle herald connections from one source address, on raw sockets.
argv: port n source secret offer(0/1) compress(0/1) ready_file stop_file"""
import asyncio, base64, hashlib, hmac, json, os, struct, sys, time, zlib

port, n, source, secret = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4].encode()
offer, compress = sys.argv[5] == "1", sys.argv[6] == "1"
ready_file, stop_file = sys.argv[7], sys.argv[8]
stats = {"ok": 0, "failed": 0, "negotiated": 0, "closed": 0, "errors": []}


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def token(sub):
    h = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    p = b64(json.dumps({"sub": sub, "exp": int(time.time()) + 3600}).encode())
    sig = hmac.new(secret, (h + "." + p).encode(), hashlib.sha256).digest()
    return h + "." + p + "." + b64(sig)


def frame(op, payload, rsv1=False):
    key = os.urandom(4)
    n = len(payload)
    b0 = 0x80 | (0x40 if rsv1 else 0) | op
    hdr = struct.pack("!BB", b0, 0x80 | n) if n < 126 else struct.pack("!BBH", b0, 0xFE, n)
    masked = bytes(b ^ key[i & 3] for i, b in enumerate(payload))
    return hdr + key + masked


async def read_frame(r):
    b0, b1 = await r.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", await r.readexactly(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", await r.readexactly(8))[0]
    data = await r.readexactly(n)
    if b0 & 0x40:
        data = zlib.decompressobj(-15).decompress(data + b"\x00\x00\xff\xff")
    return b0 & 0x0F, data


async def hold(r, w):
    try:
        while True:
            op, data = await read_frame(r)
            if op == 9:
                w.write(frame(10, data))
            elif op == 8:
                stats["closed"] += 1
                return
    except (asyncio.IncompleteReadError, ConnectionError):
        stats["closed"] += 1


async def one(i, sem, conns):
    async with sem:
        try:
            r, w = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0),
                                                 limit=4096)
            key = base64.b64encode(os.urandom(16)).decode()
            req = ("GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
                   "Sec-WebSocket-Protocol: herald.v1\r\n" % (port, key))
            if offer:
                req += "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
            w.write((req + "\r\n").encode())
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 60)
            if b" 101 " not in head.split(b"\r\n")[0]:
                raise RuntimeError("no 101: %r" % head[:80])
            neg = b"permessage-deflate" in head.lower()
            cmd = json.dumps({"id": 1, "method": "connect",
                              "params": {"token": token("u%s-%d" % (source, i))}}).encode()
            if neg and compress:
                co = zlib.compressobj(6, zlib.DEFLATED, -9)
                cmd = (co.compress(cmd) + co.flush(zlib.Z_SYNC_FLUSH))[:-4]
                w.write(frame(1, cmd, rsv1=True))
            else:
                w.write(frame(1, cmd))
            while True:
                op, data = await asyncio.wait_for(read_frame(r), 60)
                if op == 1:
                    break
                if op == 9:
                    w.write(frame(10, data))
            if b'"result"' not in data:
                raise RuntimeError("connect failed: %r" % data[:120])
            stats["ok"] += 1
            stats["negotiated"] += neg
            conns.append((r, w, asyncio.ensure_future(hold(r, w))))
        except Exception as e:
            stats["failed"] += 1
            if len(stats["errors"]) < 5:
                stats["errors"].append(repr(e))


async def main():
    sem = asyncio.Semaphore(200)
    conns = []
    await asyncio.gather(*(one(i, sem, conns) for i in range(n)))
    with open(ready_file + ".tmp", "w") as f:
        f.write(json.dumps(stats) + "\n")
    os.replace(ready_file + ".tmp", ready_file)
    while not os.path.exists(stop_file):
        await asyncio.sleep(0.2)
    with open(ready_file + ".tmp", "w") as f:
        f.write(json.dumps(stats) + "\n")
    os.replace(ready_file + ".tmp", ready_file)
    for r, w, t in conns:
        t.cancel()
        w.close()

asyncio.run(main())
PY

median() { sort -n | awk '{a[NR]=$1} END { if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2 }'; }

log "results in $RESULTS; $N connections, $PROCS client processes, $WORKERS workers, modes $MODES, $RUNS runs"
{
    echo "nproc: $(nproc)"
    echo "cpu: $(awk -F: '/model name/ {print $2; exit}' /proc/cpuinfo | sed 's/^ *//')"
    echo "memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
    echo "kernel: $(uname -sr)"
    echo "libwebsockets: $(dpkg-query -W -f '${Version}' libwebsockets17 2>/dev/null || echo '?')"
    echo "zlib: $($PY -c 'import zlib; print(zlib.ZLIB_RUNTIME_VERSION)')"
} > "$RESULTS/machine.txt"

start_redis
: > "$RESULTS/runs.tsv"
set_no=10
for mode in ${MODES//,/ }; do
    case "$mode" in
    off) enabled=false compress=1 ;;
    on) enabled=true compress=1 ;;
    on-srv) enabled=true compress=0 ;;
    *) echo "idle_compression: unknown mode $mode" >&2; exit 2 ;;
    esac
    for run in $(seq 1 "$RUNS"); do
        set_no=$((set_no + 1))
        start_herald "$enabled"
        sleep 1
        rss0=$(herald_rss_kb "$HERALD_PID")
        rm -f "$TMP"/ready.* "$TMP/stop"
        CLIENT_PIDS=()
        per=$(( (N + PROCS - 1) / PROCS )) left=$N
        for p in $(seq 1 "$PROCS"); do
            k=$(( left < per ? left : per )); left=$((left - k))
            [ "$k" -gt 0 ] || continue
            $PY "$TMP/client.py" "$PORT" "$k" "127.0.$set_no.$((p + 1))" "$SECRET" 1 "$compress" \
                "$TMP/ready.$p" "$TMP/stop" &
            CLIENT_PIDS+=($!)
        done
        t0=$(date +%s)
        while [ "$(ls "$TMP"/ready.* 2>/dev/null | wc -l)" -lt "${#CLIENT_PIDS[@]}" ]; do
            if [ $(( $(date +%s) - t0 )) -gt 300 ]; then
                echo "idle_compression: clients not ready after 300 s" >&2
                exit 1
            fi
            sleep 0.2
        done
        sleep "$SETTLE"
        rss1=$(herald_rss_kb "$HERALD_PID")
        gauge=$(metric herald_connections)
        read -r ok failed neg <<<"$(cat "$TMP"/ready.* | $PY -c '
import json, sys
s = [json.loads(l) for l in sys.stdin if l.strip()]
print(sum(x["ok"] for x in s), sum(x["failed"] for x in s), sum(x["negotiated"] for x in s))')"
        touch "$TMP/stop"
        for p in "${CLIENT_PIDS[@]}"; do wait "$p" || true; done
        closed=$(cat "$TMP"/ready.* | $PY -c '
import json, sys
print(sum(json.loads(l)["closed"] for l in sys.stdin if l.strip()))')
        CLIENT_PIDS=()
        stop_herald
        per_conn=$(( (rss1 - rss0) * 1024 / (ok > 0 ? ok : 1) ))
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$mode" "$run" "$ok" "$failed" "$neg" \
            "$gauge" "$closed" "$rss0" "$rss1" "$per_conn" >> "$RESULTS/runs.tsv"
        log "$mode run $run: $ok ok, $failed failed, $neg negotiated deflate, gauge $gauge," \
            "closed early $closed; herald RSS $((rss0 / 1024)) -> $((rss1 / 1024)) MiB:" \
            "$per_conn B per connection"
        if [ "$failed" != 0 ] || [ "$gauge" != "$ok" ] || [ "$closed" != 0 ]; then
            echo "idle_compression: $mode run $run is not clean (see above)" >&2
            exit 1
        fi
        if [ "$enabled" = true ] && [ "$neg" != "$ok" ]; then
            echo "idle_compression: compression on but only $neg of $ok negotiated it" >&2
            exit 1
        fi
        if [ "$enabled" = false ] && [ "$neg" != 0 ]; then
            echo "idle_compression: compression off but $neg negotiated it" >&2
            exit 1
        fi
    done
done

off=$(awk '$1 == "off" {print $10}' "$RESULTS/runs.tsv" | median)
{
    printf '| mode | connections | runs | herald RSS per connection (median) | vs off |\n'
    printf '|------|-------------|------|------------------------------------|--------|\n'
    for mode in ${MODES//,/ }; do
        m=$(awk -v m="$mode" '$1 == m {print $10}' "$RESULTS/runs.tsv" | median)
        all=$(awk -v m="$mode" '$1 == m {printf "%s%s", sep, $10; sep=", "}' "$RESULTS/runs.tsv")
        ratio=$(awk -v a="$m" -v b="${off:-0}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')
        printf '| %s | %s | %s | %s B (runs: %s) | %s |\n' "$mode" "$N" "$RUNS" "$m" "$all" "$ratio"
    done
} > "$RESULTS/table.md"
echo
cat "$RESULTS/table.md"
if [ -n "$MARKDOWN" ]; then
    cp "$RESULTS/table.md" "$MARKDOWN"
fi
