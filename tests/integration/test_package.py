"""deploy/package.sh's .deb, the way an operator meets it: installed into
a fresh Debian 12 root (debootstrap) entered with chroot, `herald -t`
passes on the installed configuration, the installed binary serves a
WebSocket client against a real redis-server, and the package removes
and purges cleanly.

Opt-in (HERALD_PACKAGE_TEST=1): it needs root, debootstrap and a
reachable Debian mirror (the one apt is configured with), and a cold run
(release build + debootstrap) takes minutes, past the default suite's
budget. The Debian root is cached under build-pkg/ (the base system, and
a copy with the package's dependencies installed, keyed by them), so a
warm run takes about 30 s. Each run copies the cached root and installs
the .deb into the copy.

    HERALD_PACKAGE_TEST=1 /usr/bin/python3 -m pytest -q tests/integration/test_package.py
"""

import asyncio
import hashlib
import json
import os
import re
import shutil
import subprocess

import pytest
import websockets

import harness
from harness import free_port, wait_until

PKG_DIR = os.environ.get("HERALD_PKG_DIR", os.path.join(harness.REPO_ROOT, "build-pkg"))
SBIN = "/usr/sbin:/usr/bin:/sbin:/bin"

pytestmark = pytest.mark.skipif(
    os.environ.get("HERALD_PACKAGE_TEST") != "1",
    reason="opt-in: HERALD_PACKAGE_TEST=1 (needs root, debootstrap and a Debian mirror; "
           "minutes on a cold cache)")


def sh(argv, timeout=900, **kw):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                       env=dict(os.environ, PATH=SBIN + ":" + os.environ.get("PATH", "")), **kw)
    assert r.returncode == 0, "%s failed (%d):\n%s\n%s" % (argv, r.returncode, r.stdout[-3000:],
                                                           r.stderr[-3000:])
    return r.stdout


def mirror():
    """The Debian mirror apt uses here (deb822 or one-line sources)."""
    for path in ("/etc/apt/sources.list.d/debian.sources", "/etc/apt/sources.list"):
        if os.path.exists(path):
            text = open(path).read()
            m = re.search(r"^URIs:\s*(\S+/debian)\s*$", text, re.M) or \
                re.search(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+/debian)\s+bookworm", text, re.M)
            if m:
                return m.group(1)
    return "http://deb.debian.org/debian"


def chroot(root, *cmd, timeout=600):
    return sh(["chroot", root] + list(cmd), timeout=timeout)


def base_root():
    """A cached debootstrap'ed Debian 12 (minbase)."""
    base = os.path.join(PKG_DIR, "deb12-root")
    if not os.path.exists(os.path.join(base, ".complete")):
        tmp = base + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        sh(["debootstrap", "--variant=minbase", "bookworm", tmp, mirror()], timeout=1800)
        shutil.rmtree(base, ignore_errors=True)
        os.rename(tmp, base)
        open(os.path.join(base, ".complete"), "w").close()
    return base


def deps_root(deb):
    """The base root with the .deb's dependencies installed (cached by its
    Depends line), so that installing the .deb itself needs no network."""
    depends = sh(["dpkg-deb", "-f", deb, "Depends"]).strip()
    key = hashlib.sha256(depends.encode()).hexdigest()[:12]
    root = os.path.join(PKG_DIR, "deb12-deps-" + key)
    if os.path.exists(os.path.join(root, ".complete")):
        return root
    shutil.rmtree(root, ignore_errors=True)
    sh(["cp", "-a", base_root(), root])
    names = []
    for alt in depends.split(","):
        first = alt.split("|")[0].strip()
        names.append(first.split(" ")[0])
    chroot(root, "apt-get", "update", "-q")
    chroot(root, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-q",
           "--no-install-recommends", *names)
    chroot(root, "apt-get", "clean")
    open(os.path.join(root, ".complete"), "w").close()
    return root


@pytest.fixture(scope="module")
def deb():
    if os.geteuid() != 0:
        pytest.skip("needs root (chroot, dpkg in the root)")
    for tool in ("debootstrap", "dpkg-deb", "dpkg-shlibdeps", "chroot"):
        if shutil.which(tool, path=SBIN) is None:
            pytest.skip("%s not installed (deploy/dev.sh installs dpkg-dev and debootstrap)" % tool)
    out = sh([os.path.join(harness.REPO_ROOT, "deploy", "package.sh"), PKG_DIR], timeout=1800)
    path = out.strip().splitlines()[-1]
    assert path.endswith(".deb") and os.path.exists(path), out
    return path


