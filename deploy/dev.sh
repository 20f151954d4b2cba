#!/usr/bin/env bash
#
# Quick start and test driver for herald on Debian 12.
#
#   ./deploy/dev.sh run    install missing packages, build, start a local
#                          redis-server if none answers, run herald in the
#                          foreground with conf/herald.json
#   ./deploy/dev.sh test   install missing packages, then build and test
#                          twice: build/ (gcc, with line coverage) and
#                          build-asan/ (clang with AddressSanitizer +
#                          UBSan); unit tests (meson) and integration tests
#                          (pytest) for each; once, the JavaScript SDK's
#                          tests (clients/js: node, npm, headless
#                          chromium). The summary ends with the line
#                          coverage of build/'s suites per folder (gcovr).
#
# Safe to run again: build dirs are reused and reconfigured only when their
# options or compiler do not match. Runs as root or as a sudo user.
#
# Environment:
#   HERALD_CONF      config for `run` (default conf/herald.json)
#   HERALD_NO_APT=1  skip the package check (offline machines)
#   PYTEST_ADDOPTS   extra pytest arguments, e.g. "-k ping -x"

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# Debian's python, not whatever python3 comes first on PATH: the integration
# tests need Debian's pytest and websockets modules.
PY=/usr/bin/python3

PACKAGES=(
    meson ninja-build pkg-config gcc clang
    libevent-dev libwebsockets-dev libwebsockets-evlib-ev libev-dev
    libhiredis-dev libjansson-dev libssl-dev check
    redis-server python3-pytest python3-websockets prometheus
    libclang-rt-14-dev clang-format
    nginx haproxy systemd openssl python3-yaml redis-sentinel stunnel4
    chromium
    libcurl4-openssl-dev python3-cryptography gcovr
    dpkg-dev debootstrap
)

# Node.js for the JavaScript SDK (clients/js): Debian's nodejs and npm, but
# only when there is no node or npm at all. A machine with Node.js from
# elsewhere (e.g. nodesource, whose nodejs conflicts with Debian's npm) keeps
# it; the SDK needs Node.js 18 or later.
NODE_PACKAGES=(nodejs npm)

# name | compiler | meson options
BUILD_NORMAL=(build gcc --werror -Db_coverage=true)
BUILD_ASAN=(build-asan clang --werror "-Db_sanitize=address,undefined" -Db_lundef=false)

ASAN_ENV=(
    "ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:halt_on_error=1"
    "UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1"
)

if [ -t 2 ]; then
    say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
else
    say() { printf '==> %s\n' "$*" >&2; }
fi
warn() { printf 'warning: %s\n' "$*" >&2; }
die()  { printf 'error: %s\n' "$*" >&2; exit 1; }

usage() {
    sed -n '3,21p' "$0" | sed 's/^# \{0,1\}//'
}

# Run a command as root: directly when we are root, through sudo otherwise.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root to run: $* (run as root or install sudo)"
    fi
}

