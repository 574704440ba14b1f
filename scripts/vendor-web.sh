#!/usr/bin/env bash
# Vendor the front-end files roamsign serves itself (never a CDN at run time) into
# app/static/vendor/ (gitignored): Swagger UI for /docs, from the npm registry's
# swagger-ui-dist, pinned by version and by the tarball's integrity hash.
# Idempotent: nothing to do once the pinned version is in place. `make install` runs it, and so
# does the Dockerfile's `web` stage (an image built from a clean checkout serves /docs too):
# it needs only bash, tar and python3, which hashes the tarball itself (no npm). A mirror of
# the registry: npm's own setting, npm_config_registry; a proxy: https_proxy.
set -euo pipefail

SWAGGER_UI_VERSION=5.35.0
SWAGGER_UI_INTEGRITY="sha512-U06rpMtW9V3XPGOBeamTUSr0Z09jMX4IJuANpE/EZbAhw0G8CgwrzU4YmXkn/h0wCDNsXdGarTNNHC3sU8yVUQ=="

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="$root/app/static/vendor/swagger-ui"
stamp="$target/.version"

if [[ -f "$stamp" && "$(cat "$stamp")" == "$SWAGGER_UI_VERSION" ]]; then
    exit 0
fi

registry="${npm_config_registry:-https://registry.npmjs.org/}"
tarball="${registry%/}/swagger-ui-dist/-/swagger-ui-dist-$SWAGGER_UI_VERSION.tgz"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# The integrity is npm's (Subresource Integrity: sha512, base64) of the tarball's bytes.
python3 - "$tarball" "$work/package.tgz" "$SWAGGER_UI_INTEGRITY" <<'PY'
import base64, hashlib, sys, urllib.request

url, path, pinned = sys.argv[1:]
with urllib.request.urlopen(url, timeout=120) as answer:
    data = answer.read()
integrity = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
if integrity != pinned:
    sys.exit(f"vendor-web: {url} does not match its pinned integrity")
with open(path, "wb") as out:
    out.write(data)
PY
tar -xzf "$work/package.tgz" -C "$work"
mkdir -p "$target"
for file in swagger-ui-bundle.js swagger-ui.css LICENSE; do
    cp "$work/package/$file" "$target/$file"
done
echo "$SWAGGER_UI_VERSION" >"$stamp"
echo "vendor-web: swagger-ui-dist@$SWAGGER_UI_VERSION in app/static/vendor/swagger-ui" >&2
