#!/usr/bin/env bash
# Install the Node client's locked dependencies and run its tests against a real
# sahayak-rpc server (started by the test from ../../.venv/bin/sahayak-rpc).
# Needs Node >= 18 and npm; the repo's .venv must exist (scripts/test.sh makes it).
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x ../../.venv/bin/sahayak-rpc ]; then
    echo "clients/node/test.sh: ../../.venv/bin/sahayak-rpc not found; run scripts/test.sh (or pip install -e .) first" >&2
    exit 1
fi
# No dependency needs an install script (protobufjs's postinstall only prints version warnings).
npm ci --no-audit --no-fund --ignore-scripts
npm test