# Install whatever is missing from PACKAGES; a no-op (no apt-get update)
# when everything is there already.
install_packages() {
    if [ "${HERALD_NO_APT:-0}" = 1 ]; then
        return 0
    fi
    if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
        warn "not a Debian system (no dpkg-query/apt-get); install these yourself: ${PACKAGES[*]}"
        return 0
    fi
    local missing=() p status
    for p in "${PACKAGES[@]}"; do
        status="$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)"
        if [ "$status" != "install ok installed" ]; then
            missing+=("$p")
        fi
    done
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        missing+=("${NODE_PACKAGES[@]}")
    fi
    if [ "${#missing[@]}" -eq 0 ]; then
        return 0
    fi
    say "installing ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# Print "<compiler> <werror> <b_sanitize> <b_lundef>" of a configured build
# dir (compiler "gcc" or "clang"), or nothing if it cannot be read.
build_state() {
    "$PY" - "$1" <<'EOF' 2>/dev/null || true
import json, os, re, sys
d = sys.argv[1]
opts = {o["name"]: o["value"]
        for o in json.load(open(os.path.join(d, "meson-info", "intro-buildoptions.json")))}
cc = None
# meson 1.0 has no compiler introspection file; the compiler of any C
# target says it, and build.ninja's compile rule is the fallback.
try:
    for t in json.load(open(os.path.join(d, "meson-info", "intro-targets.json"))):
        for src in t.get("target_sources", []):
            if src.get("language") == "c" and src.get("compiler"):
                cc = src["compiler"][0]
                break
        if cc:
            break
except (OSError, ValueError):
    pass
if cc is None:
    m = re.search(r"^rule c_COMPILER\n command = (\S+)",
                  open(os.path.join(d, "build.ninja")).read(), re.M)
    cc = m.group(1) if m else "?"
cc = os.path.basename(cc)
cc = "clang" if "clang" in cc else "gcc" if ("gcc" in cc or cc == "cc") else cc
san = opts.get("b_sanitize", "none")
if isinstance(san, list):
    san = ",".join(san) or "none"
print(cc, str(opts.get("werror")).lower(), san, str(opts.get("b_lundef")).lower(),
      str(opts.get("b_coverage")).lower())
EOF
}

# setup_build NAME COMPILER MESON_OPTS...: create or reconfigure a build dir
# so that it has exactly these options and compiler.
setup_build() {
    local dir="$1" compiler="$2"
    shift 2
    local want_werror=false want_san=none want_lundef=true want_cov=false o
    for o in "$@"; do
        case "$o" in
            --werror) want_werror=true ;;
            -Db_sanitize=*) want_san="${o#-Db_sanitize=}" ;;
            -Db_lundef=*) want_lundef="${o#-Db_lundef=}" ;;
            -Db_coverage=*) want_cov="${o#-Db_coverage=}" ;;
        esac
    done
    local want="$compiler $want_werror $want_san $want_lundef $want_cov"

    if [ ! -f "$dir/build.ninja" ] || [ ! -f "$dir/meson-private/coredata.dat" ]; then
        if [ -d "$dir" ]; then
            say "$dir: incomplete build dir, wiping"
            CC="$compiler" meson setup --wipe "$dir" "$@" || return 1
        else
            say "$dir: meson setup ($compiler)"
            CC="$compiler" meson setup "$dir" "$@" || return 1
        fi
        return 0
    fi
    local have
    have="$(build_state "$dir")"
    if [ "${have%% *}" != "$compiler" ]; then
        # The compiler is fixed at first setup; only a wipe changes it.
        say "$dir: was set up with '${have%% *}', re-creating with $compiler"
        CC="$compiler" meson setup --wipe "$dir" "$@" || return 1
    elif [ "$have" != "$want" ]; then
        say "$dir: reconfiguring ($have -> $want)"
        CC="$compiler" meson setup --reconfigure "$dir" "$@" || return 1
        # meson 1.0 (Debian 12) ignores base options such as b_coverage on
        # --reconfigure: set every option we compare explicitly
        meson configure "$dir" -Dwerror="$want_werror" \
            -Db_sanitize="$want_san" -Db_lundef="$want_lundef" \
            -Db_coverage="$want_cov" >/dev/null || return 1
    fi
    return 0
}

# Print host, port, password of the redis URL in a config file, one per
# line (password line empty when none). Unix socket URLs print "unix PATH".
redis_target() {
    "$PY" - "$1" <<'EOF'
import json, sys
from urllib.parse import urlsplit, unquote
try:
    with open(sys.argv[1]) as f:
        conf = json.load(f)
    url = (conf.get("redis") or {}).get("url") or "redis://127.0.0.1:6379"
except (OSError, ValueError) as e:
    sys.exit("cannot read %s: %s" % (sys.argv[1], e))
u = urlsplit(url)
# Like redis-cli (and herald), "redis://word@host" takes word as the password.
pw = u.password if u.password is not None else (u.username or "")
if u.scheme == "unix":
    print("unix"); print(u.path); print(unquote(pw))
else:
    print(u.hostname or "127.0.0.1"); print(u.port or 6379); print(unquote(pw))
EOF
}

redis_ping() { # host port password
    local host="$1" port="$2" pass="$3" args=()
    if [ "$host" = unix ]; then
        args=(-s "$port")
    else
        args=(-h "$host" -p "$port")
    fi
    if [ -n "$pass" ]; then
        args+=(-a "$pass" --no-auth-warning)
    fi
    [ "$(timeout 3 redis-cli "${args[@]}" ping 2>/dev/null || true)" = PONG ]
}

