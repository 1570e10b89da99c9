#!/usr/bin/env bash
# Installs everything `make test` and `make demo` need on a fresh machine:
# Debian packages the tests drive for real, uv, and the locked Python environment.
set -euo pipefail
cd "$(dirname "$0")/.."

# postgresql: the server binaries the tests' throwaway clusters run (initdb, pg_ctl; 15 on
# Debian 12); no service of its own is needed (tests/conftest.py, testbed/postgres.py).
# gcc: builds the router's flags in C with the package (hatch_build.py; without it: Python)
# pebble: Let's Encrypt's ACME test server and its mock DNS, started by the `tls: acme`
# tests (testbed/pebble.py)
apt_packages=(gcc git haproxy wrk hey iproute2 prometheus chromium postgresql pebble)
missing=()
for pkg in "${apt_packages[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]} with apt-get" >&2
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v uv >/dev/null 2>&1 && ! python3 -m uv --version >/dev/null 2>&1; then
    echo "setup: installing uv with pip" >&2
    python3 -m pip install --quiet uv
fi

# squawk, the migration linter conveyor's own lint is checked against
# (tests/sqllint/test_squawk.py): from npm into .cache/, pinned; without npm the test skips
SQUAWK_VERSION=2.66.0
if command -v npm >/dev/null 2>&1 \
    && ! .cache/squawk/node_modules/.bin/squawk --version 2>/dev/null | grep -q "$SQUAWK_VERSION"; then
    echo "setup: installing squawk-cli $SQUAWK_VERSION with npm" >&2
    mkdir -p .cache/squawk
    npm install --prefix .cache/squawk --no-audit --no-fund --silent "squawk-cli@$SQUAWK_VERSION" >&2 \
        || echo "setup: squawk-cli could not be installed; tests/sqllint/test_squawk.py will skip" >&2
fi

# The official Unleash Node SDK, pinned (testbed/node_sdk/package-lock.json): the flags
# end-to-end test checks it agrees with conveyor's evaluator. Without npm, that test skips.
if command -v npm >/dev/null 2>&1 && [ ! -d testbed/node_sdk/node_modules/unleash-client ]; then
    echo "setup: installing the Unleash Node SDK with npm ci (testbed/node_sdk)" >&2
    npm ci --prefix testbed/node_sdk --no-audit --no-fund --silent >/dev/null \
        || echo "setup: npm ci failed (offline?): the Node SDK test will skip" >&2
fi
