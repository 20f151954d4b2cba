"""Stopping: SIGTERM (graceful, close 1001), SIGTERM twice and SIGQUIT
(immediate)."""

import asyncio
import os
import signal
import time

import websockets.exceptions

from harness import SLACK, command, connect, pids_in_group, run, wait_until


async def open_clients(h, n, slots=(0, 1), limit=60):
    """Open at least n clients with every slot in slots represented.
    Returns [(ws, slot)]."""
    clients = []
    seen = set()
    for i in range(limit):
        ws = await connect(h.url)
        r = await command(ws, i + 1, "ping")
        clients.append((ws, r["result"]["worker"]))
        seen.add(r["result"]["worker"])
        if len(clients) >= n and seen >= set(slots):
            return clients
    raise AssertionError("slots %r not all reached in %d connections" % (slots, limit))


async def close_code(ws, timeout):
    """Wait for the server to close ws; return its close code."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    except websockets.exceptions.ConnectionClosed:
        return ws.close_code
    except asyncio.TimeoutError:
        return None


def test_sigterm_closes_clients_1001_and_exits_0(herald):
    async def go():
        clients = await open_clients(herald, 6)
        t0 = time.monotonic()
        herald.send_signal(signal.SIGTERM)
        codes = await asyncio.gather(*(close_code(ws, herald.shutdown_s + SLACK)
                                       for ws, _ in clients))
        return t0, codes, [slot for _, slot in clients]

    t0, codes, slots = run(go())
    assert codes == [1001] * len(codes), "close codes by client (slots %r): %r" % (slots, codes)
    rc = herald.wait_exit(max(0.1, t0 + herald.shutdown_s + SLACK - time.monotonic()))
    took = time.monotonic() - t0
    assert rc is not None, "master still running %.1f s after SIGTERM (shutdown_ms %d)" % (
        took, herald.shutdown_s * 1000)
    assert rc == 0, "master exit status %s" % rc
    wait_until(lambda: not pids_in_group(herald.pid), 5, what="workers to be gone")


def test_sigterm_idle_exits_0(herald):
    t0 = time.monotonic()
    herald.send_signal(signal.SIGTERM)
    rc = herald.wait_exit(herald.shutdown_s + SLACK)
    assert rc == 0, "exit status %s after %.1f s" % (rc, time.monotonic() - t0)
    wait_until(lambda: not pids_in_group(herald.pid), 5, what="workers to be gone")


def test_sigterm_twice_stops_at_once(make_herald):
    # A long grace period: the second SIGTERM must not wait for it.
    h = make_herald(timeouts={"shutdown_ms": 60000})
    async def go():
        clients = await open_clients(h, 4)
        h.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.1)
        h.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        rc = await asyncio.get_running_loop().run_in_executor(None, h.wait_exit, 5 * SLACK)
        for ws, _ in clients:
            await ws.close()
        return rc, time.monotonic() - t0
    h.expect_clean_exit = False   # the status of an immediate stop is not specified
    rc, took = run(go())
    assert rc is not None, "master still running %.1f s after the second SIGTERM" % took
    wait_until(lambda: not pids_in_group(h.pid), 5, what="workers to be gone")


def test_sigquit_stops_at_once(make_herald):
    h = make_herald(timeouts={"shutdown_ms": 60000})
    async def go():
        clients = await open_clients(h, 4)
        t0 = time.monotonic()
        h.send_signal(signal.SIGQUIT)
        rc = await asyncio.get_running_loop().run_in_executor(None, h.wait_exit, 5 * SLACK)
        for ws, _ in clients:
            await ws.close()
        return rc, time.monotonic() - t0
    h.expect_clean_exit = False
    rc, took = run(go())
    assert rc is not None, "master still running %.1f s after SIGQUIT" % took
    wait_until(lambda: not pids_in_group(h.pid), 5, what="workers to be gone")


def test_ctrl_c_stops_cleanly(herald):
    # Ctrl-C on `./deploy/dev.sh run` sends SIGINT to the whole foreground
    # process group, workers included: that is a graceful stop too, not a
    # crash-and-respawn.
    async def go():
        clients = await open_clients(herald, 2)
        os.killpg(herald.pid, signal.SIGINT)
        return await asyncio.gather(*(close_code(ws, herald.shutdown_s + SLACK)
                                      for ws, _ in clients))
    codes = run(go())
    rc = herald.wait_exit(herald.shutdown_s + SLACK)
    assert rc == 0, "exit status %s after SIGINT to the process group" % rc
    assert codes == [1001] * len(codes), codes
    wait_until(lambda: not pids_in_group(herald.pid), 5, what="workers to be gone")


def test_sigterm_idle_does_not_wait_out_the_timeout(make_herald):
    # With no clients there is nothing to drain: workers must exit by
    # themselves at once rather than hang until the master kills them at
    # the shutdown deadline (which would make every restart take the full
    # timeouts.shutdown_ms, and hides workers that hang on exit).
    h = make_herald(timeouts={"shutdown_ms": 20000})
    t0 = time.monotonic()
    h.send_signal(signal.SIGTERM)
    rc = h.wait_exit(5 * SLACK)
    took = time.monotonic() - t0
    assert rc is not None, "idle herald still running %.1f s after SIGTERM (shutdown_ms 20000)" % took
    assert rc == 0, "exit status %s" % rc
