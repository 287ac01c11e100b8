#!/usr/bin/env bash
# Install everything the tests need into .venv, then run every check:
#   the generated stubs are current, the contract passes buf lint, pytest.
# Extra arguments go to pytest (e.g. ./scripts/test.sh -k ingest).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
echo "== generated stubs"
.venv/bin/python scripts/gen_protos.py --check
echo "== buf lint"
.venv/bin/buf lint
echo "== pytest"
.venv/bin/python -m pytest -q "$@"
