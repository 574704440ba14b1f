#!/usr/bin/env bash
# Make sure SoftHSM2 (the PKCS#11 module and softhsm2-util) is installed for the pkcs11 key store.
# Idempotent and silent when it is already there; installs Debian's `softhsm2` otherwise.
set -euo pipefail

MODULE_PATHS=(
    /usr/lib/softhsm/libsofthsm2.so
    /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so
    /usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so
)

have_softhsm() {
    command -v softhsm2-util >/dev/null 2>&1 || return 1
    local path
    for path in "${MODULE_PATHS[@]}"; do
        [[ -e "$path" ]] && return 0
    done
    return 1
}

if have_softhsm; then
    exit 0
fi

fail() {
    echo "ensure-softhsm: $*" >&2
    echo "ensure-softhsm: install SoftHSM2 yourself (Debian: apt-get install softhsm2)" >&2
    exit 1
}

command -v apt-get >/dev/null 2>&1 || fail "SoftHSM2 not found and apt-get is not available"

if [[ "$(id -u)" -eq 0 ]]; then
    sudo=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
else
    fail "SoftHSM2 not found; installing it needs root (or password-less sudo)"
fi

echo "ensure-softhsm: installing SoftHSM2 (apt-get install softhsm2)..." >&2
# A fresh image has empty package lists; install first and update only when that fails, so a
# machine whose lists are current does not pay for an update.
install() {
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        softhsm2 >/dev/null 2>&1
}
if ! install; then
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null \
        || fail "apt-get update failed"
    install || fail "apt-get install softhsm2 failed"
fi

have_softhsm || fail "apt-get installed softhsm2, but no libsofthsm2.so appeared"
echo "ensure-softhsm: installed $(softhsm2-util --version)" >&2
