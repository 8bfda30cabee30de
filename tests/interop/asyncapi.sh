#!/usr/bin/env bash
# AsyncAPI's CLI as installed from tests/interop/asyncapi-cli/package-lock.json (`make asyncapi-check` installs
# it), run offline and non-interactively: CI=true and a committed analytics file with analytics disabled
# (what `asyncapi config analytics --disable` writes; ASYNCAPI_METRICS_CONFIG_PATH points at it) send no
# metrics, and ASYNCAPI_SKIP_NEW_VERSION_CHECK skips the update check. Usage: tests/interop/asyncapi.sh validate FILE
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cli="$here/asyncapi-cli/node_modules/.bin/asyncapi"
if [[ ! -x "$cli" ]]; then
  echo "asyncapi CLI not installed; run: make asyncapi-check (or: cd tests/interop/asyncapi-cli && npm ci)" >&2
  exit 2
fi
export CI=true ASYNCAPI_METRICS_CONFIG_PATH="$here/asyncapi-cli/asyncapi-analytics.json"
export ASYNCAPI_SKIP_NEW_VERSION_CHECK=true
exec "$cli" "$@"
