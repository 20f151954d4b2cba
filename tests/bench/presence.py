#!/usr/bin/python3
"""Cost of presence and join/leave (issue 14): Redis and herald CPU per
subscribe, per join, and per presence read of a large channel.

    HERALD_BIN=build/master/herald /usr/bin/python3 tests/bench/presence.py [N] [WATCHERS] [ENTRIES]

Starts its own redis-server and herald (2 workers) on loopback with the
integration harness, then:

  1. subscribe: N clients each subscribe to a channel of a namespace
     without presence, then N others to one with presence (and one with
     presence + join_leave but nobody opted in to the pushes): CPU of Redis
     and of the herald workers, and Redis commands, per subscribe;
  2. join fan-out: WATCHERS clients watch a join_leave channel; N clients
     join it: CPU per join (each join is WATCHERS pushes);
  3. presence read: a channel with ENTRIES members (written straight into
     Redis, owned by a live worker instance so that they count):
     presence_stats and presence (limit 1000) through the HTTP API, wall
     time and Redis CPU per call.

CPU is read from /proc (workers) and INFO cpu (Redis), so the figures
include everything those processes did in the window; the bench client
runs in this process and is not counted. Results go to stdout as JSON
lines and a summary; docs/benchmarks.md has a run.
"""

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

import harness  # noqa: E402
from harness import api_request, open_client, pubsub_config, token_for  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def herald_cpu(h):
    total = 0
    for pid in h.worker_pids().values():
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / TICK


def redis_info(port):
    out = {}
    for line in harness.redis_cli(port, "INFO").splitlines():
        if ":" in line:
            k, v = line.strip().split(":", 1)
            out[k] = v
    return out


def redis_cpu(port):
    i = redis_info(port)
    return float(i["used_cpu_user"]) + float(i["used_cpu_sys"]), int(i["total_commands_processed"])


class Window:
    def __init__(self, h, redis_port):
        self.h, self.port = h, redis_port

    def __enter__(self):
        self.t0 = time.monotonic()
        self.hc0 = herald_cpu(self.h)
        self.rc0, self.cmd0 = redis_cpu(self.port)
        return self

    def __exit__(self, *exc):
        self.wall = time.monotonic() - self.t0
        self.herald = herald_cpu(self.h) - self.hc0
        rc, cmd = redis_cpu(self.port)
        self.redis = rc - self.rc0
        self.cmds = cmd - self.cmd0

    def per(self, n, what):
        r = {"what": what, "n": n, "wall_s": round(self.wall, 3),
             "herald_cpu_us_each": round(self.herald / n * 1e6, 1),
             "redis_cpu_us_each": round(self.redis / n * 1e6, 1),
             "redis_cmds_each": round(self.cmds / n, 2)}
        print(json.dumps(r), flush=True)
        return r


async def subscribe_all(h, clients, ch, **extra):
    await asyncio.gather(*(c.call("subscribe", dict(channel=ch, **extra), timeout=60) for c in clients))


def main(n, watchers, entries):
    tmp = tempfile.mkdtemp(prefix="herald-bench-presence-")
    redis = harness.RedisServer(os.path.join(tmp, "redis")).start()
    cfg = pubsub_config(workers=2, limits={"connections_per_ip": 0, "max_connections": 0},
                        log={"level": "warn"})
    cfg["namespaces"].update({"plain": {}, "pres": {"presence": True},
                              "pj": {"presence": True, "join_leave": True}})
    h = harness.Herald(harness.herald_bin(), os.path.join(tmp, "herald"), redis.url, **cfg).start()
    results = []
    try:
        asyncio.run(run(h, redis, n, watchers, entries, results))
    finally:
        h.finish()
        redis.stop()
    print("\n%-55s %10s %12s %12s %10s" % ("what", "wall s", "herald us", "redis us", "redis cmd"))
    for r in results:
        print("%-55s %10.2f %12.1f %12.1f %10.2f" % (r["what"], r["wall_s"], r["herald_cpu_us_each"],
                                                     r["redis_cpu_us_each"], r["redis_cmds_each"]))


async def run(h, redis, n, watchers, entries, results):
    if True:
        tok = token_for(h, sub="bench")
        pool = [await open_client(h.url, tok) for _ in range(n)]
        for ns in ("plain", "pres", "pj"):
            with Window(h, redis.port) as w:
                await subscribe_all(h, pool, ns + ":room", **({"join_leave": False} if ns == "pj" else {}))
            results.append(w.per(n, "subscribe, namespace " + ns))
        for c in pool:
            await c.close()

        watch = [await open_client(h.url, tok) for _ in range(watchers)]
        await subscribe_all(h, watch, "pj:fan")
        joiners = [await open_client(h.url, tok) for _ in range(n)]
        with Window(h, redis.port) as w:
            await subscribe_all(h, joiners, "pj:fan", join_leave=False)
            # every watcher has every join
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                await asyncio.gather(*(c.drain(0.05) for c in watch))
                if all(sum(1 for p in c.pushes if "join" in p) >= n for c in watch):
                    break
        results.append(w.per(n, "join to %d watchers (subscribe + fan-out)" % watchers))
        for c in watch + joiners:
            await c.close()

        inst = harness.redis_cli(redis.port, "ZRANGE", "herald#workers", "0", "0").split()[0]
        key = "{herald||pres:big}:pres"
        cmds = []
        for i in range(entries):
            cid = "%s-%x" % (inst, 0x100000 + i)
            entry = json.dumps({"client": cid, "user": "u%d" % (i % 1000)}, separators=(",", ":"))
            cmds.append('HSET "%s" "%s" \'%d:u%d%s\'' % (key, cid, len("u%d" % (i % 1000)), i % 1000, entry))
        subprocess.run(["redis-cli", "-p", str(redis.port)], input="\n".join(cmds).encode(),
                       capture_output=True, check=True)
        reps = 20
        st, body = api_request(h.port, "/api/presence_stats", {"channel": "pres:big"})
        assert body["result"]["clients"] == entries, body
        with Window(h, redis.port) as w:
            for _ in range(reps):
                st, body = api_request(h.port, "/api/presence_stats", {"channel": "pres:big"})
        results.append(w.per(reps, "presence_stats, %d members" % entries))
        with Window(h, redis.port) as w:
            for _ in range(reps):
                st, body = api_request(h.port, "/api/presence", {"channel": "pres:big", "limit": 1000})
                assert len(body["result"]["clients"]) == 1000
        results.append(w.per(reps, "presence limit 1000, %d members" % entries))


if __name__ == "__main__":
    a = [int(x) for x in sys.argv[1:]]
    main(a[0] if a else 1000, a[1] if len(a) > 1 else 200, a[2] if len(a) > 2 else 10000)