# Start a throw-away redis-server on loopback unless something answers at
# the config's redis URL already.
ensure_redis() {
    local conf="$1" target host port pass
    target="$(redis_target "$conf")" || die "cannot read the redis URL from $conf"
    { read -r host; read -r port; IFS= read -r pass || true; } <<<"$target"
    if redis_ping "$host" "$port" "$pass"; then
        say "redis answers at $host:$port"
        return 0
    fi
    local args=(--save '' --appendonly no --daemonize yes)
    case "$host" in
        unix) args+=(--port 0 --unixsocket "$port") ;;
        localhost) args+=(--port "$port" --bind 127.0.0.1) ;;
        127.*|::1) args+=(--port "$port" --bind "$host") ;;
        *) die "nothing answers at redis $host:$port and it is not loopback; start Redis there or edit $conf" ;;
    esac
    if [ -n "$pass" ]; then
        args+=(--requirepass "$pass")
    fi
    local dir="$ROOT/.run/redis"
    mkdir -p "$dir"
    say "starting redis-server on $host:$port (data in .run/redis, no persistence)"
    redis-server "${args[@]}" --dir "$dir" --pidfile "$dir/redis.pid" \
        --logfile "$dir/redis.log" >/dev/null
    local tries=50
    while [ "$tries" -gt 0 ]; do
        redis_ping "$host" "$port" "$pass" && return 0
        sleep 0.2
        tries=$((tries - 1))
    done
    die "redis-server did not answer within 10 s; see .run/redis/redis.log"
}

cmd_run() {
    local conf="${HERALD_CONF:-conf/herald.json}"
    [ -f "$conf" ] || die "no config file $conf"
    install_packages
    if [ -f build/build.ninja ]; then
        : # keep whatever options the user set up build/ with
    else
        setup_build "${BUILD_NORMAL[@]}"
    fi
    meson compile -C build
    ensure_redis "$conf"
    # --dev: the shipped conf/herald.json carries development secrets,
    # which herald refuses outside development mode
    say "exec build/master/herald --dev -c $conf"
    exec build/master/herald --dev -c "$conf"
}

RESULTS=()
FAILED=0

record() { # build suite status
    RESULTS+=("$(printf '%-11s %-12s %s' "$1" "$2" "$3")")
    if [ "$3" != PASS ]; then
        FAILED=1
    fi
}

# failed_tests DIR: the names of the tests meson's last run in DIR did not
# pass, for the summary (the summary is what a CI page shows first)
failed_tests() {
    "$PY" - "$1/meson-logs/testlog.json" <<'PYEOF' 2>/dev/null || echo "see the log"
import json, sys
bad = []
for line in open(sys.argv[1]):
    t = json.loads(line)
    if t.get("result") not in ("OK", "SKIP", "EXPECTEDFAIL"):
        bad.append("%s: %s" % (t.get("name", "?"), t.get("result", "?")))
print(", ".join(bad) or "see the log")
PYEOF
}

# test_build NAME COMPILER MESON_OPTS...: build one dir and run both suites.
test_build() {
    local dir="$1" env=()
    if [ "$dir" = build-asan ]; then
        env=("${ASAN_ENV[@]}")
    fi

    say "[$dir] configure and compile"
    if ! (setup_build "$@" && meson compile -C "$dir"); then
        record "$dir" compile FAIL
        record "$dir" unit "SKIP (no build)"
        record "$dir" integration "SKIP (no build)"
        return 0
    fi
    record "$dir" compile PASS

    if [ "$dir" = build ]; then
        # house style (.clang-format): unformatted code fails the run;
        # `ninja -C build clang-format` fixes it
        say "[$dir] format check"
        if ninja -C "$dir" clang-format-check >/dev/null 2>&1; then
            record "$dir" format PASS
        else
            ninja -C "$dir" clang-format-check 2>&1 | grep -E '^(---|\+\+\+)' | head -20 || true
            record "$dir" format "FAIL (run: ninja -C build clang-format)"
        fi
    fi

    if [ "$dir" = build ]; then
        # line coverage counts this run only (see coverage_summary)
        find "$dir" -name '*.gcda' -delete
    fi

    say "[$dir] unit tests"
    if env "${env[@]}" meson test -C "$dir" --suite unit --print-errorlogs; then
        record "$dir" unit PASS
    else
        record "$dir" unit "FAIL ($(failed_tests "$dir"))"
    fi

    if [ "$dir" = build ]; then
        # the load generator at a tiny size: counts (nothing missing or
        # duplicated), not speed; once, in the normal build
        say "[$dir] benchmark smoke"
        if meson test -C "$dir" --suite bench-smoke --print-errorlogs; then
            record "$dir" bench-smoke PASS
        else
            record "$dir" bench-smoke FAIL
        fi
    fi

    say "[$dir] integration tests"
    local rc=0
    env "${env[@]}" HERALD_BIN="$ROOT/$dir/master/herald" PYTHONDONTWRITEBYTECODE=1 \
        "$PY" -m pytest -q -p no:cacheprovider tests/integration || rc=$?
    case "$rc" in
        0) record "$dir" integration PASS ;;
        5) record "$dir" integration "FAIL (no tests collected)" ;;
        *) record "$dir" integration "FAIL (pytest exit $rc)" ;;
    esac

    if [ "$dir" = build ]; then
        coverage_summary "$dir"
    fi
}

