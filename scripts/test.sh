#!/usr/bin/env bash
# Sets up the development environment, then runs the lint, the type check and every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --dev
# PostgreSQL for the scale-out tests (installed once, as root, from Debian's packages);
# the tests start and stop their own servers through the same script.
scripts/infra.sh install
# Chromium, Node.js and the Web SDK's npm packages for the browser tests (tests/browser).
scripts/browser.sh install
echo "== ruff"
.venv/bin/ruff check src tests bench examples
.venv/bin/ruff format --check src tests bench examples
echo "== mypy --strict"
.venv/bin/mypy
echo "== pytest"
# On PATCHBAY_TEST_WORKERS processes (2; 0 runs them in this one), a module's tests on one
# of them (its servers start once).
.venv/bin/pytest -n "${PATCHBAY_TEST_WORKERS:-2}" --dist loadscope "$@"
