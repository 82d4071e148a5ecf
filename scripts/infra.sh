#!/usr/bin/env bash
# Real servers for the scale-out mode, as local processes: PostgreSQL (the state) and Apache
# Kafka (the batch log). The tests start them through this script, and a user can run it to
# try the mode:
#
#   scripts/infra.sh install                 # once: PostgreSQL from Debian's packages (as root)
#                                            # and the Kafka jars from Maven Central (cached)
#   scripts/infra.sh postgres start [DIR] [PORT]
#                                            # a throwaway cluster in DIR (default
#                                            # .infra/postgres), on 127.0.0.1:PORT (default
#                                            # 55432); prints `export PATCHBAY_STATE=...`
#   scripts/infra.sh postgres stop [DIR]
#   scripts/infra.sh kafka start [DIR] [PORT] [--brokers N]
#                                            # a throwaway KRaft cluster of N brokers (default
#                                            # 1) in DIR (default .infra/kafka): broker i
#                                            # (from 0) on 127.0.0.1:PORT+2i (default 59092),
#                                            # its controller on the next port, and a
#                                            # SASL_PLAINTEXT listener (PLAIN) on
#                                            # PORT+2N+i; prints `export PATCHBAY_LOG=kafka://...`
#                                            # (the plaintext listeners). DIR/sasl.env holds
#                                            # PATCHBAY_LOG and PATCHBAY_KAFKA_OPTIONS for the
#                                            # SASL listeners (user patchbay, a password made
#                                            # for the cluster)
#   scripts/infra.sh kafka stop [DIR]
#   scripts/infra.sh kafka stop-broker DIR I [--kill]
#                                            # stop the broker in DIR/broker-I (I from 1: the
#                                            # one on PORT+2(I-1)): a controlled shutdown, or
#                                            # with --kill a crash (SIGKILL)
#   scripts/infra.sh kafka start-broker DIR I # start it again, its data kept; returns once it
#                                            # listens
#   scripts/infra.sh kafka restart-broker DIR I
#
# A cluster of 3 brokers or more replicates its internal topics 3 times and keeps
# min.insync.replicas=2 (a topic of replication factor 3 then takes acks=all writes with one
# broker down, as in production).
#
# Nothing here is for production: the servers trust every local connection. Kafka needs Java
# 17+ and Maven; its jars are kept in $PATCHBAY_CACHE (default ~/.cache/patchbay).
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

KAFKA_VERSION=4.1.1
LOG4J_VERSION=2.24.3
KAFKA_LIB=${PATCHBAY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/patchbay}/kafka-$KAFKA_VERSION/lib

# The broker's runtime classpath, from Maven Central through a throwaway pom, once: later
# calls (and concurrent ones, under a lock) find it in the cache.
install_kafka() {
  if [[ -f $KAFKA_LIB/.complete ]]; then
    return
  fi
  local tool
  for tool in java mvn flock; do
    if ! command -v "$tool" >/dev/null; then
      echo "infra: Kafka needs $tool (Java 17+ and Maven: sudo apt-get install openjdk-17-jre-headless maven)" >&2
      exit 1
    fi
  done
  mkdir -p "$(dirname "$KAFKA_LIB")"
  (
    flock 9
    if [[ -f $KAFKA_LIB/.complete ]]; then
      exit 0
    fi
    echo "infra: fetching Apache Kafka $KAFKA_VERSION from Maven Central" >&2
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    cat >"$work/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>patchbay</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>$LOG4J_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j2-impl</artifactId><version>$LOG4J_VERSION</version></dependency>
  </dependencies>
</project>
EOF
    local out
    if ! out=$(cd "$work" && mvn -B -q -Dstyle.color=never dependency:copy-dependencies \
      -DoutputDirectory=lib -DincludeScope=runtime 2>&1); then
      echo "infra: Maven could not fetch Kafka: $out" >&2
      exit 1
    fi
    rm -rf "$KAFKA_LIB"
    mv "$work/lib" "$KAFKA_LIB"
    touch "$KAFKA_LIB/.complete"
  ) 9>"$(dirname "$KAFKA_LIB")/.lock"
}

# Whether something accepts connections on 127.0.0.1:$1.
listening() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Whether the broker kept in directory $1 runs.
kafka_running() {
  [[ -f $1/pid ]] && kill -0 "$(cat "$1/pid")" 2>/dev/null
}

