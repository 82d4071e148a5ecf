#!/usr/bin/env bash
# Builds build/compiled: Patchbay as its wheel installs it, with the segment stage compiled
# to C extensions by mypyc (hatch_build.py), for `scripts/serve.sh`, the tests and the
# benchmarks to run (PYTHONPATH=build/compiled). The editable install in .venv stays pure
# Python for development. Skipped when build/compiled was built from the same sources.
# PATCHBAY_COMPILE=auto (default: pure Python, with a warning, where there is no C
# compiler), 1 (compile or fail) or 0 (pure Python).
# Usage: scripts/compile.sh   (after scripts/setup.sh, which installs mypy and setuptools)
set -euo pipefail
cd "$(dirname "$0")/.."

target=build/compiled
stamp=$( { find src pyproject.toml hatch_build.py -type f ! -path '*/__pycache__/*' -print0 |
           sort -z | xargs -0 sha256sum; echo "PATCHBAY_COMPILE=${PATCHBAY_COMPILE:-auto}"; } |
         sha256sum | cut -d' ' -f1)
if [[ -f $target/.stamp ]] && [[ $(cat "$target/.stamp") == "$stamp" ]]; then
  exit 0
fi
if [[ ${PATCHBAY_COMPILE:-auto} != 0 ]]; then
  # A C compiler and Python's headers (Debian: gcc, python3-dev), installed when missing
  # and this is root on Debian.
  include=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
  if { [[ ! -f $include/Python.h ]] || ! command -v cc >/dev/null; } &&
     [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq gcc python3-dev >/dev/null
  fi
fi
echo "compile: building $target (mypyc, about a minute)" >&2
rm -rf "$target.new"
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation \
  --target "$target.new" .
echo "$stamp" >"$target.new/.stamp"
rm -rf "$target"
mv "$target.new" "$target"
