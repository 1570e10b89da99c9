#!/usr/bin/env bash
# Refresh the vendored Unleash client specification (tests/flags/unleash_spec/) from npm.
# Usage: scripts/refresh_unleash_spec.sh [VERSION]   (default: the latest published)
set -euo pipefail
version="${1:-latest}"
here="$(cd "$(dirname "$0")/.." && pwd)"
dest="$here/tests/flags/unleash_spec"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "@unleash/client-specification@$version" > /dev/null)
tar -xzf "$work"/unleash-client-specification-*.tgz -C "$work"
rm -f "$dest"/[0-9]*.json
cp "$work"/package/specifications/*.json "$dest"/
cp "$work"/package/LICENSE "$dest"/LICENSE
got="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["version"])' "$work/package/package.json")"
sed -i "s/^Version: .*/Version: $got/" "$dest/README.md"
echo "tests/flags/unleash_spec: @unleash/client-specification $got"
