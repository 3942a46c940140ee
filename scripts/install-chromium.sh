#!/bin/sh
# Make Debian's `chromium` available for the console's browser tests
# (tests/test_console_browser.py drives it through Playwright for Python,
# pointed at the system binary: no browser is ever downloaded).
#
# Idempotent: exits at once when the binary is already there. Waits for the
# dpkg lock (another install may be running) instead of failing.
set -eu

CHROMIUM=${SCHEMACACHE_CHROMIUM:-/usr/bin/chromium}

if [ -x "$CHROMIUM" ]; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-chromium: $CHROMIUM not found and apt-get is unavailable;" \
         "install Chromium and set SCHEMACACHE_CHROMIUM to its path" >&2
    exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install-chromium: need root (or sudo) to install the chromium package" >&2
        exit 1
    fi
fi

APT="apt-get -o DPkg::Lock::Timeout=600 -y -q --no-install-recommends"
export DEBIAN_FRONTEND=noninteractive
if ! apt-cache show chromium >/dev/null 2>&1; then
    $SUDO apt-get -o DPkg::Lock::Timeout=600 update -q
fi
if ! $SUDO env DEBIAN_FRONTEND=noninteractive $APT install chromium; then
    # A stale package index gives 404s; refresh once and retry.
    $SUDO apt-get -o DPkg::Lock::Timeout=600 update -q
    $SUDO env DEBIAN_FRONTEND=noninteractive $APT install chromium
fi

"$CHROMIUM" --version
