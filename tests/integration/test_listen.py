"""Listening on several addresses, both address families (#16 item 19).

`listen` takes one object (the original form) or an array of them; each
listener gets its own SO_REUSEPORT socket per worker slot, steered like the
first. `"::"` is dual-stack unless `ipv6_only` is set, whatever the
kernel's net.ipv6.bindv6only default."""

import signal
import socket
import time

import pytest

from harness import SLACK, free_port, run, slots_seen, wait_until


def ipv6_loopback():
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.bind(("::1", 0))
        s.close()
        return True
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback")


def url4(port):
    return "ws://127.0.0.1:%d/" % port


def url6(port):
    return "ws://[::1]:%d/" % port


def served_by(url, want):
    """Every slot in want answers on url (polled: under load a worker may
    be slow to take its first connections)."""
    deadline = time.monotonic() + 15 * SLACK
    seen = set()
    while seen != want and time.monotonic() < deadline:
        try:
            seen |= run(slots_seen(url, 20, want=want))
        except AssertionError:
            time.sleep(0.1)
    return seen


def refused(host, port):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(5)
    try:
        s.connect((host, port))
    except ConnectionRefusedError:
        return True
    finally:
        s.close()
    return False


def test_dual_stack_any_takes_ipv4_and_ipv6(make_herald):
    """"::" with the defaults: IPv6 and IPv4 clients, on every worker."""
    h = make_herald(workers=2, listen={"address": "::"})
    assert served_by(url6(h.port), {0, 1}) == {0, 1}
    assert served_by(url4(h.port), {0, 1}) == {0, 1}


def test_ipv6_only_refuses_ipv4(make_herald):
    h = make_herald(workers=1, start=False,
                    listen={"address": "::", "ipv6_only": True})
    h.host = "[::1]"
    h.start()
    assert served_by(url6(h.port), {0}) == {0}
    assert refused("127.0.0.1", h.port)


def test_two_addresses_both_families_every_worker(make_herald):
    """An array of listeners: 127.0.0.1 and ::1 on the same port, and a
    second port; every worker slot serves each of them."""
    other = free_port()
    h = make_herald(workers=2, start=False)
    h.config["listen"] = [
        {"address": "127.0.0.1", "port": h.port},
        {"address": "::1", "port": h.port},
        {"address": "127.0.0.1", "port": other, "backlog": 64},
    ]
    h.write_config()
    h.start()
    for url in (url4(h.port), url6(h.port), url4(other)):
        assert served_by(url, {0, 1}) == {0, 1}, url
    assert refused("::1", other)
    listening = [l for l in h.log_lines() if "listening on" in str(l.get("msg", ""))]
    assert len(listening) == 3, listening


def test_reload_adds_and_drops_listeners(make_herald):
    """A reload that adds an address opens it for every slot; one that
    drops it closes it; the old single-object form works again after."""
    h = make_herald(workers=2)
    old = h.worker_pids()
    assert refused("::1", h.port)
    h.config["listen"] = [{"address": "127.0.0.1", "port": h.port},
                          {"address": "::1", "port": h.port}]
    h.write_config()
    h.send_signal(signal.SIGHUP)
    # listen changed: the workers are replaced, slot by slot
    h.wait_workers({0: None, 1: None}, 20 * SLACK, exclude=set(old.values()))
    assert served_by(url6(h.port), {0, 1}) == {0, 1}
    assert served_by(url4(h.port), {0, 1}) == {0, 1}

    h.config["listen"] = {"address": "127.0.0.1", "port": h.port}
    h.write_config()
    mid = h.worker_pids()
    h.send_signal(signal.SIGHUP)
    h.wait_workers({0: None, 1: None}, 20 * SLACK, exclude=set(mid.values()))
    wait_until(lambda: refused("::1", h.port), 10 * SLACK, what="::1 closed")
    assert served_by(url4(h.port), {0, 1}) == {0, 1}
