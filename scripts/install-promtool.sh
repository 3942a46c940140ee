#!/bin/sh
# Make `promtool`, `prometheus` and `prometheus-alertmanager` available for the
# test suite (tests/test_prometheus_rules.py, tests/test_observability_real.py).
#
# Idempotent: exits at once when all three are already on PATH. Otherwise
# installs Debian's `prometheus` (server and promtool) and
# `prometheus-alertmanager` packages without recommends and without starting
# the daemons they contain: the tests start their own on free loopback ports,
# and stray servers would hold ports 9090 and 9093.
set -eu

PACKAGES="prometheus prometheus-alertmanager"
TOOLS="promtool prometheus prometheus-alertmanager"

missing() {
    for tool in $TOOLS; do
        command -v "$tool" >/dev/null 2>&1 || return 0
    done
    return 1
}

if ! missing; then
    exit 0
fi

. "$(dirname "$0")/apt-lib.sh"
apt_prepare install-promtool \
    "install Prometheus and Alertmanager (https://prometheus.io/download/) and retry"

POLICY=/usr/sbin/policy-rc.d
OWN_POLICY=""
# The packages' postinst run `invoke-rc.d … start` on non-systemd hosts
# (containers). A policy-rc.d answering 101 ("action forbidden") is Debian's
# documented way to keep maintainer scripts from starting daemons; install one
# only for the duration of this script if none exists.
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

# Was a daemon already running before we started? Then it is not ours to stop.
running() {
    pidfile="/run/prometheus/$1.pid"
    [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}
WAS_RUNNING=""
for daemon in prometheus prometheus-alertmanager; do
    if running "$daemon"; then
        WAS_RUNNING="$WAS_RUNNING $daemon"
    fi
done

# shellcheck disable=SC2086 # PACKAGES is a word list
apt_install $PACKAGES

# Belt and braces: if a daemon got started anyway (e.g. systemd host without
# policy-rc.d honoured), stop and disable it.
for daemon in prometheus prometheus-alertmanager; do
    case " $WAS_RUNNING " in *" $daemon "*) continue ;; esac
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
        $SUDO systemctl disable --now "$daemon.service" >/dev/null 2>&1 || true
    elif running "$daemon"; then
        $SUDO "/etc/init.d/$daemon" stop || true
    fi
done

if missing; then
    echo "install-promtool: $PACKAGES installed but one of $TOOLS is not on PATH" >&2
    exit 1
fi
promtool --version 2>&1 | head -n 1
prometheus-alertmanager --version 2>&1 | head -n 1
