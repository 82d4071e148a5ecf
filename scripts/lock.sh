#!/usr/bin/env bash
# Regenerates the lock files in requirements/ from pyproject.toml: every package, transitive
# ones and the build backend included, pinned with the hashes of its published files, for
# any platform and Python >= 3.11. Set-up (scripts/setup.sh) installs from them with
# --require-hashes. Versions already in a lock file are kept; to move one, edit its pin in
# pyproject.toml, or pass --upgrade-package NAME (or --upgrade) through to `uv pip compile`.
# Usage: scripts/lock.sh [uv pip compile options...]
set -euo pipefail
cd "$(dirname "$0")/.."

uv_version=0.13.8
uv=.venv-lock/bin/uv
if [[ ! -x $uv ]] || [[ $($uv --version) != "uv $uv_version"* ]]; then
  python3 -m venv .venv-lock
  .venv-lock/bin/python -m pip install -q --disable-pip-version-check "uv==$uv_version"
fi

compile() {  # compile OUTPUT EXTRA...
  local output=$1
  shift
  local extras=()
  for extra in "$@"; do extras+=(--extra "$extra"); done
  "$uv" pip compile pyproject.toml requirements/build.in "${extras[@]}" \
    --generate-hashes --universal --python-version 3.11 --quiet \
    --custom-compile-command "scripts/lock.sh" --output-file "$output" "${passthrough[@]}"
}
passthrough=("$@")
compile requirements/server.txt server lambda scale
compile requirements/dev.txt dev
echo "lock: requirements/server.txt, requirements/dev.txt"
