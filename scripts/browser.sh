#!/usr/bin/env bash
# What the browser tests (tests/browser, docs/testing.md) need, installed once:
#
#   scripts/browser.sh install
#
# - Chromium, from Debian's packages (as root), when missing;
# - Node.js and npm, from Debian's packages, when missing;
# - the Web SDK and the Braze kit pinned in tests/browser/package-lock.json, into
#   tests/browser/node_modules (`npm ci`, again only when the lock file changes).
#
# Playwright, the Python package that drives Chromium, is in requirements/dev.txt; it never
# downloads a browser of its own: the tests launch Debian's Chromium. Nothing is fetched when
# the tests run.
set -euo pipefail
cd "$(dirname "$0")/.."

updated=
debian_install() {  # debian_install PACKAGE...
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    echo "browser: installing $* (Debian's packages)" >&2
    if [[ -z $updated ]]; then
      apt-get update -qq
      updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
  else
    echo "browser: $* not installed (sudo apt-get install $*)" >&2
    exit 1
  fi
}

install() {
  local missing=()
  [[ -x /usr/lib/chromium/chromium ]] || command -v chromium >/dev/null || missing+=(chromium)
  command -v node >/dev/null || missing+=(nodejs)
  command -v npm >/dev/null || missing+=(npm)
  if ((${#missing[@]})); then
    debian_install "${missing[@]}"
  fi
  local dir=tests/browser
  if ! cmp -s "$dir/package-lock.json" "$dir/node_modules/.patchbay-lock.json"; then
    echo "browser: npm ci in $dir" >&2
    (cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
    cp "$dir/package-lock.json" "$dir/node_modules/.patchbay-lock.json"
  fi
}

case "${1:-}" in
  install) install ;;
  *)
    sed -n '2,12p' "$0" >&2
    exit 2
    ;;
esac
