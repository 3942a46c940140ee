#!/bin/sh
# Make Debian's `strace` available for tests/test_etcd_harness.py, which slows
# etcd's log writes to prove that the harness keeps what a killed member answered.
#
# Idempotent: exits at once when strace is already on PATH.
set -eu

if command -v strace >/dev/null 2>&1; then
    exit 0
fi

. "$(dirname "$0")/apt-lib.sh"
apt_prepare install-strace "install strace and retry"
apt_install strace

strace -V | head -n 1