# Line coverage of the unit and integration suites (the gcc build has
# -Db_coverage=true; every herald process writes its counts when it exits),
# per source folder, for the summary. Informational: it fails nothing.
COVERAGE=()
coverage_summary() {
    local dir="$1" json="$1/meson-logs/coverage-summary.json" line
    say "[$dir] line coverage (gcovr)"
    if ! gcovr -r "$ROOT" --object-directory "$ROOT/$dir" \
            --filter "$ROOT/common/" --filter "$ROOT/conf/" \
            --filter "$ROOT/shm/" --filter "$ROOT/worker/" \
            --filter "$ROOT/master/" --json-summary "$ROOT/$json" \
            --gcov-ignore-parse-errors -j 2 "$ROOT/$dir" >/dev/null 2>&1; then
        COVERAGE+=("(gcovr failed; by hand: gcovr -r . build)")
        return 0
    fi
    while IFS= read -r line; do
        COVERAGE+=("$line")
    done < <("$PY" "$ROOT/deploy/coverage_folders.py" "$ROOT/$json")
}

# The JavaScript SDK (clients/js), once, against the normal build's binary:
# npm ci from the committed lockfile, unit tests (fake transport and
# clock), the TypeScript declarations (tsc --noEmit on a typed example),
# integration tests against the real herald and redis-server, and the
# same recovery in a real headless Chromium.
test_js() {
    local js="$ROOT/clients/js" bin="$ROOT/build/master/herald" rc
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        record clients/js npm-ci "FAIL (no node/npm)"
        return 0
    fi
    say "[clients/js] npm ci (node $(node --version))"
    if ! (cd "$js" && npm ci --no-audit --no-fund --loglevel=error); then
        record clients/js npm-ci FAIL
        return 0
    fi
    record clients/js npm-ci PASS

    say "[clients/js] unit tests"
    if (cd "$js" && node --test test/unit/*.test.js); then
        record clients/js unit PASS
    else
        record clients/js unit FAIL
    fi

    say "[clients/js] type check"
    if (cd "$js" && node node_modules/typescript/bin/tsc --noEmit -p .); then
        record clients/js types PASS
    else
        record clients/js types FAIL
    fi

    if [ ! -x "$bin" ]; then
        record clients/js integration "SKIP (no build)"
        record clients/js chromium "SKIP (no build)"
        return 0
    fi
    # bounded: a test that leaves a handle open would keep node running
    say "[clients/js] integration tests"
    rc=0
    (cd "$js" && HERALD_BIN="$bin" timeout -k 10 600 node --test test/integration/*.test.js) || rc=$?
    if [ "$rc" -eq 0 ]; then
        record clients/js integration PASS
    else
        record clients/js integration "FAIL (node --test exit $rc)"
    fi

    say "[clients/js] headless Chromium"
    rc=0
    (cd "$js" && HERALD_BIN="$bin" timeout -k 10 300 node --test test/browser/*.test.js) || rc=$?
    if [ "$rc" -eq 0 ]; then
        record clients/js chromium PASS
    else
        record clients/js chromium "FAIL (node --test exit $rc)"
    fi
}

cmd_test() {
    install_packages
    local start=$SECONDS
    test_build "${BUILD_NORMAL[@]}"
    test_js
    test_build "${BUILD_ASAN[@]}"

    printf '\n==================== herald test summary ====================\n'
    printf '%-11s %-12s %s\n' BUILD SUITE RESULT
    local r
    for r in "${RESULTS[@]}"; do
        printf '%s\n' "$r"
    done
    if [ "${#COVERAGE[@]}" -gt 0 ]; then
        printf -- '-------------------------------------------------------------\n'
        printf 'line coverage, unit + integration suites (build/, gcovr):\n'
        for r in "${COVERAGE[@]}"; do
            printf '  %s\n' "$r"
        done
    fi
    printf -- '-------------------------------------------------------------\n'
    if [ "$FAILED" -eq 0 ]; then
        printf 'ALL PASSED in %ds\n' $((SECONDS - start))
    else
        printf 'FAILED (%ds); see the output above\n' $((SECONDS - start))
    fi
    return "$FAILED"
}

case "${1:-}" in
    run)  cmd_run ;;
    test) cmd_test ;;
    -h|--help|help) usage ;;
    *) usage >&2; exit 2 ;;
esac
