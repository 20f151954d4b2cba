#!/bin/sh
# Build a Debian package of herald from this tree:
#
#   deploy/package.sh [OUTDIR]      (default: build-pkg/)
#
# It configures a release build with prefix /usr, runs `meson install
# --destdir` into a staging root, and assembles OUTDIR/herald_VERSION_ARCH.deb
# from it with dpkg-deb. Needs meson, a C compiler, the -dev packages of
# deploy/dev.sh, and dpkg-dev (dpkg-shlibdeps). What the package does:
#
# - /usr/bin/herald; the unit in /usr/lib/systemd/system (installed, not
#   enabled or started); the user from /usr/lib/sysusers.d/herald.conf,
#   created in postinst (systemd-sysusers, or adduser without systemd);
#   the docs in /usr/share/doc/herald; /etc/logrotate.d/herald.
# - /etc/herald/herald.json is a conffile: the sample configuration, with
#   its development secrets replaced by auth.hmac_secret_file and
#   api.key_file. postinst writes random secrets to those files when they
#   do not exist (root:herald, 0640), so `herald -t` passes and the
#   service can start as installed; dpkg keeps an edited herald.json on
#   upgrades (asking, as for any conffile).
# - Depends: from the binary's shared libraries (dpkg-shlibdeps), plus
#   libwebsockets-evlib-ev, the libev plugin libwebsockets loads at run
#   time (no DT_NEEDED entry names it).
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/build-pkg}
mkdir -p "$out"
out=$(cd "$out" && pwd)
bld=$out/build
stage=$out/stage

if [ ! -f "$bld/build.ninja" ]; then
    meson setup "$bld" "$root" --prefix=/usr --sysconfdir=/etc \
        --buildtype=release -Dtests=false
fi
meson compile -C "$bld"
rm -rf "$stage"
meson install -C "$bld" --destdir "$stage" --quiet

version=$(meson introspect --projectinfo "$bld" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["version"])')
arch=$(dpkg --print-architecture)

# the conffile: the sample with its secrets in files
python3 - "$stage/etc/herald/herald.json.example" "$stage/etc/herald/herald.json" <<'PY'
import json, sys
conf = json.load(open(sys.argv[1]))
auth, api = conf.setdefault("auth", {}), conf.setdefault("api", {})
auth.pop("hmac_secret", None)
auth["hmac_secret_file"] = "/etc/herald/hmac_secret"
api.pop("key", None)
api["key_file"] = "/etc/herald/api_key"
with open(sys.argv[2], "w") as f:
    json.dump(conf, f, indent=4)
    f.write("\n")
PY
rm "$stage/etc/herald/herald.json.example"

mkdir -p "$stage/DEBIAN"
# dpkg-shlibdeps wants a debian/control next to where it runs
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/debian"
printf 'Source: herald\n\nPackage: herald\nArchitecture: any\n' >"$tmp/debian/control"
depends=$(cd "$tmp" && dpkg-shlibdeps -O -e"$stage/usr/bin/herald" 2>/dev/null \
    | sed -n 's/^shlibs:Depends=//p')
[ -n "$depends" ] || { echo "package.sh: dpkg-shlibdeps found nothing" >&2; exit 1; }
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)

cat >"$stage/DEBIAN/control" <<CTL
Package: herald
Version: $version
Architecture: $arch
Maintainer: herald maintainers <herald@localhost>
Installed-Size: $size
Depends: $depends, libwebsockets-evlib-ev, adduser | systemd
Recommends: redis-server
Section: net
Priority: optional
Description: WebSocket pub/sub gateway
 herald holds client WebSocket connections and delivers publications
 from Redis pub/sub to them: master and worker processes, JWT auth,
 history and recovery, an HTTP publish API, Prometheus metrics.
CTL

cat >"$stage/DEBIAN/conffiles" <<'CF'
/etc/herald/herald.json
/etc/logrotate.d/herald
CF

cat >"$stage/DEBIAN/postinst" <<'SH'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
    if command -v systemd-sysusers >/dev/null 2>&1; then
        systemd-sysusers herald.conf
    elif ! getent passwd herald >/dev/null; then
        adduser --system --group --no-create-home --home /nonexistent \
            --shell /usr/sbin/nologin herald
    fi
    getent group herald >/dev/null || addgroup --system herald
    for f in /etc/herald/hmac_secret /etc/herald/api_key; do
        if [ ! -e "$f" ]; then
            (umask 027; head -c 48 /dev/urandom | base64 -w0 >"$f")
        fi
        chown root:herald "$f"
        chmod 0640 "$f"
    done
    chown root:herald /etc/herald/herald.json
    chmod 0640 /etc/herald/herald.json
    # installed, not enabled or started: configure it first
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload >/dev/null 2>&1 || true
    fi
fi
exit 0
SH

cat >"$stage/DEBIAN/prerm" <<'SH'
#!/bin/sh
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
    systemctl stop herald.service >/dev/null 2>&1 || true
fi
exit 0
SH

cat >"$stage/DEBIAN/postrm" <<'SH'
#!/bin/sh
set -e
if [ "$1" = purge ]; then
    # the secrets postinst made; the user stays (files may still own it)
    rm -f /etc/herald/hmac_secret /etc/herald/api_key
    rmdir /etc/herald 2>/dev/null || true
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || true
fi
exit 0
SH
chmod 0755 "$stage/DEBIAN/postinst" "$stage/DEBIAN/prerm" "$stage/DEBIAN/postrm"

deb=$out/herald_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "$deb"
