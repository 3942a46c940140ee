#!/bin/sh
# Make Debian's `chromium` available for the console's browser tests
# (tests/test_console_browser.py drives it through Playwright for Python,
# pointed at the system binary: no browser is ever downloaded).
#
# Idempotent: exits at once when the binary is already there.
set -eu

CHROMIUM=${SCHEMACACHE_CHROMIUM:-/usr/bin/chromium}

if [ -x "$CHROMIUM" ]; then
    exit 0
fi

. "$(dirname "$0")/apt-lib.sh"
apt_prepare install-chromium \
    "install Chromium and set SCHEMACACHE_CHROMIUM to its path"
apt_install chromium

"$CHROMIUM" --version
