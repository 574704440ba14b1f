#!/usr/bin/env bash
# `make run`: demo profile on SQLite, a local SMTP sink writing to var/mail/, the API on :8000.
# `ROAMSIGN_KEY_STORE=pkcs11 make run`: the same demo with its keys in a SoftHSM2 token that this
# script makes under var/softhsm/ (random PINs in files there); keys a software demo made before
# are moved into it first (`python -m app keys migrate --to pkcs11`, a no-op once done).
set -euo pipefail
cd "$(dirname "$0")/.."
export ROAMSIGN_PROFILE=demo
export ROAMSIGN_VAR_DIR="${ROAMSIGN_VAR_DIR:-var}"
export ROAMSIGN_SMTP_HOST=127.0.0.1
export ROAMSIGN_SMTP_PORT="${ROAMSIGN_SMTP_PORT:-8025}"
export ROAMSIGN_LOG_JSON="${ROAMSIGN_LOG_JSON:-false}"
mkdir -p "$ROAMSIGN_VAR_DIR/mail"

if [[ "${ROAMSIGN_KEY_STORE:-software}" == "pkcs11" ]]; then
    bash scripts/ensure-softhsm.sh
    hsm="$ROAMSIGN_VAR_DIR/softhsm"
    mkdir -p "$hsm" && chmod 700 "$hsm"
    for pin in so.pin user.pin; do
        [[ -s "$hsm/$pin" ]] || (umask 077 && od -An -N8 -tx8 /dev/urandom | tr -d ' \n' > "$hsm/$pin")
    done
    export ROAMSIGN_PKCS11_TOKEN_LABEL="${ROAMSIGN_PKCS11_TOKEN_LABEL:-roamsign-demo}"
    conf=$(bash scripts/softhsm-token.sh "$hsm" "$ROAMSIGN_PKCS11_TOKEN_LABEL" "$hsm/so.pin" "$hsm/user.pin")
    export "$conf"
    export ROAMSIGN_PKCS11_PIN_FILE="$hsm/user.pin"
    if [[ -f "$ROAMSIGN_VAR_DIR/roamsign.db" ]]; then
        .venv/bin/python -m app db upgrade >/dev/null
        .venv/bin/python -m app keys migrate --to pkcs11
    else
        .venv/bin/python -m app keys init
    fi
fi

.venv/bin/python -m app demo
.venv/bin/python -m app.services.mail.sink --dir "$ROAMSIGN_VAR_DIR/mail" --port "$ROAMSIGN_SMTP_PORT" &
sink=$!
trap 'kill $sink 2>/dev/null || true' EXIT INT TERM

cat <<MSG

roamsign demo is starting on http://127.0.0.1:8000 (key store: ${ROAMSIGN_KEY_STORE:-software})
  API keys and the demo person:  $ROAMSIGN_VAR_DIR/demo.env   (source it: set -a; . $ROAMSIGN_VAR_DIR/demo.env; set +a)
  e-mail sent by the service:    $ROAMSIGN_VAR_DIR/mail/*.eml
  walk-through:                  README.md, "Walk-through"
  API documentation:             http://127.0.0.1:8000/docs
  administrators' console:       http://127.0.0.1:8000/console/  (DEMO_ADMIN_MYKAD and DEMO_ADMIN_PIN in demo.env; its OTP in the newest mail/*.eml)

MSG
.venv/bin/python -m app serve --host 127.0.0.1 --port 8000
