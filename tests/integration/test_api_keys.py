"""Wrong HTTP API keys are throttled per client address (#16 item 10):
after api.auth_fail_limit failures in api.auth_fail_window_ms an address
gets 429 with Retry-After, whatever key it sends, until the window is
over; other addresses are not affected; every failure is logged with the
address and never with the key; the metric counts what was throttled."""

import http.client
import json
import time

from harness import (API_KEY, SLACK, admin_request, parse_metrics, pubsub_config,
                     wait_until)

WRONG = "wrong-key-must-never-be-logged-0123456789"


def publish(port, key, source="127.0.0.1", headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10 * SLACK,
                                      source_address=(source, 0))
    try:
        hdrs = {"Content-Type": "application/json", "Authorization": "apikey " + key}
        hdrs.update(headers or {})
        conn.request("POST", "/api/publish",
                     body=json.dumps({"channel": "chat:k", "data": {"x": 1}}),
                     headers=hdrs)
        resp = conn.getresponse()
        resp.read()
        return resp.status, resp.getheader("Retry-After")
    finally:
        conn.close()


def throttled_count(h):
    status, _, body = admin_request(h.admin_port, "/metrics")
    assert status == 200
    _, samples = parse_metrics(body)
    return sum(v for (n, lab), v in samples.items()
               if n == "herald_api_requests_total" and ("result", "throttled") in lab)


def test_wrong_keys_throttled_per_address(make_herald):
    window_ms = 4000
    h = make_herald(**pubsub_config(workers=1, api={
        "key": API_KEY, "auth_fail_limit": 3, "auth_fail_window_ms": window_ms}))
    start = time.monotonic()
    for _ in range(3):
        assert publish(h.port, WRONG)[0] == 401
    # the limit is reached: even the right key is not looked at
    status, retry = publish(h.port, API_KEY)
    assert status == 429, status
    assert retry is not None and 1 <= int(retry) <= window_ms // 1000, retry
    assert publish(h.port, WRONG)[0] == 429
    # another address is not affected
    assert publish(h.port, API_KEY, source="127.0.0.2")[0] == 200
    assert publish(h.port, WRONG, source="127.0.0.2")[0] == 401
    assert throttled_count(h) >= 2

    # the address is logged, the key never
    h.find_log(lambda l: "127.0.0.1" in str(l.get("msg", ""))
               and "wrong API key" in str(l.get("msg", "")), 10 * SLACK,
               what="a wrong-key log line naming the address")
    h.find_log(lambda l: "refusing its requests (429)" in str(l.get("msg", "")),
               10 * SLACK, what="the throttle start logged")
    assert WRONG not in h.log_text()

    # once the window is over, the right key works again
    wait_until(lambda: time.monotonic() - start > window_ms / 1000.0, 30 * SLACK)
    wait_until(lambda: publish(h.port, API_KEY)[0] == 200, 10 * SLACK,
               what="the address served again after its window")


def test_throttle_uses_client_address_behind_trusted_proxy(make_herald):
    """Behind a trusted proxy the throttle counts the client's address
    (X-Forwarded-For), so one client guessing keys does not lock out the
    proxy's other clients."""
    h = make_herald(**pubsub_config(
        workers=1, security={"trusted_proxies": ["127.0.0.1"]},
        api={"key": API_KEY, "auth_fail_limit": 2, "auth_fail_window_ms": 60000}))
    bad = {"X-Forwarded-For": "198.51.100.1"}
    good = {"X-Forwarded-For": "198.51.100.2"}
    assert publish(h.port, WRONG, headers=bad)[0] == 401
    assert publish(h.port, WRONG, headers=bad)[0] == 401
    assert publish(h.port, API_KEY, headers=bad)[0] == 429
    assert publish(h.port, API_KEY, headers=good)[0] == 200
    h.find_log(lambda l: "198.51.100.1" in str(l.get("msg", "")), 10 * SLACK,
               what="the client's address in the log")


def test_throttle_per_request_on_a_reused_proxy_connection(make_herald):
    """A proxy sends many clients' requests over one kept-alive upstream
    connection (nginx's upstream keepalive does): each request is its own
    client's, by its own X-Forwarded-For. One client's wrong keys do not
    lock out the client that happened to come first on the connection."""
    h = make_herald(**pubsub_config(
        workers=1, security={"trusted_proxies": ["127.0.0.1"]},
        api={"key": API_KEY, "auth_fail_limit": 2, "auth_fail_window_ms": 60000}))
    conn = http.client.HTTPConnection("127.0.0.1", h.port, timeout=10 * SLACK)

    def req(key, client):
        conn.request("POST", "/api/publish",
                     body=json.dumps({"channel": "chat:k", "data": {"x": 1}}),
                     headers={"Content-Type": "application/json",
                              "Authorization": "apikey " + key,
                              "X-Forwarded-For": client})
        resp = conn.getresponse()
        resp.read()
        return resp.status

    try:
        assert req(API_KEY, "198.51.100.2") == 200   # first on the connection
        assert req(WRONG, "198.51.100.1") == 401
        assert req(WRONG, "198.51.100.1") == 401
        assert req(API_KEY, "198.51.100.1") == 429
        assert req(API_KEY, "198.51.100.2") == 200   # not the guesser's count
    finally:
        conn.close()
    h.find_log(lambda l: "198.51.100.1" in str(l.get("msg", ""))
               and "wrong API key" in str(l.get("msg", "")), 10 * SLACK,
               what="the guesser's address in the log")
