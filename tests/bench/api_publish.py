#!/usr/bin/python3
"""Publish throughput of the HTTP API (issue 17 item 3): one request at a
time per keep-alive connection, HTTP/1.1 pipelining, and POST /api/batch.

    HERALD_BIN=build/master/herald /usr/bin/python3 tests/bench/api_publish.py [N] [CONNS]

Starts its own redis-server and herald (2 workers) on loopback with the
integration harness, then publishes N publications on CONNS connections
(each to its own channel) in each mode:

  single     keep-alive, the next request after the previous answer;
  pipelined  32 requests in flight per connection (HTTP/1.1 pipelining);
  batch      POST /api/batch with 100 publications per request, one
             request at a time per connection.

For each: publications per second (wall), herald workers' CPU per
publication and publications per herald CPU-second (/proc, 10 ms ticks),
and Redis CPU. Counts are checked: every publication got its own 200
result, and each channel's offset in Redis moved by exactly what was
acknowledged (a run that lost or duplicated anything exits 1). The client
runs in this process (Python, one thread per connection): at high rates
it is the limit, so the per-CPU-second figure is the one to compare.
"""

import json
import os
import socket
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

import harness  # noqa: E402
from harness import API_KEY, pubsub_config  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
DEPTH = 32
BATCH = 100


def herald_cpu(h):
    total = 0
    for pid in h.worker_pids().values():
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / TICK


def redis_cpu(port):
    info = dict(line.strip().split(":", 1) for line in harness.redis_cli(port, "INFO", "cpu").splitlines()
                if ":" in line)
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def request(path, obj):
    body = json.dumps(obj).encode()
    return (b"POST " + path.encode() + b" HTTP/1.1\r\nHost: b\r\nAuthorization: apikey "
            + API_KEY.encode() + b"\r\nContent-Length: " + str(len(body)).encode()
            + b"\r\n\r\n" + body)


class Reader:
    def __init__(self, s):
        self.s, self.buf = s, b""

    def response(self):
        while b"\r\n\r\n" not in self.buf:
            chunk = self.s.recv(262144)
            if not chunk:
                raise RuntimeError("connection closed")
            self.buf += chunk
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        size = int(next(l.split(b":", 1)[1] for l in head.split(b"\r\n")
                        if l.lower().startswith(b"content-length:")))
        while len(rest) < size:
            chunk = self.s.recv(262144)
            if not chunk:
                raise RuntimeError("connection closed in a body")
            rest += chunk
        self.buf = rest[size:]
        return status, json.loads(rest[:size])


def run_conn(port, mode, ch, n, out):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    r, ok = Reader(s), 0
    if mode == "single":
        for i in range(n):
            s.sendall(request("/api/publish", {"channel": ch, "data": i}))
            st, body = r.response()
            ok += st == 200 and "offset" in body["result"]
    elif mode == "pipelined":
        sent = 0
        while sent < n or ok < sent:
            while sent < n and sent - ok < DEPTH:
                k = min(DEPTH - (sent - ok), n - sent)
                s.sendall(b"".join(request("/api/publish", {"channel": ch, "data": sent + j})
                                   for j in range(k)))
                sent += k
            st, body = r.response()
            if st != 200:
                raise RuntimeError("status %d: %r" % (st, body))
            ok += 1
    else:
        for i in range(0, n, BATCH):
            k = min(BATCH, n - i)
            s.sendall(request("/api/batch", {"publications": [{"channel": ch, "data": i + j}
                                                              for j in range(k)]}))
            st, body = r.response()
            if st != 200:
                raise RuntimeError("status %d: %r" % (st, body))
            ok += sum(1 for x in body["result"]["results"] if "offset" in x)
    s.close()
    out.append(ok)


def run_mode(h, rport, mode, n, conns):
    per = n // conns
    chans = ["bench:%s-%d" % (mode, c) for c in range(conns)]
    out = []
    threads = [threading.Thread(target=run_conn, args=(h.port, mode, ch, per, out)) for ch in chans]
    c0, r0, t0 = herald_cpu(h), redis_cpu(rport), time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    hc, rc = herald_cpu(h) - c0, redis_cpu(rport) - r0
    acked = sum(out)
    offsets = sum(int(harness.redis_cli(rport, "HGET", "{herald||%s}:meta" % ch, "o") or 0) for ch in chans)
    res = {"mode": mode, "publications": acked, "expected": per * conns, "redis_offsets": offsets,
           "wall_s": round(wall, 3), "pubs_per_s": round(acked / wall),
           "herald_cpu_s": round(hc, 2), "pubs_per_herald_cpu_s": round(acked / hc) if hc else None,
           "herald_us_per_pub": round(hc / acked * 1e6, 1) if acked else None,
           "redis_us_per_pub": round(rc / acked * 1e6, 1) if acked else None}
    print(json.dumps(res), flush=True)
    return res


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    conns = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    binary = harness.herald_bin()
    with __import__("tempfile").TemporaryDirectory() as d:
        rs = harness.RedisServer(os.path.join(d, "redis")).start()
        h = harness.Herald(binary, os.path.join(d, "herald"), rs.url,
                           **pubsub_config(namespaces={"bench": {"publish": True}},
                                           log={"level": "warn"}))
        try:
            h.start()
            bad = False
            for mode in ("single", "pipelined", "batch"):
                r = run_mode(h, rs.port, mode, n, conns)
                bad |= r["publications"] != r["expected"] or r["redis_offsets"] != r["expected"]
            if bad:
                print("COUNTS WRONG: lost or duplicated publications", flush=True)
                sys.exit(1)
        finally:
            h.finish()
            rs.stop()


if __name__ == "__main__":
    main()
