# Shared by scripts/install-*.sh (sourced, POSIX sh): root or sudo, and an
# apt-get install that waits for the dpkg lock (another install may be running)
# and refreshes a stale package index once.

# apt_prepare NAME HINT: set SUDO, or exit naming NAME with HINT when apt-get
# is missing or neither root nor sudo is available.
apt_prepare() {
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "$1: apt-get is unavailable; $2" >&2
        exit 1
    fi
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            SUDO="sudo"
        else
            echo "$1: need root (or sudo) to install Debian packages" >&2
            exit 1
        fi
    fi
}

# apt_install PACKAGE...: install without recommends.
apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-cache show "$1" >/dev/null 2>&1; then
        $SUDO apt-get -o DPkg::Lock::Timeout=600 update -q
    fi
    if ! $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 \
            install -y -q --no-install-recommends "$@"; then
        # A stale package index gives 404s; refresh once and retry.
        $SUDO apt-get -o DPkg::Lock::Timeout=600 update -q
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 \
            install -y -q --no-install-recommends "$@"
    fi
}
