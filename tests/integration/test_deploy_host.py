"""deploy/systemd and deploy/sysctl: the unit file checked by systemd's
own tools, the sd_notify protocol spoken by the real master (READY,
RELOADING + MONOTONIC_USEC, STOPPING, from the master's pid only), the
sysusers file, and the sysctl file against this kernel and the unit.

Needs the Debian package systemd (systemd-analyze, systemd-sysusers); no
running systemd is needed.
"""

import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import time

import pytest

import harness

DEPLOY = os.path.join(harness.REPO_ROOT, "deploy")
UNIT = os.path.join(DEPLOY, "systemd", "herald.service")
SYSUSERS = os.path.join(DEPLOY, "systemd", "herald.sysusers")
SYSCTL = os.path.join(DEPLOY, "sysctl", "99-herald.conf")
SHIPPED_CONF = os.path.join(harness.REPO_ROOT, "conf", "herald.json")
SHIPPED_BIN = "/usr/local/bin/herald"

# timeouts.shutdown_ms when the config does not set it (docs/configuration.md)
DEFAULT_SHUTDOWN_MS = 10000


def need(tool):
    path = shutil.which(tool)
    if path is None:
        pytest.fail("%s not found: apt-get install systemd" % tool)
    return path


def parse_unit(path):
    """{(section, key): [values]} of a unit file; repeated keys accumulate
    (an empty assignment is kept as "")."""
    out = {}
    section = None
    with open(path) as f:
        text = f.read()
    text = re.sub(r"\\\n", " ", text)           # continuation lines
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        m = re.match(r"^\[(.+)\]$", line)
        if m:
            section = m.group(1)
            continue
        key, _, value = line.partition("=")
        out.setdefault((section, key.strip()), []).append(value.strip())
    return out


