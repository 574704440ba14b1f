#!/usr/bin/env bash
# Vendor the front-end files roamsign serves itself (never a CDN at run time) into
# app/static/vendor/ (gitignored): Swagger UI for /docs, from the npm registry's
# swagger-ui-dist, pinned by version and by the tarball's integrity hash.
# Idempotent: nothing to do once the pinned version is in place.
set -euo pipefail

SWAGGER_UI_VERSION=5.35.0
SWAGGER_UI_INTEGRITY="sha512-U06rpMtW9V3XPGOBeamTUSr0Z09jMX4IJuANpE/EZbAhw0G8CgwrzU4YmXkn/h0wCDNsXdGarTNNHC3sU8yVUQ=="

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="$root/app/static/vendor/swagger-ui"
stamp="$target/.version"

if [[ -f "$stamp" && "$(cat "$stamp")" == "$SWAGGER_UI_VERSION" ]]; then
    exit 0
fi

command -v npm >/dev/null 2>&1 || {
    echo "vendor-web: npm is needed once to fetch swagger-ui-dist@$SWAGGER_UI_VERSION" \
        "(Debian: apt-get install npm)" >&2
    exit 1
}

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent --json "swagger-ui-dist@$SWAGGER_UI_VERSION" >pack.json)
integrity="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["integrity"])' "$work/pack.json")"
if [[ "$integrity" != "$SWAGGER_UI_INTEGRITY" ]]; then
    echo "vendor-web: swagger-ui-dist@$SWAGGER_UI_VERSION does not match its pinned integrity" >&2
    exit 1
fi
tar -xzf "$work"/swagger-ui-dist-"$SWAGGER_UI_VERSION".tgz -C "$work"
mkdir -p "$target"
for file in swagger-ui-bundle.js swagger-ui.css LICENSE; do
    cp "$work/package/$file" "$target/$file"
done
echo "$SWAGGER_UI_VERSION" >"$stamp"
echo "vendor-web: swagger-ui-dist@$SWAGGER_UI_VERSION in app/static/vendor/swagger-ui" >&2
