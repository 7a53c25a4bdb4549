#!/usr/bin/env bash
# CI: the headless browser that tests/browser drives (Debian packages chromium and
# chromium-driver), installed only when missing, so running it twice is cheap. The browser test
# uses Python Playwright (assay[test]) with this system Chromium; it never downloads a browser
# (no `playwright install`). Usage: bash .ci/browser-deps.sh   (prints the Chromium version)
set -euo pipefail

log() { echo "browser-deps: $*" >&2; }

if [[ -x /usr/bin/chromium ]] && command -v chromedriver >/dev/null 2>&1; then
    /usr/bin/chromium --version
    exit 0
fi
command -v apt-get >/dev/null || { log "apt-get is not available: install chromium and chromium-driver"; exit 3; }
sudo=()
if [[ $(id -u) != 0 ]]; then
    if ! command -v sudo >/dev/null || ! sudo -n true 2>/dev/null; then
        log "installing chromium needs root (or password-less sudo)"
        exit 3
    fi
    sudo=(sudo -n)
fi
install=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q
    --no-install-recommends -o Dpkg::Options::=--force-confdef
    -o Dpkg::Options::=--force-confold chromium chromium-driver fonts-dejavu-core)
apt_log=$(mktemp -t assay-browser-apt.XXXXXX)
log "installing chromium chromium-driver with apt-get (log: $apt_log)"
if ! "${install[@]}" >"$apt_log" 2>&1; then
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >>"$apt_log" 2>&1 \
        || { log "apt-get update failed (see $apt_log)"; exit 3; }
    "${install[@]}" >>"$apt_log" 2>&1 \
        || { log "apt-get install chromium chromium-driver failed (see $apt_log)"; exit 3; }
fi
/usr/bin/chromium --version
