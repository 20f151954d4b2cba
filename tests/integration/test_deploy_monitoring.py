"""deploy/prometheus and deploy/grafana: promtool checks and rule unit
tests, a real Prometheus server scraping a real herald with the shipped
scrape config, and the dashboard's and the rules' PromQL against the
metric names a running herald actually exports.

Needs the Debian packages prometheus (prometheus, promtool) and
python3-yaml.
"""

import asyncio
import contextlib
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import urllib.error
import urllib.parse
import urllib.request

import pytest
import yaml

import harness
from harness import free_port, wait_until

DEPLOY = os.path.join(harness.REPO_ROOT, "deploy")
PROM_DIR = os.path.join(DEPLOY, "prometheus")
PROM_YML = os.path.join(PROM_DIR, "prometheus.yml")
RULES_YML = os.path.join(PROM_DIR, "herald-rules.yml")
RULE_TESTS = sorted(glob.glob(os.path.join(PROM_DIR, "tests", "*.yml")))
DASHBOARD = os.path.join(DEPLOY, "grafana", "herald-dashboard.json")
OPERATIONS_MD = os.path.join(harness.REPO_ROOT, "docs", "operations.md")

# Series that Prometheus records itself for every target; the rules may
# use them, herald does not export them.
PROMETHEUS_SYNTHETIC = {"up"}


@pytest.fixture
def quick_herald(make_herald):
    """A started herald (two workers) that stops fast at teardown."""
    return make_herald(timeouts={"shutdown_ms": 400})


def need(tool):
    path = shutil.which(tool)
    if path is None:
        pytest.fail("%s not found: apt-get install prometheus" % tool)
    return path


def run_tool(argv, cwd=None):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=cwd)
    return r.returncode, r.stdout + r.stderr


# ---------------------------------------------------------------------------
# PromQL helpers

_PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool",
                 "and", "or", "unless", "offset", "atan2", "inf", "nan"}


def promql_metric_names(expr):
    """Metric names an expression selects. A light lexer, not a parser:
    strings, label matchers, ranges, label lists and numbers are removed,
    and an identifier followed by '(' is a function or an aggregation.
    (The live Prometheus test below parses every expression for real.)"""
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    s = re.sub(r"\boffset\s+-?\w+", " ", s)
    s = re.sub(r"(?<![\w:$])\d+(\.\d*)?([eE][+-]?\d+)?", " ", s)
    names = set()
    for m in re.finditer(r"(?<![\w$])[A-Za-z_:][\w:]*", s):
        tok = m.group(0)
        if s[m.end():].lstrip().startswith("("):
            continue
        if tok.lower() in _PROMQL_WORDS:
            continue
        names.add(tok)
    return names


def test_deploy_promql_lexer_finds_names():
    """The lexer the metric-name checks rely on finds what it should (so
    those checks cannot pass by finding nothing)."""
    assert promql_metric_names(
        'histogram_quantile(0.99, sum by (job, le) (rate(a_bucket{x="y{z}"}[5m] offset 1h)))'
        ' > 0.25 and on (job) sum without (worker) (b_total) * 1e3 > on () group_left () c:rec'
    ) == {"a_bucket", "b_total", "c:rec"}
    assert promql_metric_names("time() - max(herald_start_time_seconds{instance=~\"$instance\"})") \
        == {"herald_start_time_seconds"}
    assert promql_metric_names("sum(rate(x[$__rate_interval])) by (code) > 0") == {"x"}
    assert promql_metric_names("vector(100000)") == set()


def grafana_to_promql(expr):
    """A dashboard expression with Grafana's variables replaced by values
    Prometheus accepts."""
    for var, val in (("$__rate_interval", "1m"), ("$__interval", "1m"), ("$__range", "1h"),
                     ("${instance}", ".*"), ("$instance", ".*")):
        expr = expr.replace(var, val)
    assert "$" not in expr, "unknown Grafana variable in %r" % expr
    return expr


