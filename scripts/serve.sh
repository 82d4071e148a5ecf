#!/usr/bin/env bash
# Sets up Patchbay and runs it on the embedded store (./patchbay-data), on 127.0.0.1:8080.
# On the first run it creates a `server` input and prints its key and secret.
# Extra arguments go to `patchbay serve` (e.g. --host 0.0.0.0 --port 9000).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
data_dir=${PATCHBAY_DATA_DIR:-patchbay-data}
if [ ! -f "$data_dir/patchbay.db" ] \
  || ! .venv/bin/patchbay inputs list --data-dir "$data_dir" --json | grep -q .; then
  echo "First run: creating an input named 'server'. Keep the secret: it is shown only once."
  .venv/bin/patchbay inputs add server --type server --data-dir "$data_dir"
fi
exec .venv/bin/patchbay serve --data-dir "$data_dir" "$@"
