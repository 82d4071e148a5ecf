#!/usr/bin/env bash
# Creates .venv with Python >= 3.11 and installs Patchbay into it.
# Usage: scripts/setup.sh [--dev]   (installs .[server,lambda,scale] from requirements/server.txt;
# --dev installs .[dev] from requirements/dev.txt: the same and the test and lint tools;
# both then build build/compiled, the segment stage compiled: scripts/compile.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-}
if [[ -z $python ]]; then
  for candidate in python3.11 python3.12 python3.13 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      python=$candidate
      break
    fi
  done
fi
if [[ -z $python ]]; then
  echo "setup: Python 3.11 or newer is needed (set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi

if [[ ! -x .venv/bin/python ]]; then
  if ! "$python" -m venv .venv 2>/dev/null; then
    # Debian ships venv separately.
    rm -rf .venv
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
      apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
      "$python" -m venv .venv
    else
      echo "setup: '$python -m venv' failed; install python3-venv (sudo apt-get install python3-venv)" >&2
      exit 1
    fi
  fi
fi

# Every package comes from the lock file, pinned and checked against its hashes (the build
# backend too: Patchbay itself is built without build isolation, so nothing unlocked is
# fetched). scripts/lock.sh regenerates the lock files from pyproject.toml.
lock=requirements/server.txt
[[ ${1:-} == --dev ]] && lock=requirements/dev.txt
pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)
"${pip[@]}" --require-hashes -r "$lock"
"${pip[@]}" --no-deps --no-build-isolation -e .
# build/compiled: the same with the segment stage compiled (what serve.sh, the tests and the
# benchmarks run; the editable install above stays pure Python for development).
scripts/compile.sh
