#!/usr/bin/env bash
# `make run`: demo profile on SQLite, a local SMTP sink writing to var/mail/, the API on :8000.
set -euo pipefail
cd "$(dirname "$0")/.."
export ROAMSIGN_PROFILE=demo
export ROAMSIGN_VAR_DIR="${ROAMSIGN_VAR_DIR:-var}"
export ROAMSIGN_SMTP_HOST=127.0.0.1
export ROAMSIGN_SMTP_PORT="${ROAMSIGN_SMTP_PORT:-8025}"
export ROAMSIGN_LOG_JSON="${ROAMSIGN_LOG_JSON:-false}"
mkdir -p "$ROAMSIGN_VAR_DIR/mail"

.venv/bin/python -m app demo
.venv/bin/python -m app.services.mail.sink --dir "$ROAMSIGN_VAR_DIR/mail" --port "$ROAMSIGN_SMTP_PORT" &
sink=$!
trap 'kill $sink 2>/dev/null || true' EXIT INT TERM

cat <<MSG

roamsign demo is starting on http://127.0.0.1:8000
  API keys and the demo person:  $ROAMSIGN_VAR_DIR/demo.env   (source it: set -a; . $ROAMSIGN_VAR_DIR/demo.env; set +a)
  e-mail sent by the service:    $ROAMSIGN_VAR_DIR/mail/*.eml
  walk-through:                  README.md, "Walk-through"
  API documentation:             http://127.0.0.1:8000/docs

MSG
.venv/bin/python -m app serve --host 127.0.0.1 --port 8000
