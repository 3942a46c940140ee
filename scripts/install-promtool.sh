#!/bin/sh
# Make `promtool` available for the test suite (tests/test_prometheus_rules.py).
#
# Idempotent: exits at once when promtool is already on PATH. Otherwise installs
# Debian's `prometheus` package (which ships promtool) without recommends and
# without starting the Prometheus server that package contains: only the
# promtool binary is wanted, and a stray server would hold port 9090.
set -eu

if command -v promtool >/dev/null 2>&1; then
    exit 0
fi

. "$(dirname "$0")/apt-lib.sh"
apt_prepare install-promtool \
    "install Prometheus' promtool (https://prometheus.io/download/) and retry"

POLICY=/usr/sbin/policy-rc.d
OWN_POLICY=""
# The package's postinst runs `invoke-rc.d prometheus start` on non-systemd
# hosts (containers). A policy-rc.d answering 101 ("action forbidden") is
# Debian's documented way to keep maintainer scripts from starting daemons;
# install one only for the duration of this script if none exists.
cleanup() {
    if [ -n "$OWN_POLICY" ]; then
        $SUDO rm -f "$POLICY"
    fi
}
trap cleanup EXIT INT TERM
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
    $SUDO chmod 0755 "$POLICY"
    OWN_POLICY=1
fi

# Was a server already running before we started? Then it is not ours to stop.
PIDFILE=/run/prometheus/prometheus.pid
WAS_RUNNING=""
if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    WAS_RUNNING=1
fi

apt_install prometheus

# Belt and braces: if a server got started anyway (e.g. systemd host without
# policy-rc.d honoured), stop and disable it.
if [ -z "$WAS_RUNNING" ]; then
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
        $SUDO systemctl disable --now prometheus.service >/dev/null 2>&1 || true
    elif [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
        $SUDO /etc/init.d/prometheus stop || true
    fi
fi

command -v promtool >/dev/null 2>&1 || {
    echo "install-promtool: prometheus installed but promtool is not on PATH" >&2
    exit 1
}
promtool --version 2>&1 | head -n 1
