#!/usr/bin/env bash
# Make sure Debian's Chromium (and its driver) are installed for tests/browser, which drive it
# with Playwright through `executable_path` (never `playwright install`: that downloads a
# browser build of its own). Idempotent and silent when they are already there.
set -euo pipefail

have_browser() {
    command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1
}

if have_browser; then
    exit 0
fi

fail() {
    echo "ensure-chromium: $*" >&2
    echo "ensure-chromium: install Chromium yourself (Debian: apt-get install chromium" \
        "chromium-driver), or set ROAMSIGN_CHROMIUM to a Chromium binary" >&2
    exit 1
}

if [[ -n "${ROAMSIGN_CHROMIUM:-}" && -x "${ROAMSIGN_CHROMIUM}" ]]; then
    exit 0
fi

command -v apt-get >/dev/null 2>&1 || fail "Chromium not found and apt-get is not available"

if [[ "$(id -u)" -eq 0 ]]; then
    sudo=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
else
    fail "Chromium not found; installing it needs root (or password-less sudo)"
fi

echo "ensure-chromium: installing Chromium (apt-get install chromium chromium-driver)..." >&2
if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null; then
    fail "apt-get update failed"
fi
if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    chromium chromium-driver fonts-dejavu-core >/dev/null; then
    fail "apt-get install chromium chromium-driver failed"
fi

have_browser || fail "apt-get installed chromium, but no chromium binary appeared on PATH"
echo "ensure-chromium: installed $(chromium --version 2>/dev/null || echo chromium)" >&2
