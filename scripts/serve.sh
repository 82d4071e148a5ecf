#!/usr/bin/env bash
# Sets up Patchbay and runs it on the embedded store (./patchbay-data), on 127.0.0.1:8080.
# On the first run it creates a `server` input and prints its key and secret as `export`
# lines for the shell.
# Extra arguments go to `patchbay serve` (e.g. --host 0.0.0.0 --port 9000).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
data_dir=${PATCHBAY_DATA_DIR:-patchbay-data}
if [ ! -f "$data_dir/patchbay.db" ] \
  || ! .venv/bin/patchbay inputs list --data-dir "$data_dir" --json | grep -q .; then
  created=$(.venv/bin/patchbay inputs add server --type server --data-dir "$data_dir" --json)
  .venv/bin/python - "$created" <<'PY'
import json
import sys

made = json.loads(sys.argv[1])
print(
    "First run: created the input 'server'. Its secret is shown only this once; run these\n"
    "two lines in the shell you send from (then try the curl of the README's 'Try it'):\n\n"
    f"  export KEY={made['key']}\n  export SECRET={made['secret']}\n\n"
    "The key is also in 'patchbay inputs list'. A lost secret cannot be shown again:\n"
    "'patchbay inputs rotate server' makes a new key and secret.\n"
)
PY
fi
# (build/compiled first: the segment stage compiled, scripts/compile.sh)
PYTHONPATH=build/compiled exec .venv/bin/patchbay serve --data-dir "$data_dir" "$@"
