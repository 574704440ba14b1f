#!/usr/bin/env bash
# Create a SoftHSM2 token in a directory of its own: softhsm-token.sh DIR LABEL SO_PIN_FILE PIN_FILE
# Writes DIR/softhsm2.conf (tokens under DIR/tokens) and prints the SOFTHSM2_CONF line to export.
# PINs are read from files so that they never appear in a process listing.
set -euo pipefail

if [[ $# -ne 4 ]]; then
    echo "usage: $0 DIR LABEL SO_PIN_FILE PIN_FILE" >&2
    exit 2
fi
dir=$(realpath -m "$1")
label=$2
so_pin=$(head -n 1 "$3")
pin=$(head -n 1 "$4")

mkdir -p "$dir/tokens"
chmod 700 "$dir" "$dir/tokens"
cat > "$dir/softhsm2.conf" <<CONF
directories.tokendir = $dir/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
CONF
export SOFTHSM2_CONF="$dir/softhsm2.conf"

# Idempotent: a token with this label already in DIR is kept as it is.
if softhsm2-util --show-slots 2>/dev/null | grep -Eq "^[[:space:]]*Label:[[:space:]]+${label}[[:space:]]*$"; then
    echo "SOFTHSM2_CONF=$SOFTHSM2_CONF"
    exit 0
fi
# softhsm2-util takes PINs only as arguments; the token directory is private to this user.
softhsm2-util --init-token --free --label "$label" --so-pin "$so_pin" --pin "$pin" >/dev/null
echo "SOFTHSM2_CONF=$SOFTHSM2_CONF"
