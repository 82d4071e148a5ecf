#!/usr/bin/env bash
# Sets up the development environment, then runs the lint, the type check and every test.
set -euo pipefail
cd "$(dirname "$0")/.."
# (PATCHBAY_COMPILE=1: the segment stage must compile; the suite runs what users run)
PATCHBAY_COMPILE=1 scripts/setup.sh --dev
# PostgreSQL for the scale-out tests (installed once, as root, from Debian's packages);
# the tests start and stop their own servers through the same script.
scripts/infra.sh install
# Chromium, Node.js and the Web SDK's npm packages for the browser tests (tests/browser).
scripts/browser.sh install
echo "== ruff"
.venv/bin/ruff check src tests bench examples hatch_build.py
.venv/bin/ruff format --check src tests bench examples hatch_build.py
echo "== mypy --strict"
.venv/bin/mypy
# On PATCHBAY_TEST_WORKERS processes (2; 0 runs them in this one), a module's tests on one
# of them (its servers start once).
workers=(-n "${PATCHBAY_TEST_WORKERS:-2}" --dist loadscope)
echo "== pytest: build/compiled (the segment stage compiled, as scripts/serve.sh runs it)"
PATCHBAY_TEST_COMPILED=1 PYTHONPATH=build/compiled .venv/bin/pytest "${workers[@]}" "$@"
echo "== pytest: the segment stage's own tests again on the source (pure Python)"
# (the embedded store's deployments: the compiled run above covered PostgreSQL)
.venv/bin/pytest "${workers[@]}" -m "not slow" -k "not postgres" tests/segment \
  tests/test_build.py "$@"
