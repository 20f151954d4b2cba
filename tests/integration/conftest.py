"""Fixtures for the herald integration suite.

    HERALD_BIN=build/master/herald /usr/bin/python3 -m pytest -q tests/integration

Every test gets its own redis-server and herald on free loopback ports.
At teardown each herald is stopped with SIGTERM (SIGKILL after a bounded
wait) and the test fails if the master did not exit 0, if a worker outlived
it, or if a sanitizer report shows up in its output.
"""

import os
import shutil

import pytest

import harness


@pytest.fixture(scope="session")
def herald_bin():
    path = harness.herald_bin()
    if path is None:
        pytest.fail("herald binary not found: set HERALD_BIN (tried %s)"
                    % (os.environ.get("HERALD_BIN") or "build/master/herald"))
    return path


@pytest.fixture
def redis_server(tmp_path):
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server not on PATH (apt-get install redis-server)")
    srv = harness.RedisServer(tmp_path / "redis").start()
    yield srv
    srv.stop()


@pytest.fixture
def make_herald(request, herald_bin, redis_server, tmp_path):
    """Factory: make_herald(**config_overrides, start=True) -> Herald."""
    made = []
    request.node._heralds = made

    def make(start=True, **overrides):
        h = harness.Herald(herald_bin, tmp_path / ("herald%d" % len(made)),
                           redis_server.url, **overrides)
        made.append(h)
        if start:
            h.start()
        return h

    yield make

    problems = []
    for h in made:
        for p in h.finish():
            problems.append("%s: %s" % (h.dir, p))
    if problems:
        pytest.fail("herald teardown:\n" + "\n".join(problems), pytrace=False)


@pytest.fixture
def herald(make_herald):
    """A started herald with two workers and the default test config."""
    return make_herald()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the tails of herald's stderr and log to a failing test."""
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for i, h in enumerate(getattr(item, "_heralds", [])):
            rep.sections.append(("herald%d output" % i, h.diag(tail=60)))


@pytest.fixture
def pubsub_herald(make_herald):
    """A started herald with harness.PUBSUB_CONFIG: tokens required, the
    HTTP API on, the test namespaces configured."""
    return make_herald(**harness.PUBSUB_CONFIG)