@pytest.fixture
def root(deb, tmp_path):
    """A fresh copy of the cached root for this test; /proc mounted while
    it runs."""
    src = deps_root(deb)
    r = str(tmp_path / "root")
    sh(["cp", "-a", src, r])
    sh(["mount", "-t", "proc", "proc", os.path.join(r, "proc")])
    yield r
    subprocess.run(["umount", "-l", os.path.join(r, "proc")], capture_output=True)
    shutil.rmtree(r, ignore_errors=True)


def test_package_installs_checks_serves_and_removes(deb, root, redis_server):
    shutil.copy(deb, os.path.join(root, "tmp", "herald.deb"))
    chroot(root, "dpkg", "-i", "/tmp/herald.deb")

    # what an operator finds
    for path in ("usr/bin/herald", "etc/herald/herald.json", "etc/herald/hmac_secret",
                 "etc/herald/api_key", "usr/lib/systemd/system/herald.service",
                 "usr/lib/sysusers.d/herald.conf", "etc/logrotate.d/herald",
                 "usr/share/doc/herald/docs/operations.md"):
        assert os.path.exists(os.path.join(root, path)), path
    assert "/etc/herald/herald.json" in chroot(root, "dpkg-query", "-W", "-f=${Conffiles}", "herald")
    chroot(root, "getent", "passwd", "herald")
    unit = open(os.path.join(root, "usr/lib/systemd/system/herald.service")).read()
    assert re.search(r"^ExecStart=/usr/bin/herald ", unit, re.M), unit
    # installed, not enabled
    assert not os.path.exists(os.path.join(
        root, "etc/systemd/system/multi-user.target.wants/herald.service"))

    # herald -t on the installed configuration, as the unit's ExecStartPre
    chroot(root, "/usr/bin/herald", "-t", "-c", "/etc/herald/herald.json")

    # start it, as the herald user, against the host's redis-server, on
    # free loopback ports (the operator's edit of the conffile)
    conf_path = os.path.join(root, "etc/herald/herald.json")
    conf = json.load(open(conf_path))
    port, admin = free_port(), free_port()
    conf["listen"] = {"address": "127.0.0.1", "port": port}
    conf["admin"] = {"address": "127.0.0.1", "port": admin}
    conf["redis"] = {"url": redis_server.url}
    conf["workers"] = 1
    conf["auth"]["allow_anonymous"] = True
    conf.setdefault("namespaces", {}).setdefault("default", {})["anonymous"] = True
    json.dump(conf, open(conf_path, "w"), indent=4)
    chroot(root, "/usr/bin/herald", "-t", "-c", "/etc/herald/herald.json")
    proc = subprocess.Popen(["chroot", "--userspec=herald:herald", root, "/usr/bin/herald",
                             "-c", "/etc/herald/herald.json"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        def up():
            assert proc.poll() is None, proc.stdout.read().decode(errors="replace")
            return harness.admin_request(admin, "/health")[0] == 200
        wait_until(lambda: _try(up), 20, interval=0.2, what="installed herald healthy")

        async def client():
            async with websockets.connect("ws://127.0.0.1:%d/" % port,
                                          subprotocols=[harness.SUBPROTOCOL]) as ws:
                await ws.send(json.dumps({"id": 1, "method": "connect", "params": {}}))
                r = json.loads(await asyncio.wait_for(ws.recv(), 10))
                assert "result" in r, r
                await ws.send(json.dumps({"id": 2, "method": "subscribe",
                                          "params": {"channel": "pkg"}}))
                r = json.loads(await asyncio.wait_for(ws.recv(), 10))
                assert r.get("id") == 2 and "result" in r, r
        asyncio.run(client())
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 0, proc.stdout.read().decode(errors="replace")

    # remove keeps the (edited) conffile; purge takes it and the secrets
    chroot(root, "dpkg", "-r", "herald")
    assert not os.path.exists(os.path.join(root, "usr/bin/herald"))
    assert os.path.exists(conf_path)
    chroot(root, "dpkg", "--purge", "herald")
    assert not os.path.exists(os.path.join(root, "etc/herald"))
    assert "herald" not in chroot(root, "dpkg-query", "-W", "-f=${Package}\\n")


def _try(f):
    try:
        return f()
    except OSError:
        return False
