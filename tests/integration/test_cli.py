"""Command line: herald -t (config check), --version, --help."""

import json
import os
import re
import signal
import socket
import subprocess

import pytest

import harness

SECRET = "integration-test-secret-0123456789abcdef"

# Every documented key, with valid values.
FULL = {
    "workers": 2,
    "listen": {"address": "127.0.0.1", "port": 18080, "backlog": 1024},
    "admin": {"address": "127.0.0.1", "port": 19090, "token": "admin-token-0123456789"},
    "redis": {"url": "redis://127.0.0.1:6379"},
    "auth": {"hmac_secret": SECRET, "allow_anonymous": False},
    "api": {"key": "0123456789abcdef-api"},
    "log": {"level": "info", "format": "json", "file": "/tmp/herald-cli-test.log"},
    "timeouts": {"shutdown_ms": 2000, "handshake_ms": 5000},
}


def herald(herald_bin, *args, cwd=None, timeout=30):
    """Run herald to completion; (exit status, stdout + stderr). If it does
    not finish in time, kill its whole process group (it may have forked
    workers) and fail."""
    p = subprocess.Popen([herald_bin, *args], cwd=cwd, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         start_new_session=True)
    try:
        so, se = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        so, se = p.communicate()
        pytest.fail("herald %s did not exit within %d s:\n%s%s"
                    % (" ".join(args), timeout, so.decode(errors="replace"),
                       se.decode(errors="replace")))
    out = so.decode("utf-8", "replace") + se.decode("utf-8", "replace")
    assert not any(m in out for m in harness.SANITIZER_MARKERS), out
    return p.returncode, out


def write(tmp_path, obj_or_text, name="herald.json"):
    path = tmp_path / name
    text = obj_or_text if isinstance(obj_or_text, str) else json.dumps(obj_or_text, indent=2)
    path.write_text(text)
    return str(path)


def with_(**over):
    return harness.deep_merge(FULL, over)


def semantic(path, key):
    """Regex for a semantic error line: FILE: $.key: message."""
    return re.compile(r"^%s: %s: \S" % (re.escape(path), re.escape(key)), re.M)


OK = re.compile(r"\bok\b", re.I)


# -- good files ---------------------------------------------------------------

def test_check_full_config_ok(herald_bin, tmp_path):
    path = write(tmp_path, FULL)
    rc, out = herald(herald_bin, "-t", "-c", path)
    assert rc == 0, out
    assert OK.search(out), out


@pytest.mark.parametrize("workers", ["auto", 1, 256])
def test_check_workers_bounds_ok(herald_bin, tmp_path, workers):
    rc, out = herald(herald_bin, "-t", "-c", write(tmp_path, with_(workers=workers)))
    assert rc == 0, out
    assert OK.search(out), out


def test_check_minimal_anonymous_ok(herald_bin, tmp_path):
    # Everything else has a default.
    rc, out = herald(herald_bin, "-t", "-c", write(tmp_path, {"auth": {"allow_anonymous": True}}))
    assert rc == 0, out
    assert OK.search(out), out


def test_check_default_path(herald_bin, tmp_path):
    # Without -c, herald reads conf/herald.json relative to the cwd.
    (tmp_path / "conf").mkdir()
    write(tmp_path / "conf", FULL)
    rc, out = herald(herald_bin, "-t", cwd=str(tmp_path))
    assert rc == 0, out
    assert OK.search(out), out

    empty = tmp_path / "empty"
    empty.mkdir()
    rc, out = herald(herald_bin, "-t", cwd=str(empty))
    assert rc == 1, out
    assert "conf/herald.json" in out, out


def test_check_does_not_bind(herald_bin, tmp_path):
    # -t only checks: it must pass while the configured port is in use and
    # must not start workers.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        cfg = with_(listen={"port": port})
        rc, out = herald(herald_bin, "-t", "-c", write(tmp_path, cfg), timeout=10)
    assert rc == 0, out
    assert OK.search(out), out


# -- bad files ----------------------------------------------------------------

def test_check_syntax_error_line_col(herald_bin, tmp_path):
    text = ('{\n'
            '  "workers": 2,\n'
            '  "listen": {"address": "127.0.0.1", "port": 8080},\n'
            '  "auth": {"allow_anonymous": true,,}\n'
            '}\n')
    path = write(tmp_path, text)
    rc, out = herald(herald_bin, "-t", "-c", path)
    assert rc == 1, out
    assert re.search(r"^%s:4:\d+: \S" % re.escape(path), out, re.M), out
    assert not OK.search(out), out


def test_check_truncated_file(herald_bin, tmp_path):
    path = write(tmp_path, '{\n  "workers": 2,\n  "listen": {\n')
    rc, out = herald(herald_bin, "-t", "-c", path)
    assert rc == 1, out
    assert re.search(r"^%s:\d+:\d+: \S" % re.escape(path), out, re.M), out


def test_check_duplicate_key(herald_bin, tmp_path):
    text = '{\n  "workers": 2,\n  "workers": 3,\n  "auth": {"allow_anonymous": true}\n}\n'
    path = write(tmp_path, text)
    rc, out = herald(herald_bin, "-t", "-c", path)
    assert rc == 1, out
    assert re.search(r"^%s:3:\d+: \S" % re.escape(path), out, re.M), out


def test_check_missing_file(herald_bin, tmp_path):
    path = str(tmp_path / "nope.json")
    rc, out = herald(herald_bin, "-t", "-c", path)
    assert rc == 1, out
    assert path in out, out