def seconds(value):
    """A systemd time span with one unit ("15s", "2min", "500ms") in s."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(ms|s|sec|min|m)?", value)
    assert m, "cannot read time span %r" % value
    n, unit = float(m.group(1)), m.group(2) or "s"
    return n * {"ms": 0.001, "s": 1, "sec": 1, "min": 60, "m": 60}[unit]


@pytest.fixture
def unit_copy(tmp_path, herald_bin):
    """The shipped unit with ExecStart's (and every other) herald path
    pointed at the built binary: systemd-analyze verify checks that the
    commands exist and are executable."""
    with open(UNIT) as f:
        text = f.read()
    assert SHIPPED_BIN in text
    path = tmp_path / "herald.service"
    path.write_text(text.replace(SHIPPED_BIN, herald_bin))
    return str(path)


# ---------------------------------------------------------------------------
# the unit file

def verify(unit_path):
    """(exit status, output lines about our unit) of systemd-analyze verify.
    Unknown keys and unparsable values are only warnings (exit 0), so the
    lines matter; lines about other units on the host are not ours."""
    tool = need("systemd-analyze")
    r = subprocess.run([tool, "verify", unit_path], capture_output=True, text=True,
                       timeout=60)
    out = r.stdout + r.stderr
    ours = [l for l in out.splitlines() if "herald" in l or unit_path in l]
    return r.returncode, ours, out


def test_deploy_systemd_unit_verifies(unit_copy):
    rc, ours, out = verify(unit_copy)
    assert rc == 0, out
    assert not ours, "\n".join(ours)


def test_deploy_systemd_unit_verify_catches_a_bad_unit(tmp_path, unit_copy):
    """The check above can fail: the same tool on a broken copy complains."""
    with open(unit_copy) as f:
        text = f.read()
    bad = tmp_path / "bad" / "herald.service"
    bad.parent.mkdir()
    bad.write_text(text.replace("ProtectHome=yes", "ProtectHome=maybe")
                       .replace("KillSignal=SIGTERM", "KillSignal=SIGNOPE"))
    rc, ours, out = verify(str(bad))
    assert len(ours) == 2, out
    assert any("SIGNOPE" in l for l in ours) and any("maybe" in l for l in ours), out


def test_deploy_systemd_unit_settings():
    u = parse_unit(UNIT)

    def one(key, section="Service"):
        v = u.get((section, key))
        assert v is not None, "%s= missing from [%s]" % (key, section)
        return v[-1]

    assert one("Type") == "notify"
    assert one("NotifyAccess") in ("main", "exec", "all")
    assert one("ExecStart") == "%s -c /etc/herald/herald.json" % SHIPPED_BIN
    assert "/bin/kill -HUP $MAINPID" in u[("Service", "ExecReload")]
    assert one("KillSignal") == "SIGTERM"
    # SIGTERM to the master only: it drains its workers itself.
    assert one("KillMode") == "mixed"
    assert one("User") == "herald"
    assert int(one("LimitNOFILE")) >= 1048576

    # The stop timeout must leave the drain its whole time: above the
    # default timeouts.shutdown_ms and the one in the shipped config.
    # A stop first fails /health for timeouts.drain_health_ms, so both count.
    with open(SHIPPED_CONF) as f:
        t = json.load(f).get("timeouts", {})
    shipped_ms = t.get("shutdown_ms", DEFAULT_SHUTDOWN_MS) + t.get("drain_health_ms", 3000)
    stop_s = seconds(one("TimeoutStopSec"))
    assert stop_s > max(DEFAULT_SHUTDOWN_MS + 3000, shipped_ms) / 1000.0 + 2, stop_s

    for key, want in [("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"),
                      ("ProtectHome", "yes"), ("PrivateTmp", "yes"),
                      ("PrivateDevices", "yes"), ("ProtectKernelTunables", "yes"),
                      ("ProtectKernelModules", "yes"), ("ProtectKernelLogs", "yes"),
                      ("ProtectControlGroups", "yes"), ("SystemCallArchitectures", "native"),
                      ("MemoryDenyWriteExecute", "yes"), ("RestrictNamespaces", "yes"),
                      ("LockPersonality", "yes")]:
        assert one(key) == want, key
    assert set(one("RestrictAddressFamilies").split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert one("CapabilityBoundingSet") == ""


def test_deploy_systemd_unit_security_exposure(unit_copy):
    """systemd's own hardening score for the unit: "OK" or better (at most
    2.0 of 10; --threshold is in tenths)."""
    tool = need("systemd-analyze")
    r = subprocess.run([tool, "security", "--offline=yes", "--threshold=20", "--no-pager",
                        unit_copy], capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout)
    assert m, r.stdout + r.stderr
    assert r.returncode == 0 and float(m.group(1)) <= 2.0, r.stdout[-3000:] + r.stderr


def test_deploy_systemd_sysusers_creates_the_user(tmp_path):
    tool = need("systemd-sysusers")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    r = subprocess.run([tool, "--root", str(root), SYSUSERS], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    users = {l.split(":")[0]: l.split(":") for l in (root / "etc" / "passwd").read_text().splitlines()}
    assert "herald" in users, users
    user = users["herald"]
    assert int(user[2]) < 1000, user                      # a system user
    assert user[6] in ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false"), user
    groups = [l.split(":")[0] for l in (root / "etc" / "group").read_text().splitlines()]
    assert "herald" in groups


# ---------------------------------------------------------------------------
# sd_notify from the real master

class NotifyListener:
    """A unix datagram socket standing in for systemd's notify socket. It
    reads the sender's credentials (SO_PASSCRED), as systemd does to apply
    NotifyAccess=main."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(path)

    def recv(self, timeout):
        """(pid, {VAR: value}, raw) of the next datagram."""
        self.sock.settimeout(timeout)
        try:
            data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        except socket.timeout:
            raise AssertionError("no sd_notify datagram within %.1f s" % timeout) from None
        pid = None
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = struct.unpack("3i", payload[:12])[0]
        text = data.decode()
        fields = {}
        for line in text.split("\n"):
            k, sep, v = line.partition("=")
            assert sep and k, "malformed notify line %r in %r" % (line, text)
            fields[k] = v
        return pid, fields, text

    def nothing(self, quiet):
        self.sock.settimeout(quiet)
        try:
            data = self.sock.recv(4096)
        except socket.timeout:
            return
        raise AssertionError("unexpected sd_notify datagram %r" % (data,))

    def close(self):
        self.sock.close()


