"""Reload (SIGHUP) and log reopen (SIGUSR1)."""

import os
import re
import signal
import time

from harness import SLACK, log_text_of, run, slots_seen, wait_until


def broken_config(h):
    """The current config as text with one comma missing: a syntax error at
    line 5 (jansson reports 5:10)."""
    return ('{\n'
            '  "workers": 3,\n'
            '  "listen": {\n'
            '    "address": "127.0.0.1"\n'
            '    "port": %d\n'
            '  }\n'
            '}\n' % h.port)


def assert_pids_stay(h, expect, seconds):
    """Check for `seconds` that the worker set stays exactly expect."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert h.worker_pids() == expect, (h.worker_pids(), expect)
        time.sleep(0.05)


def test_sighup_adds_worker(herald):
    old = herald.worker_pids()
    assert sorted(old) == [0, 1]
    herald.config["workers"] = 3
    herald.write_config()
    herald.send_signal(signal.SIGHUP)
    now = herald.wait_workers({0: old[0], 1: old[1], 2: None}, timeout=15,
                              what="a third worker with slots 0 and 1 unchanged")
    assert now[2] not in old.values()
    # The new slot serves once it reported READY (the master steers new
    # connections only to ready slots); poll rather than race its start.
    deadline = time.monotonic() + 10 * SLACK
    seen = set()
    while seen != {0, 1, 2} and time.monotonic() < deadline:
        seen |= run(slots_seen(herald.url, 30, want={0, 1, 2}))
    assert seen == {0, 1, 2}
    assert herald.worker_pids() == now


def test_sighup_unchanged_config_keeps_workers(herald):
    old = herald.worker_pids()
    herald.send_signal(signal.SIGHUP)
    assert_pids_stay(herald, old, 1.5)
    assert run(slots_seen(herald.url, 40, want={0, 1})) == {0, 1}


def test_sighup_broken_json_keeps_running(herald):
    old = herald.worker_pids()
    herald.write_config(text=broken_config(herald))
    herald.send_signal(signal.SIGHUP)
    where = re.compile(r"%s:5:\d+" % re.escape(os.path.basename(herald.conf_path)))
    herald.find_log(lambda l: l.get("role") == "master" and l.get("level") == "error"
                    and where.search(log_text_of(l)),
                    timeout=10, what="master error log with herald.json:5:COL")
    assert herald.alive()
    assert_pids_stay(herald, old, 1.0)
    assert run(slots_seen(herald.url, 40, want={0, 1})) == {0, 1}

    # A failed reload does not wedge reloading: fix the file, reload again.
    herald.config["workers"] = 3
    herald.write_config()
    herald.send_signal(signal.SIGHUP)
    herald.wait_workers({0: old[0], 1: old[1], 2: None}, timeout=15)


def test_sighup_invalid_value_keeps_running(herald):
    old = herald.worker_pids()
    herald.config["workers"] = 0
    herald.config["timeouts"]["shutdown_ms"] = 5   # both out of range
    herald.write_config()
    herald.send_signal(signal.SIGHUP)
    herald.find_log(lambda l: l.get("role") == "master" and l.get("level") == "error"
                    and "$.workers" in log_text_of(l),
                    timeout=10, what="master error log naming $.workers")
    herald.find_log(lambda l: l.get("role") == "master" and l.get("level") == "error"
                    and "$.timeouts.shutdown_ms" in log_text_of(l),
                    timeout=5, what="master error log naming $.timeouts.shutdown_ms")
    assert_pids_stay(herald, old, 1.0)
    assert run(slots_seen(herald.url, 40, want={0, 1})) == {0, 1}
    # Restore a valid file so that teardown's shutdown timing is the old one
    # either way.
    herald.config["workers"] = 2
    herald.config["timeouts"]["shutdown_ms"] = 2000
    herald.write_config()


def test_sighup_removes_worker(make_herald):
    h = make_herald(workers=3)
    old = h.worker_pids()
    assert sorted(old) == [0, 1, 2]
    h.config["workers"] = 2
    h.write_config()
    h.send_signal(signal.SIGHUP)
    h.wait_workers({0: old[0], 1: old[1]}, timeout=15 + h.shutdown_s,
                   what="slot 2 gone, slots 0 and 1 unchanged")
    assert run(slots_seen(h.url, 40)) == {0, 1}


def test_sigusr1_reopens_log(herald):
    wait_until(lambda: os.path.exists(herald.log_path), 10, what="log file")
    rotated = herald.log_path + ".1"
    os.rename(herald.log_path, rotated)
    herald.send_signal(signal.SIGUSR1)
    wait_until(lambda: os.path.exists(herald.log_path), 10,
               what="a new log file after SIGUSR1")
    # New lines go to the new file: a reload makes the master log.
    size = os.path.getsize(herald.log_path)
    herald.send_signal(signal.SIGHUP)
    wait_until(lambda: os.path.getsize(herald.log_path) > size, 10,
               what="the master to write to the reopened log")
    assert herald.worker_pids()


def test_sighup_applies_log_settings_in_workers(make_herald, tmp_path):
    """log.level, log.format and log.file apply in place on SIGHUP in the
    workers too (without replacing them), and a worker reopens the new
    file on SIGUSR1 (issue 17 item 6)."""
    from harness import open_client
    h = make_herald(log={"level": "info"})
    pids = h.worker_pids()

    def bad_connects():
        async def go():
            for _ in range(4):   # reach both workers (most likely)
                c = await open_client(h.url, do_connect=False)
                await c.connect("not-a-token")
                await c.wait_closed(10)
                await c.close()
        run(go())

    def worker_lines(path, pred):
        try:
            with open(path, errors="replace") as f:
                return [line for line in f if pred(line)]
        except FileNotFoundError:
            return []

    def rejected_json(line):
        return '"role":"worker"' in line and "connect rejected" in line

    bad_connects()
    time.sleep(0.3)
    assert not worker_lines(h.log_path, rejected_json), "debug line at level info"

    # debug on by reload
    h.config["log"]["level"] = "debug"
    h.write_config()
    h.send_signal(signal.SIGHUP)
    h.find_log(lambda l: "reload done" in l.get("msg", ""), what="reload done")
    wait_until(lambda: (bad_connects(), worker_lines(h.log_path, rejected_json))[1], 10 * SLACK,
               what="a worker's debug line after the reload to level debug")

    # a new file and the text format
    other = str(tmp_path / "other.log")
    h.config["log"].update(file=other, format="text")
    h.write_config()
    h.send_signal(signal.SIGHUP)

    def rejected_text(line):
        return re.search(r" DEBUG +worker\[\d\] ", line) and "connect rejected" in line
    wait_until(lambda: (bad_connects(), worker_lines(other, rejected_text))[1], 10 * SLACK,
               what="a worker's text line in the new log file")

    # rotation: the worker follows the reopened file
    os.rename(other, other + ".1")
    h.send_signal(signal.SIGUSR1)
    wait_until(lambda: os.path.exists(other), 10, what="the reopened log file")
    wait_until(lambda: (bad_connects(), worker_lines(other, rejected_text))[1], 10 * SLACK,
               what="a worker's line in the reopened log file")
    assert h.worker_pids() == pids, "log settings must not replace workers"