def test_check_reports_every_semantic_error(herald_bin, tmp_path):
    cfg = with_(workers=0,
                listen={"port": 70000, "backlog": 0},
                log={"format": "xml", "level": "loud"},
                timeouts={"shutdown_ms": 50},
                api={"key": "short"},
                auth={"hmac_secret": "too-short"})
    path = write(tmp_path, cfg)
    rc, out = herald(herald_bin, "-t", "-c", path)
    assert rc == 1, out
    for key in ("$.workers", "$.listen.port", "$.listen.backlog", "$.log.format",
                "$.log.level", "$.timeouts.shutdown_ms", "$.api.key",
                "$.auth.hmac_secret"):
        assert semantic(path, key).search(out), "no error for %s in:\n%s" % (key, out)


@pytest.mark.parametrize("key,value", [
    ("workers", 257),
    ("workers", "many"),
    ("workers", -1),
    ("workers", 1.5),
    ("listen.port", "8080"),
    ("listen.address", 8080),
    ("admin.port", -1),
    ("auth.allow_anonymous", "yes"),
    ("log.format", "yaml"),
    ("timeouts.shutdown_ms", 600001),
    ("timeouts.shutdown_ms", 99),
    ("redis.url", "http://127.0.0.1:6379"),
])
def test_check_bad_value(herald_bin, tmp_path, key, value):
    parts = key.split(".")
    over = value
    for p in reversed(parts):
        over = {p: over}
    path = write(tmp_path, with_(**over))
    rc, out = herald(herald_bin, "-t", "-c", path)
    assert rc == 1, out
    assert semantic(path, "$." + key).search(out), out


@pytest.mark.parametrize("over,key", [
    ({"bogus": 1}, "$.bogus"),
    ({"listen": {"prot": 8080}}, "$.listen.prot"),
    ({"log": {"colour": True}}, "$.log.colour"),
])
def test_check_unknown_key(herald_bin, tmp_path, over, key):
    path = write(tmp_path, with_(**over))
    rc, out = herald(herald_bin, "-t", "-c", path)
    assert rc == 1, out
    assert semantic(path, key).search(out), out


def test_check_two_unknown_keys_one_pass(herald_bin, tmp_path):
    path = write(tmp_path, with_(bogus=1, listen={"prot": 1}))
    rc, out = herald(herald_bin, "-t", "-c", path)
    assert rc == 1, out
    assert semantic(path, "$.bogus").search(out), out
    assert semantic(path, "$.listen.prot").search(out), out


def test_check_secret_required_without_anonymous(herald_bin, tmp_path):
    path = write(tmp_path, {"workers": 1})
    rc, out = herald(herald_bin, "-t", "-c", path)
    assert rc == 1, out
    assert re.search(r"^%s: \$\.auth(\.hmac_secret)?: \S" % re.escape(path), out, re.M), out


def test_check_not_an_object(herald_bin, tmp_path):
    path = write(tmp_path, "[1, 2, 3]\n")
    rc, out = herald(herald_bin, "-t", "-c", path)
    assert rc == 1, out
    assert path in out, out


# -- other options --------------------------------------------------------------

@pytest.mark.parametrize("opt", ["--version", "-V"])
def test_version(herald_bin, opt):
    rc, out = herald(herald_bin, opt)
    assert rc == 0, out
    assert re.search(r"\bherald\b\D*\d+\.\d+\.\d+", out), out


@pytest.mark.parametrize("opt", ["--help", "-h"])
def test_help(herald_bin, opt):
    rc, out = herald(herald_bin, opt)
    assert rc == 0, out
    assert "-c" in out and "-t" in out, out


@pytest.mark.parametrize("args", [["--bogus"], ["-c"], ["-t", "-c", "x.json", "extra"]])
def test_bad_usage(herald_bin, tmp_path, args):
    rc, out = herald(herald_bin, *args, cwd=str(tmp_path), timeout=10)
    assert rc != 0, out
    assert out.strip(), "no message for a bad command line"


def test_start_with_bad_config_fails(herald_bin, tmp_path):
    # Without -t, a broken file must stop start-up with a failure status
    # and the same error report, not start workers.
    path = write(tmp_path, with_(workers=0))
    rc, out = herald(herald_bin, "-c", path, timeout=15)
    assert rc != 0, out
    assert semantic(path, "$.workers").search(out), out


# -- rules that span keys (#16 items 13, 14) ---------------------------------

def test_check_outbound_queue_smaller_than_a_publication(herald_bin, tmp_path):
    """One publication larger than the outbound queue would close every
    subscriber as a slow consumer: herald -t refuses the file."""
    path = write(tmp_path, with_(limits={"message_bytes": 262144,
                                         "outbound_queue_bytes": 262144}))
    rc, out = herald(herald_bin, "-t", "-c", path)
    assert rc == 1, out
    assert semantic(path, "$.limits.outbound_queue_bytes").search(out), out
    assert "263168" in out, out        # 262144 + 1024 of envelope


def test_check_public_admin_needs_token(herald_bin, tmp_path):
    conf = with_()
    conf["admin"] = {"address": "0.0.0.0", "port": 19090}
    path = write(tmp_path, conf)
    rc, out = herald(herald_bin, "-t", "-c", path)
    assert rc == 1, out
    assert semantic(path, "$.admin.token").search(out), out
    conf["admin"]["token"] = "admin-token-0123456789"
    rc, out = herald(herald_bin, "-t", "-c", write(tmp_path, conf))
    assert rc == 0, out