kafka_start() {
  local dir=.infra/kafka port=59092 brokers=1 positional=()
  while (($#)); do
    case $1 in
      --brokers) brokers=${2:?--brokers needs a number}; shift 2 ;;
      *) positional+=("$1"); shift ;;
    esac
  done
  dir=${positional[0]:-$dir}
  port=${positional[1]:-$port}
  install_kafka
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [[ ! -f $dir/cluster-id ]]; then
    # A cluster id as Kafka makes them: 16 random bytes, base64url without padding, never
    # starting with "-" (the storage tool would read it as an option).
    local id=-
    while [[ $id == -* ]]; do
      id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
    done
    echo "$id" >"$dir/cluster-id"
  fi
  if [[ ! -f $dir/sasl-password ]]; then
    (umask 077 && head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$dir/sasl-password")
  fi
  local password
  password=$(cat "$dir/sasl-password")
  # A static quorum (controller.quorum.voters): every broker is one of the controllers.
  local i node client sasl voters="" urls="" sasl_urls="" replicas=$((brokers < 3 ? brokers : 3))
  for ((i = 0; i < brokers; i++)); do
    voters+="${voters:+,}$((i + 1))@127.0.0.1:$((port + 2 * i + 1))"
    urls+="${urls:+,}127.0.0.1:$((port + 2 * i))"
    sasl_urls+="${sasl_urls:+,}127.0.0.1:$((port + 2 * brokers + i))"
  done
  (
    umask 077
    cat >"$dir/sasl.env" <<EOF
PATCHBAY_LOG=kafka://$sasl_urls
PATCHBAY_KAFKA_OPTIONS=security.protocol=SASL_PLAINTEXT,sasl.mechanism=PLAIN,sasl.username=patchbay,sasl.password=$password
EOF
  )
  for ((i = 0; i < brokers; i++)); do
    node=$dir/broker-$((i + 1))
    client=$((port + 2 * i))
    sasl=$((port + 2 * brokers + i))
    mkdir -p "$node"
    if kafka_running "$node"; then
      continue
    fi
    cat >"$node/server.properties" <<EOF
process.roles=broker,controller
node.id=$((i + 1))
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$client,CONTROLLER://127.0.0.1:$((client + 1)),SASL_PLAINTEXT://127.0.0.1:$sasl
advertised.listeners=PLAINTEXT://127.0.0.1:$client,SASL_PLAINTEXT://127.0.0.1:$sasl
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT
sasl.enabled.mechanisms=PLAIN
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="patchbay" password="$password" user_patchbay="$password";
log.dirs=$node/data
auto.create.topics.enable=false
offsets.topic.replication.factor=$replicas
transaction.state.log.replication.factor=$replicas
transaction.state.log.min.isr=1
min.insync.replicas=$((replicas < 3 ? 1 : 2))
group.initial.rebalance.delay.ms=0
EOF
    if [[ ! -f $node/data/meta.properties ]]; then
      local out
      if ! out=$(java -cp "$KAFKA_LIB/*" kafka.tools.StorageTool format \
        -t "$(cat "$dir/cluster-id")" -c "$node/server.properties" 2>&1); then
        echo "infra: formatting Kafka broker $((i + 1)) failed: $out" >&2
        exit 1
      fi
    fi
    kafka_launch "$node"
  done
  for ((i = 0; i < brokers; i++)); do
    kafka_await "$dir/broker-$((i + 1))"
  done
  echo "export PATCHBAY_LOG=kafka://$urls"
}

# Starts the broker of directory $1 (formatted, with its server.properties) in the background.
kafka_launch() {
  nohup java -Xmx512m -Xms64m -cp "$KAFKA_LIB/*" kafka.Kafka "$1/server.properties" \
    >>"$1/server.log" 2>&1 </dev/null &
  echo $! >"$1/pid"
}

# Waits until the broker of directory $1 accepts connections on each of its client ports
# (those of advertised.listeners).
kafka_await() {
  local node=$1 port waited=0
  for port in $(sed -n 's/^advertised.listeners=//p' "$node/server.properties" | tr , '\n' | sed 's/.*://'); do
    until listening "$port"; do
      if ! kafka_running "$node" || ((waited++ >= 480)); then
        echo "infra: Kafka $(basename "$node") did not start; the end of $node/server.log:" >&2
        tail -n 20 "$node/server.log" >&2
        exit 1
      fi
      sleep 0.25
    done
  done
}

# Sends signal $2 (TERM: a controlled shutdown; KILL: a crash) to the broker of directory $1,
# if it runs.
kafka_signal() {
  if kafka_running "$1"; then
    kill "-$2" "$(cat "$1/pid")"
  fi
}

# Waits until the broker of directory $1 has stopped (killing it after 60 s: a broker that
# hangs on its way out).
kafka_reap() {
  local pid waited=0
  if [[ -f $1/pid ]]; then
    pid=$(cat "$1/pid")
    while kill -0 "$pid" 2>/dev/null; do
      if ((waited++ == 240)); then
        kill -9 "$pid" 2>/dev/null || true
      fi
      sleep 0.25
    done
  fi
  rm -f "$1/pid"
}

# Every broker is told at once: one by one, the last ones would wait for a controller
# quorum that has gone.
kafka_stop() {
  local dir=${1:-.infra/kafka} node
  for node in "$dir"/broker-*; do
    kafka_signal "$node" TERM
  done
  for node in "$dir"/broker-*; do
    kafka_reap "$node"
  done
}

# The directory of broker $2 (from 1) of the cluster in $1, which must have been started.
kafka_node() {
  local node=${1:?a cluster directory}/broker-${2:?a broker number}
  if [[ ! -f $node/server.properties ]]; then
    echo "infra: no Kafka broker $2 in $1 (start the cluster first)" >&2
    exit 1
  fi
  echo "$node"
}

kafka_stop_broker() {
  local node signal=TERM positional=()
  while (($#)); do
    case $1 in
      --kill) signal=KILL; shift ;;
      *) positional+=("$1"); shift ;;
    esac
  done
  node=$(kafka_node "${positional[@]}")
  kafka_signal "$node" "$signal"
  kafka_reap "$node"
}

kafka_start_broker() {
  local node
  node=$(kafka_node "$@")
  install_kafka
  if ! kafka_running "$node"; then
    kafka_launch "$node"
  fi
  kafka_await "$node"
}

case "${1:-}/${2:-}" in
  install/*) install_postgres; install_kafka ;;
  postgres/start) shift 2; postgres_start "$@" ;;
  postgres/stop) shift 2; postgres_stop "$@" ;;
  kafka/start) shift 2; kafka_start "$@" ;;
  kafka/stop) shift 2; kafka_stop "$@" ;;
  kafka/stop-broker) shift 2; kafka_stop_broker "$@" ;;
  kafka/start-broker) shift 2; kafka_start_broker "$@" ;;
  kafka/restart-broker) shift 2; kafka_stop_broker "$@"; kafka_start_broker "$@" ;;
  *)
    sed -n '2,38p' "$0" >&2
    exit 2
    ;;
esac
