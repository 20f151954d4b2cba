"""Process model: titles, worker slots, JSON logs, respawn after kill -9."""

import asyncio
import os
import signal
import time

from harness import (children_of, connect, command, ping_once, read_cmdline,
                     run, slots_seen, wait_until)


def test_titles_and_slots(herald):
    assert read_cmdline(herald.pid) == "herald: master"
    pids = herald.worker_pids()
    assert sorted(pids) == [0, 1], pids
    for slot, pid in pids.items():
        assert read_cmdline(pid) == "herald: worker %d" % slot
    # Workers are the master's only children.
    assert sorted(children_of(herald.pid)) == sorted(pids.values())


def test_json_log_lines(herald):
    # Make every worker do something first.
    run(slots_seen(herald.url, 40, want={0, 1}))
    lines = wait_until(lambda: herald.log_lines() or None, 10, what="log lines")
    bad = [l["_raw"] for l in lines if l.get("_bad")]
    assert not bad, "log lines that are not JSON objects: %r" % bad[:5]
    for l in lines:
        for key in ("time", "level", "pid", "role", "msg"):
            assert key in l, "missing %r in %s" % (key, l["_raw"])
        assert l["level"] in ("error", "warn", "info", "debug"), l["_raw"]
        assert isinstance(l["pid"], int), l["_raw"]
        assert l["role"] in ("master", "worker"), l["_raw"]
        if l["role"] == "master":
            assert l["pid"] == herald.pid, l["_raw"]
            assert "worker" not in l, l["_raw"]
        else:
            assert isinstance(l.get("worker"), int), l["_raw"]
            assert 0 <= l["worker"] < herald.workers, l["_raw"]
            assert l["pid"] != herald.pid, l["_raw"]
    assert any(l["role"] == "master" for l in lines), "no master log line"
    # The secret never reaches the log.
    assert herald.config["auth"]["hmac_secret"] not in herald.log_text()


def test_kill_worker_respawns_within_1s(herald):
    old = herald.worker_pids()
    victim = old[0]

    async def go():
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        os.kill(victim, signal.SIGKILL)
        respawned = None
        failures = []
        oks = 0
        # Connect continuously while polling /proc for the new slot-0 pid:
        # the master keeps the listen sockets, so no connect may fail.
        async def clients():
            nonlocal oks
            while loop.time() - t0 < 3.0:
                try:
                    r = await ping_once(herald.url, cmd_id=oks + 1, timeout=10)
                    assert "result" in r, r
                    oks += 1
                except Exception as e:  # record, do not stop
                    failures.append(repr(e))
                await asyncio.sleep(0.02)
        task = asyncio.ensure_future(clients())
        while loop.time() - t0 < 5.0:
            slots = herald.worker_slots()
            pids0 = [p for p in slots.get(0, []) if p != victim]
            if pids0:
                respawned = (pids0[0], loop.time() - t0)
                break
            await asyncio.sleep(0.01)
        await task
        return respawned, failures, oks

    respawned, failures, oks = run(go())
    assert respawned is not None, "no new worker in slot 0 within 5 s\n" + herald.diag()
    new_pid, took = respawned
    assert took <= 1.0, "slot 0 respawned after %.2f s (limit 1 s)" % took
    assert not failures, "connections failed after kill -9: %r" % failures[:5]
    assert oks > 0
    now = herald.wait_workers({0: new_pid, 1: old[1]}, timeout=5)
    assert now[1] == old[1], "the other worker was restarted too"
    assert read_cmdline(new_pid) == "herald: worker 0"
    # The new worker serves.
    assert run(slots_seen(herald.url, 40, want={0, 1})) == {0, 1}


def test_kill_worker_twice(herald):
    # A second crash of the same slot is respawned too (no give-up after
    # one restart); allow for the restart backoff.
    for _ in range(2):
        old = herald.worker_pids()
        os.kill(old[1], signal.SIGKILL)
        herald.wait_workers({0: old[0], 1: None}, timeout=10, exclude=(old[1],))
    assert run(slots_seen(herald.url, 40, want={0, 1})) == {0, 1}


def test_open_connection_on_other_worker_survives_kill(herald):
    # Killing one worker must not disturb clients of the other.
    async def go():
        async with connect(herald.url) as ws:
            r = await command(ws, 1, "ping")
            slot = r["result"]["worker"]
            other = 1 - slot
            victim = herald.worker_pids()[other]
            os.kill(victim, signal.SIGKILL)
            deadline = time.monotonic() + 2
            i = 2
            while time.monotonic() < deadline:
                r = await command(ws, i, "ping")
                assert r == {"id": i, "result": {"worker": slot}}, r
                i += 1
                await asyncio.sleep(0.05)
            return victim
    victim = run(go())
    herald.wait_workers({0: None, 1: None}, timeout=10, exclude=(victim,))
