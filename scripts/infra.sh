#!/usr/bin/env bash
# Real servers for the scale-out mode, as local processes: PostgreSQL (the state) and, later
# in this script, Apache Kafka (the batch log). The tests start them through this script, and
# a user can run it to try the mode:
#
#   scripts/infra.sh install                 # once: PostgreSQL from Debian's packages (as root)
#   scripts/infra.sh postgres start [DIR] [PORT]
#                                            # a throwaway cluster in DIR (default
#                                            # .infra/postgres), on 127.0.0.1:PORT (default
#                                            # 55432); prints `export PATCHBAY_STATE=...`
#   scripts/infra.sh postgres stop [DIR]
#
# Nothing here is for production: the cluster trusts every local connection.
set -euo pipefail
cd "$(dirname "$0")/.."

pg_bin() {
  local found
  for found in /usr/lib/postgresql/*/bin; do
    if [[ -x $found/pg_ctl ]]; then
      echo "$found"
      return
    fi
  done
  return 1
}

install_postgres() {
  if pg_bin >/dev/null; then
    return
  fi
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    echo "infra: installing PostgreSQL (Debian's postgresql package)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    # Debian starts a cluster of its own on 5432: the tests use their own.
    if command -v pg_lsclusters >/dev/null; then
      pg_lsclusters --no-header | while read -r version name _; do
        pg_ctlcluster "$version" "$name" stop 2>/dev/null || true
      done
    fi
  else
    echo "infra: PostgreSQL is not installed (sudo apt-get install postgresql)" >&2
    exit 1
  fi
}

# Runs a PostgreSQL program as the owner of the cluster (initdb refuses root).
as_owner() {
  if [[ $(id -u) == 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

postgres_start() {
  local dir=${1:-.infra/postgres} port=${2:-55432} bin
  install_postgres
  bin=$(pg_bin)
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [[ $(id -u) == 0 ]]; then
    if ! runuser -u postgres -- test -x "$(dirname "$dir")"; then
      echo "infra: the postgres user cannot reach $dir: its parent directories must be searchable (chmod o+x)" >&2
      exit 1
    fi
    chown postgres: "$dir"
    chmod 0700 "$dir"
  fi
  if [[ ! -f $dir/PG_VERSION ]]; then
    as_owner "$bin/initdb" -D "$dir" -U postgres -A trust --no-sync >/dev/null
  fi
  if ! as_owner "$bin/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
    as_owner "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=200" \
      start >/dev/null
  fi
  echo "export PATCHBAY_STATE=postgresql://postgres@127.0.0.1:$port/postgres"
}

postgres_stop() {
  local dir=${1:-.infra/postgres} bin
  bin=$(pg_bin) || return 0
  if [[ -f $dir/postmaster.pid ]]; then
    as_owner "$bin/pg_ctl" -D "$dir" -m fast -w stop >/dev/null
  fi
}

case "${1:-}/${2:-}" in
  install/*) install_postgres ;;
  postgres/start) shift 2; postgres_start "$@" ;;
  postgres/stop) shift 2; postgres_stop "$@" ;;
  *)
    sed -n '2,13p' "$0" >&2
    exit 2
    ;;
esac