def test_deploy_systemd_notify_protocol(make_herald, tmp_path, monkeypatch):
    sock_path = str(tmp_path / "notify.sock")
    listener = NotifyListener(sock_path)
    monkeypatch.setenv("NOTIFY_SOCKET", sock_path)
    try:
        h = make_herald(timeouts={"shutdown_ms": 400})   # returns once workers answer

        pid, f, raw = listener.recv(10)
        assert pid == h.pid, "READY=1 from pid %s, master is %d" % (pid, h.pid)
        assert f.get("READY") == "1", raw
        listener.nothing(0.3)        # workers say nothing

        # a good reload: RELOADING=1 with a CLOCK_MONOTONIC stamp, then READY=1
        before = time.monotonic()
        h.send_signal(signal.SIGHUP)
        pid, f, raw = listener.recv(10)
        assert pid == h.pid and f.get("RELOADING") == "1", raw
        usec = int(f["MONOTONIC_USEC"])
        assert before * 1e6 - 1e6 <= usec <= time.monotonic() * 1e6, (before, usec)
        pid, f, raw = listener.recv(10)
        assert pid == h.pid and f.get("READY") == "1", raw
        assert "failed" not in f.get("STATUS", ""), raw

        # a rejected reload still ends with READY=1 (herald keeps running)
        good = open(h.conf_path).read()
        h.write_config(text="{ not json")
        h.send_signal(signal.SIGHUP)
        pid, f, raw = listener.recv(10)
        assert pid == h.pid and f.get("RELOADING") == "1", raw
        pid, f, raw = listener.recv(10)
        assert pid == h.pid and f.get("READY") == "1", raw
        assert "failed" in f.get("STATUS", ""), raw
        h.write_config(text=good)

        # graceful stop: STOPPING=1 first, then the exit
        h.send_signal(signal.SIGTERM)
        pid, f, raw = listener.recv(10)
        assert pid == h.pid and f == {"STOPPING": "1"}, raw
        assert h.wait_exit(h.shutdown_s + 10 * harness.SLACK) == 0
        listener.nothing(0.2)
    finally:
        listener.close()


# ---------------------------------------------------------------------------
# sysctl

def parse_sysctl(path):
    out = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            key, sep, value = line.partition("=")
            assert sep, "%s:%d: not key = value: %r" % (path, n, line)
            key, value = key.strip(), value.strip()
            assert key not in out, "%s:%d: %s set twice" % (path, n, key)
            out[key] = value
    return out


# Keys the file applies only "where available" (newer kernels).
OPTIONAL_KEYS = {"net.ipv4.tcp_migrate_req"}


def test_deploy_sysctl_keys_exist_and_are_consistent():
    s = parse_sysctl(SYSCTL)
    for key, value in s.items():
        proc = "/proc/sys/" + key.replace(".", "/")
        if key not in OPTIONAL_KEYS:
            assert os.path.exists(proc), "%s: no %s on this kernel (typo?)" % (key, proc)
        assert re.fullmatch(r"[0-9]+([ \t]+[0-9]+)*|[0-9]+(,[0-9]+(-[0-9]+)?)*", value), (key, value)
        with open(SYSCTL) as f:
            text = f.read()
        # every setting carries its reason: a comment right above it
        before = text[:text.index(key)].rstrip("\n").splitlines()
        assert before and before[-1].lstrip().startswith("#"), "%s has no comment" % key

    for key in ("net.core.somaxconn", "net.ipv4.tcp_max_syn_backlog",
                "net.ipv4.ip_local_port_range", "fs.file-max", "fs.nr_open",
                "net.ipv4.tcp_migrate_req", "net.core.netdev_max_backlog"):
        assert key in s, key

    # listen.backlog (default 4096) only takes effect up to somaxconn
    assert int(s["net.core.somaxconn"]) >= 4096
    # LimitNOFILE may not exceed fs.nr_open, and file-max covers several
    # processes at that limit
    u = parse_unit(UNIT)
    nofile = int(u[("Service", "LimitNOFILE")][-1])
    assert int(s["fs.nr_open"]) >= nofile
    assert int(s["fs.file-max"]) >= 2 * nofile
    # the ephemeral range leaves herald's default ports out, or reserves them
    lo, hi = map(int, s["net.ipv4.ip_local_port_range"].split())
    reserved = set()
    for part in s.get("net.ipv4.ip_local_reserved_ports", "").split(","):
        if part:
            a, _, b = part.partition("-")
            reserved.update(range(int(a), int(b or a) + 1))
    with open(SHIPPED_CONF) as f:
        conf = json.load(f)
    for port in (conf["listen"]["port"], conf["admin"]["port"]):
        assert not (lo <= port <= hi) or port in reserved, port
    assert hi - lo >= 50000, (lo, hi)
