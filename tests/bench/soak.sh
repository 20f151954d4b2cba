#!/usr/bin/env bash
# Soak (not CI): connection churn, publishing and a reload every 30 s for a
# long time, under the ASan/LSan build; records leak reports, RSS and open
# descriptors of the master and the workers over time.
#
#   CC=clang meson setup /tmp/b-asan /path/to/herald -Db_sanitize=address,undefined \
#       -Db_lundef=false -Dtests=false && ninja -C /tmp/b-asan
#   HERALD_BIN=/tmp/b-asan/master/herald tests/bench/soak.sh [--minutes 30] [--netns]
#
# Options:
#   --minutes N      how long (default 30)
#   --reload-every S seconds between reloads (default 30); the reloads cycle
#                    through: unchanged, replace workers (a worker-level
#                    key), scale 2 -> 3, scale 3 -> 2
#   --rate R         handshake churn per second (default 100)
#   --subs N         subscribers held open, each living 5..60 s (default 400)
#   --pub-rate R     publications per second (default 20)
#   --netns          run everything in a private network namespace (root):
#                    the TcpExt ListenDrops/ListenOverflows deltas are then
#                    herald's own
#   --out DIR        results (default tests/bench/results/soak-DATE)
#   --quarantine-mb N  ASan quarantine (default 0: freed memory is reused at
#                    once, so RSS means something; LSan is unaffected)
#
# Prints a JSON summary at the end and keeps samples.csv (every 10 s:
# master RSS and fds, workers' RSS and fds summed, live connections) and
# the logs in DIR. Exit status 0 when there was no sanitizer report, no
# failed handshake, no lost publication on a stable subscriber and the
# master exited 0.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
MINUTES=30
RELOAD_EVERY=30
RATE=100
SUBS=400
PUB_RATE=20
NETNS=0
OUT=
QUARANTINE_MB=0
while [ $# -gt 0 ]; do
    case "$1" in
    --minutes) MINUTES=$2; shift ;;
    --reload-every) RELOAD_EVERY=$2; shift ;;
    --rate) RATE=$2; shift ;;
    --subs) SUBS=$2; shift ;;
    --pub-rate) PUB_RATE=$2; shift ;;
    --netns) NETNS=1 ;;
    --out) OUT=$2; shift ;;
    --quarantine-mb) QUARANTINE_MB=$2; shift ;;
    *) echo "soak.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