def exported_names(herald):
    """Every sample name in a live /metrics scrape, and the family names
    from # TYPE lines."""
    url = "http://127.0.0.1:%d/metrics" % herald.admin_port
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    samples, families = set(), {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(None, 3)
            families[name] = kind
        elif line and not line.startswith("#"):
            samples.add(re.match(r"[A-Za-z_:][\w:]*", line).group(0))
    # a histogram family is exported as _bucket, _sum and _count
    for name, kind in families.items():
        if kind == "histogram":
            assert {name + "_bucket", name + "_sum", name + "_count"} <= samples, name
    assert len(samples) > 20, samples
    return samples


def load_rules():
    with open(RULES_YML) as f:
        doc = yaml.safe_load(f)
    return [r for g in doc["groups"] for r in g["rules"]]


def dashboard_exprs(dash):
    """(where, expr) of every PromQL expression in the dashboard: panel
    targets (rows included) and query variables."""
    out = []

    def panels(ps):
        for p in ps:
            for i, t in enumerate(p.get("targets", [])):
                if t.get("expr"):
                    out.append(("panel %r target %d" % (p.get("title"), i), t["expr"]))
            panels(p.get("panels", []))
    panels(dash.get("panels", []))
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", q or "")
        out.append(("variable %r" % v["name"], m.group(1) if m else q))
    return out


# ---------------------------------------------------------------------------
# promtool

def test_deploy_promtool_check_config():
    rc, out = run_tool([need("promtool"), "check", "config", PROM_YML])
    assert rc == 0 and "SUCCESS" in out, out
    # the config pulls in the rules file (and promtool checked it)
    assert "herald-rules.yml" in out, out


def test_deploy_promtool_check_config_with_short_interval(tmp_path):
    """An operator lowers scrape_interval below the 10 s default timeout:
    the file must stay valid (no scrape_timeout above the interval)."""
    with open(PROM_YML) as f:
        text = f.read()
    text, n = re.subn(r"^(\s*scrape_interval:) 15s$", r"\1 2s", text, flags=re.M)
    assert n == 1, "scrape_interval: 15s not found in the shipped file"
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(text)
    shutil.copy(RULES_YML, str(tmp_path / os.path.basename(RULES_YML)))
    rc, out = run_tool([need("promtool"), "check", "config", str(cfg)])
    assert rc == 0, out


def test_deploy_promtool_check_rules():
    rc, out = run_tool([need("promtool"), "check", "rules", RULES_YML])
    assert rc == 0 and "SUCCESS" in out, out


def test_deploy_promtool_test_rules():
    assert RULE_TESTS, "no rule unit tests in deploy/prometheus/tests/"
    rc, out = run_tool([need("promtool"), "test", "rules"] + RULE_TESTS)
    assert rc == 0 and "SUCCESS" in out and "FAILED" not in out, out


def test_deploy_every_alert_fires_and_stays_quiet_in_unit_tests():
    """Each alert in herald-rules.yml has a promtool case where it fires
    and one where it must stay quiet."""
    alerts = {r["alert"] for r in load_rules() if "alert" in r}
    assert len(alerts) >= 7, alerts
    fires, quiet = set(), set()
    for path in RULE_TESTS:
        with open(path) as f:
            doc = yaml.safe_load(f)
        for t in doc.get("tests", []):
            for a in t.get("alert_rule_test", []) or []:
                (fires if a.get("exp_alerts") else quiet).add(a["alertname"])
    assert not alerts - fires, "alerts never shown firing: %s" % sorted(alerts - fires)
    assert not alerts - quiet, "alerts never shown quiet: %s" % sorted(alerts - quiet)
    assert not (fires | quiet) - alerts, "tests for unknown alerts: %s" % sorted((fires | quiet) - alerts)
    # the topics the alerts must cover, by the series they read
    used = set()
    for r in load_rules():
        used |= promql_metric_names(r["expr"])
    for name in ("herald_worker_restarts_total", "herald_redis_up", "herald_config_reloads_total",
                 "herald_disconnects_total", "herald_delivery_latency_seconds_bucket",
                 "herald_connections", "herald_process_resident_memory_bytes",
                 "herald_process_open_fds", "herald_process_max_fds",
                 "herald_redis_command_duration_seconds_bucket",
                 "herald_connections_rejected_total"):
        assert name in used, name


def github_slug(heading):
    s = heading.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


def test_deploy_alert_runbooks_exist():
    with open(OPERATIONS_MD) as f:
        slugs = {github_slug(m.group(1)) for m in re.finditer(r"^#+\s+(.+)$", f.read(), re.M)}
    for r in load_rules():
        if "alert" not in r:
            continue
        link = r.get("annotations", {}).get("runbook", "")
        assert link.startswith("docs/operations.md#"), (r["alert"], link)
        assert link.split("#", 1)[1] in slugs, (r["alert"], link, sorted(slugs))


# ---------------------------------------------------------------------------
# names against a live herald

def test_deploy_rules_and_dashboard_use_only_exported_metrics(quick_herald):
    herald = quick_herald
    exported = exported_names(herald)
    rules = load_rules()
    recorded = {r["record"] for r in rules if "record" in r}
    for r in rules:
        names = promql_metric_names(r["expr"])
        unknown = names - exported - recorded - PROMETHEUS_SYNTHETIC
        assert not unknown, "%s uses %s, not exported by herald" % (
            r.get("alert") or r.get("record"), sorted(unknown))
        assert names or "record" in r, r

    with open(DASHBOARD) as f:
        dash = json.load(f)
    exprs = dashboard_exprs(dash)
    assert len(exprs) >= 20, exprs
    used = set()
    for where, expr in exprs:
        names = promql_metric_names(expr)
        assert names, "%s: no metric in %r" % (where, expr)
        unknown = names - exported
        assert not unknown, "%s uses %s, not exported by herald" % (where, sorted(unknown))
        used |= names
    # what the dashboard is for
    for name in ("herald_connections", "herald_handshake_duration_seconds_bucket",
                 "herald_delivery_latency_seconds_bucket", "herald_messages_delivered_total",
                 "herald_connections_rejected_total", "herald_disconnects_total",
                 "herald_command_errors_total", "herald_redis_up",
                 "herald_worker_restarts_total", "herald_process_resident_memory_bytes"):
        assert name in used, "dashboard does not show %s" % name


def test_deploy_dashboard_structure():
    with open(DASHBOARD) as f:
        dash = json.load(f)
    assert dash["title"] and dash["uid"] and isinstance(dash["schemaVersion"], int)
    names = {v["name"] for v in dash["templating"]["list"]}
    assert {"datasource", "instance"} <= names, names
    ids = []

    def walk(ps):
        for p in ps:
            ids.append(p["id"])
            g = p["gridPos"]
            assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
            if p["type"] != "row":
                assert p["targets"], p["title"]
                for t in p["targets"]:
                    assert t["datasource"]["uid"] == "${datasource}", p["title"]
                    assert t["refId"], p["title"]
                # quantiles, ratios and rates name their unit
                assert p.get("fieldConfig", {}).get("defaults", {}).get("unit"), p["title"]
            walk(p.get("panels", []))
    walk(dash["panels"])
    assert len(ids) == len(set(ids)), "duplicate panel ids"


# ---------------------------------------------------------------------------
# a real Prometheus server

def http_json(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read().decode())


class Prometheus:
    def __init__(self, workdir, config):
        self.dir = str(workdir)
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        self.conf = os.path.join(self.dir, "prometheus.yml")
        with open(self.conf, "w") as f:
            yaml.safe_dump(config, f)
        self.log = os.path.join(self.dir, "prometheus.log")
        self.proc = None

    @property
    def base(self):
        return "http://127.0.0.1:%d" % self.port

    def start(self, timeout=30):
        log = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [need("prometheus"), "--config.file=" + self.conf,
             "--storage.tsdb.path=" + os.path.join(self.dir, "data"),
             "--web.listen-address=127.0.0.1:%d" % self.port,
             "--web.console.templates=" + self.dir, "--web.console.libraries=" + self.dir,
             "--log.level=warn"],
            cwd=self.dir, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
        log.close()

        def ready():
            assert self.proc.poll() is None, "prometheus exited: %s" % self.diag()
            try:
                with urllib.request.urlopen(self.base + "/-/ready", timeout=1) as r:
                    return r.status == 200
            except (OSError, urllib.error.URLError):
                return False
        wait_until(ready, timeout, interval=0.1, what="prometheus /-/ready")
        return self

    def query(self, expr):
        url = self.base + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            return http_json(url)
        except urllib.error.HTTPError as e:
            return json.loads(e.read().decode())

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(5)

    def diag(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()[-3000:]
        except OSError:
            return ""


@contextlib.contextmanager
def open_connections(url, n):
    """Hold n WebSocket connections to herald open (in a thread with its
    own event loop) for the duration of the with block."""
    ready, stop, err = threading.Event(), threading.Event(), []

    async def hold():
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(n):
                await stack.enter_async_context(harness.connect(url))
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.05)

    def main():
        try:
            asyncio.run(hold())
        except BaseException as e:  # reported by the waiting side
            err.append(e)
            ready.set()

    t = threading.Thread(target=main, daemon=True)
    t.start()
    try:
        assert ready.wait(20), "connections not opened"
        assert not err, "opening connections failed: %r" % err
        yield
    finally:
        stop.set()
        t.join(10)


def test_deploy_prometheus_scrapes_herald(quick_herald, tmp_path):
    herald = quick_herald
    with open(PROM_YML) as f:
        cfg = yaml.safe_load(f)
    jobs = [j for j in cfg["scrape_configs"] if j["job_name"] == "herald"]
    assert len(jobs) == 1, cfg["scrape_configs"]
    job = jobs[0]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    # The shipped job, pointed at this herald and sped up for a test.
    assert len(job["static_configs"]) == 1 and job["static_configs"][0]["targets"]
    job["static_configs"][0]["targets"] = ["127.0.0.1:%d" % herald.admin_port]
    job["scrape_interval"] = job["scrape_timeout"] = "500ms"
    cfg["global"]["scrape_interval"] = cfg["global"]["evaluation_interval"] = "500ms"
    cfg["rule_files"] = [os.path.join(PROM_DIR, p) for p in cfg["rule_files"]]

    prom = Prometheus(tmp_path / "prometheus", cfg)
    try:
        prom.start()

        def target_up():
            t = http_json(prom.base + "/api/v1/targets")["data"]["activeTargets"]
            mine = [x for x in t if x["labels"].get("job") == "herald"]
            assert len(mine) <= 1, t          # none until discovery ran
            return mine[0] if mine and mine[0]["health"] == "up" else None
        tgt = wait_until(target_up, 20, interval=0.2, what="herald target up")
        assert tgt["scrapeUrl"] == "http://127.0.0.1:%d/metrics" % herald.admin_port, tgt
        assert tgt["lastError"] == "", tgt

        # the real values arrive: three open connections on the node
        with open_connections(herald.url, 3):
            def three():
                r = prom.query('sum(herald_connections{job="herald"})')
                assert r["status"] == "success", r
                res = r["data"]["result"]
                return res and res[0]["value"][1] == "3"
            wait_until(three, 20, interval=0.2, what="herald_connections == 3 in Prometheus")
        r = prom.query("herald_connections")
        workers = sorted(s["metric"].get("worker") for s in r["data"]["result"])
        assert workers == ["0", "1"], r

        # every rule loaded, evaluated and healthy against real series
        def rules_evaluated():
            groups = http_json(prom.base + "/api/v1/rules")["data"]["groups"]
            rules = [x for g in groups for x in g["rules"]]
            if any(x["lastEvaluation"].startswith("0001-") for x in rules):
                return None
            return groups
        groups = wait_until(rules_evaluated, 20, interval=0.2, what="rules evaluated")
        assert {g["name"] for g in groups} == {"herald-capacity", "herald"}, groups
        rules = [x for g in groups for x in g["rules"]]
        assert len(rules) == len(load_rules())
        bad = [(x["name"], x.get("lastError")) for x in rules if x["health"] != "ok"]
        assert not bad, bad
        # a healthy herald trips nothing, not even a pending alert
        alerts = http_json(prom.base + "/api/v1/alerts")["data"]["alerts"]
        assert alerts == [], alerts

        # every dashboard and rule expression parses and runs in PromQL
        with open(DASHBOARD) as f:
            exprs = dashboard_exprs(json.load(f))
        exprs += [(r.get("alert") or r.get("record"), r["expr"]) for r in load_rules()]
        for where, expr in exprs:
            r = prom.query(grafana_to_promql(expr))
            assert r.get("status") == "success", (where, expr, r)
    except AssertionError as e:
        raise AssertionError("%s\n--- prometheus log ---\n%s" % (e, prom.diag())) from None
    finally:
        prom.stop()