HERALD=${HERALD_BIN:-$ROOT/build/master/herald}
[ -x "$HERALD" ] || { echo "soak.sh: no herald binary at $HERALD (set HERALD_BIN)" >&2; exit 2; }
OUT=${OUT:-$ROOT/tests/bench/results/soak-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

if [ "$NETNS" = 1 ] && [ -z "${SOAK_IN_NETNS:-}" ]; then
    exec unshare -n env SOAK_IN_NETNS=1 bash -c \
        'ip link set lo up && exec "$0" "$@"' "$0" --minutes "$MINUTES" \
        --reload-every "$RELOAD_EVERY" --rate "$RATE" --subs "$SUBS" \
        --pub-rate "$PUB_RATE" --out "$OUT" --quarantine-mb "$QUARANTINE_MB"
fi

export SOAK_MINUTES=$MINUTES SOAK_RELOAD_EVERY=$RELOAD_EVERY SOAK_RATE=$RATE \
       SOAK_SUBS=$SUBS SOAK_PUB_RATE=$PUB_RATE SOAK_OUT=$OUT SOAK_HERALD=$HERALD \
       SOAK_ROOT=$ROOT SOAK_QUARANTINE_MB=$QUARANTINE_MB
exec /usr/bin/python3 - <<'PYEOF'
import asyncio, json, os, random, signal, subprocess, sys, time

ROOT = os.environ["SOAK_ROOT"]
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import harness                                   # noqa: E402
import struct                                    # noqa: E402
from test_ops_zero_loss import (WS, Closed, Load, netstat, classify,   # noqa: E402
                                frame, raise_nofile)

OUT = os.environ["SOAK_OUT"]
DURATION = float(os.environ["SOAK_MINUTES"]) * 60
RELOAD_EVERY = float(os.environ["SOAK_RELOAD_EVERY"])
RATE = float(os.environ["SOAK_RATE"])
SUBS = int(os.environ["SOAK_SUBS"])
PUB_RATE = float(os.environ["SOAK_PUB_RATE"])
CHAN = "open:soak"

raise_nofile()
asan_dir = os.path.join(OUT, "asan")
os.makedirs(asan_dir, exist_ok=True)
os.environ["ASAN_OPTIONS"] = ("detect_leaks=1:halt_on_error=0:log_path=%s/report"
                              ":quarantine_size_mb=%s:thread_local_quarantine_size_kb=0"
                              % (asan_dir, os.environ["SOAK_QUARANTINE_MB"]))
os.environ["UBSAN_OPTIONS"] = "print_stacktrace=1:log_path=%s/ubsan" % asan_dir

redis = harness.RedisServer(os.path.join(OUT, "redis")).start()
h = harness.Herald(os.environ["SOAK_HERALD"], os.path.join(OUT, "herald"), redis.url,
                   workers=2, log={"level": "info"},
                   timeouts={"shutdown_ms": 4000},
                   namespaces={"open": {"anonymous": True, "publish": True}})
base = json.loads(json.dumps(h.config))
h.start()

def variant(i):
    c = json.loads(json.dumps(base))
    k = i % 4
    if k == 1:
        c["timeouts"]["connect_ms"] = 10000 + i      # replaces workers
    elif k == 2:
        c["workers"] = 3
    return c

def proc_rss_fds(pid):
    try:
        with open("/proc/%d/statm" % pid) as f:
            rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        return rss, len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return 0, 0

stats = dict(pub_sent=0, pub_acked=0, pub_errors=0, sub_opened=0, sub_open_errors=[],
             sub_closed_by_server={}, sub_recv=0, stable_gaps=0, reloads=0)

class Sub:
    def __init__(self):
        self.ws = None
        self.offsets = []

async def reader(ws, on_msg):
    """Read until the connection closes; on_msg(m) for every message.
    Returns the close code (reads are never cancelled half-way)."""
    try:
        while True:
            for m in await ws.next_message():
                on_msg(m)
    except Closed as e:
        return e.code
    except Exception as e:
        return classify(e)


async def subscriber(k, stop):
    """One subscriber slot: connect, subscribe, read pubs for 5..60 s, close
    cleanly, again. A server close (1012 on reload) reconnects at once."""
    ip = "127.0.0.%d" % (20 + k % 200)
    while not stop.is_set():
        life = random.uniform(5, 60)
        try:
            ws = await WS.open("127.0.0.1", h.port, ip, 10)
        except Exception as e:
            stats["sub_open_errors"].append(classify(e))
            await asyncio.sleep(0.5)
            continue
        try:
            await ws.send_text({"id": 1, "method": "connect", "params": {}})
            await ws.send_text({"id": 2, "method": "subscribe", "params": {"channel": CHAN}})
            stats["sub_opened"] += 1
        except Exception as e:
            # the handshake worked; the server closed before we wrote (a
            # drain that began in between): counted with the server closes
            d = stats["sub_closed_by_server"]
            d["before_subscribe:" + classify(e)] = d.get("before_subscribe:" + classify(e), 0) + 1
            ws.abort()
            continue
        st = {"last": None}

        def on_msg(m):
            if m.get("id") == 2 and "result" in m:
                st["last"] = m["result"]["offset"]
            p = m.get("push")
            if p and "pub" in p:
                stats["sub_recv"] += 1
                off = p["pub"]["offset"]
                if st["last"] is not None and off != st["last"] + 1:
                    stats["stable_gaps"] += 1
                st["last"] = off

        rt = asyncio.ensure_future(reader(ws, on_msg))
        t_end = time.monotonic() + life
        while not rt.done() and not stop.is_set() and time.monotonic() < t_end:
            await asyncio.wait([rt], timeout=min(1.0, max(0.01, t_end - time.monotonic())))
        if rt.done():
            code = rt.result()
            d = stats["sub_closed_by_server"]
            d[str(code)] = d.get(str(code), 0) + 1
        else:
            # clean close: 1000, then the reader sees the server's close
            try:
                ws.w.write(frame(0x8, struct.pack("!H", 1000)))
            except Exception:
                pass
            await asyncio.wait([rt], timeout=5)
            rt.cancel()
        ws.abort()


async def publisher(stop):
    ip = "127.0.0.19"
    n = 0
    while not stop.is_set():
        pending = set()

        def on_msg(m):
            if m.get("id") in pending:
                pending.discard(m["id"])
                if "result" in m:
                    stats["pub_acked"] += 1
                else:
                    stats["pub_errors"] += 1

        try:
            ws = await WS.open("127.0.0.1", h.port, ip, 10)
            await ws.send_text({"id": 1, "method": "connect", "params": {}})
        except Exception:
            await asyncio.sleep(0.2)
            continue
        rt = asyncio.ensure_future(reader(ws, on_msg))
        t = time.monotonic()
        try:
            while not stop.is_set() and not rt.done():
                n += 1
                pending.add(n + 1000000)
                await ws.send_text({"id": n + 1000000, "method": "publish",
                                    "params": {"channel": CHAN, "data": {"n": n}}})
                stats["pub_sent"] += 1
                t += 1.0 / PUB_RATE
                await asyncio.sleep(max(0, t - time.monotonic()))
            await asyncio.wait([rt], timeout=2)   # the last acks
        except Exception:
            pass
        stats["pub_unanswered"] = stats.get("pub_unanswered", 0) + len(pending)
        rt.cancel()
        ws.abort()

async def main():
    stop = asyncio.Event()
    ns0 = netstat()
    samples = open(os.path.join(OUT, "samples.csv"), "w")
    samples.write("t_s,master_rss,master_fds,workers,workers_rss,workers_fds,generation_reloads\n")
    load = Load(h.port, rate=RATE, timeout=10).start()
    tasks = [asyncio.ensure_future(subscriber(k, stop)) for k in range(SUBS)]
    tasks.append(asyncio.ensure_future(publisher(stop)))
    t0 = time.monotonic()
    next_reload, next_sample, i = t0 + RELOAD_EVERY, t0, 0
    first = last = None
    while time.monotonic() - t0 < DURATION:
        now = time.monotonic()
        if now >= next_sample:
            mr, mf = proc_rss_fds(h.pid)
            kids = harness.children_of(h.pid)
            wr = wf = 0
            for k in kids:
                r, f = proc_rss_fds(k)
                wr += r
                wf += f
            row = (round(now - t0), mr, mf, len(kids), wr, wf, stats["reloads"])
            samples.write(",".join(str(x) for x in row) + "\n")
            samples.flush()
            first = first or row
            last = row
            next_sample += 10
        if now >= next_reload:
            i += 1
            h.write_config(variant(i))
            h.send_signal(signal.SIGHUP)
            stats["reloads"] += 1
            next_reload += RELOAD_EVERY
        await asyncio.sleep(0.2)
    stop.set()
    await load.stop()
    await asyncio.gather(*tasks, return_exceptions=True)
    samples.close()
    return load, netstat(), ns0, first, last

load, ns1, ns0, first, last = asyncio.run(main())
h.write_config(base)
h.send_signal(signal.SIGTERM)
rc = h.wait_exit(30)
redis.stop()
reports = sorted(os.listdir(asan_dir))
text = h.stderr() + h.log_text()
markers = [m for m in harness.SANITIZER_MARKERS if m in text]
rows = [l.split(",") for l in open(os.path.join(OUT, "samples.csv")).read().splitlines()[1:]]
mrss = [int(r[1]) for r in rows]
mfds = [int(r[2]) for r in rows]
summary = dict(
    minutes=DURATION / 60, reload_every_s=RELOAD_EVERY, reloads=stats["reloads"],
    asan_quarantine_mb=int(os.environ["SOAK_QUARANTINE_MB"]),
    master_exit=rc, sanitizer_report_files=reports, sanitizer_markers_in_output=markers,
    handshake_load=load.summary(), handshake_failures=load.failures(),
    netstat_delta={k: ns1[k] - ns0[k] for k in ns0},
    netns=bool(os.environ.get("SOAK_IN_NETNS")),
    publications=dict(sent=stats["pub_sent"], acked=stats["pub_acked"],
                      errors=stats["pub_errors"], received=stats["sub_recv"],
                      unanswered_at_publisher_reconnect=stats.get("pub_unanswered", 0)),
    subscribers=dict(opened=stats["sub_opened"],
                     handshake_errors={e: stats["sub_open_errors"].count(e)
                                       for e in set(stats["sub_open_errors"])},
                     closed_by_server=stats["sub_closed_by_server"],
                     offset_gaps_on_live_subscriptions=stats["stable_gaps"]),
    master_rss_first_last_max=(mrss[0], mrss[-1], max(mrss)) if mrss else None,
    # with an ASan quarantine (--quarantine-mb) RSS grows until it is
    # full: judge flatness from the 10 % mark on
    master_rss_at_10pct_and_end=(mrss[len(mrss) // 10], mrss[-1]) if mrss else None,
    master_fds_first_last_min_max=(mfds[0], mfds[-1], min(mfds), max(mfds)) if mfds else None,
    first_sample=first, last_sample=last,
)
text = json.dumps(summary, indent=2, default=str)
print(text)
with open(os.path.join(OUT, "summary.json"), "w") as f:
    f.write(text + "\n")
ok = (rc == 0 and not reports and not markers and not load.failures()
      and not stats["sub_open_errors"] and stats["stable_gaps"] == 0)
sys.exit(0 if ok else 1)
PYEOF
