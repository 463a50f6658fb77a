#!/usr/bin/env bash
# Run a real single-node Apache Kafka broker (KRaft, combined broker+controller)
# on loopback, without Docker. Needs Java 17+ and, on first use, Maven.
#
# Usage: kafka.sh start|stop|restart|status|bootstrap|state-dir
#        (also as scripts/kafka.sh in a checkout, or `streams kafka start|stop|status`)
#
#   start      fetch the jars (first time only), write the config, format the
#              storage (first time only), start the broker in the background and
#              wait until it answers Kafka requests. Prints host:port on stdout.
#              A no-op (still printing host:port) when it is already running.
#   stop       SIGTERM, then SIGKILL after KAFKA_STOP_TIMEOUT seconds.
#   restart    stop + start.
#   status     "running at 127.0.0.1:PORT (pid N)" (exit 0) or "stopped" (exit 3).
#   bootstrap  print the bootstrap address, host:port.
#   state-dir  print the broker's state folder.
#
# Environment:
#   KAFKA_PORT             client listener port (default 9092; when unset and a
#                          broker is running, the running broker's port is used)
#   KAFKA_CONTROLLER_PORT  controller listener port (default KAFKA_PORT+1)
#   KAFKA_START_TIMEOUT    seconds to wait for the broker to be ready (default 60)
#   KAFKA_STOP_TIMEOUT     seconds to wait after SIGTERM before SIGKILL (default 30)
#   KAFKA_HEAP_OPTS        JVM heap options (default "-Xms256m -Xmx1g")
#   KAFKA_JVM_OPTS         extra JVM options
#   JAVA_HOME              Java to use (default: java on PATH)
#   STREAMS_HOME           where state lives (see below)
#   KAFKA_STATE_DIR        state folder (default $STATE_HOME/kafka, $STATE_HOME/kafka-secure)
#
# This script ships inside the streams package (streams/kafka/broker/, beside the
# pom.xml it fetches the jars with) and never writes there. Its state goes to
# STATE_HOME: $STREAMS_HOME if set; else, when the package is a source checkout
# (pyproject.toml three folders up), that checkout's .local/; else
# ${XDG_DATA_HOME:-~/.local/share}/streams. STATE_HOME/kafka/ holds libs/ (jars,
# fetched with Maven from pom.xml), data/, logs/ (server.log), server.properties
# (generated on every start; edits are overwritten), cluster.id, kafka.pid.
#
# Secure mode (KAFKA_SECURE=1): a second, separate broker for the security tests,
# with its own state (STATE_HOME/kafka-secure or KAFKA_STATE_DIR) and ports, sharing the
# jars. Clients connect over SASL_SSL (TLS; SCRAM-SHA-512 or PLAIN); the controller
# listener is SASL_PLAINTEXT/PLAIN on loopback; the StandardAuthorizer denies what
# no ACL allows, except to the super user "admin" (which the broker itself uses).
# The storage is formatted afresh on every start (the SCRAM users live in it).
#   KAFKA_SECURE_PORT             SASL_SSL client port (default 9192)
#   KAFKA_SECURE_CONTROLLER_PORT  controller port (default KAFKA_SECURE_PORT+1)
#   KAFKA_SECURE_CERT_DIR         holds ca.pem (trusted CA) and broker.pem (the
#                                 broker's unencrypted PKCS#8 key, then its chain;
#                                 SAN IP:127.0.0.1 and DNS:localhost)
#   KAFKA_SECURE_ADMIN_PASSWORD   password of the super user "admin" (PLAIN)
#   KAFKA_SECURE_SCRAM_USERS      "name=password ..." SCRAM-SHA-512 users
#   KAFKA_SECURE_PLAIN_USERS      "name=password ..." more PLAIN users
# Passwords: letters, digits, '-' and '_' only (they go into JAAS and StorageTool
# syntax unquoted). They are written to server.properties (mode 600); the SCRAM
# ones are StorageTool arguments for the few seconds formatting takes.
set -euo pipefail

readonly HOST=127.0.0.1
readonly NODE_ID=1

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPT_DIR
readonly POM="$SCRIPT_DIR/pom.xml"

# The folder all state goes under (never the package folder: it may be site-packages).
state_home() {
  if [[ -n "${STREAMS_HOME:-}" ]]; then
    if [[ "$STREAMS_HOME" == /* ]]; then
      printf '%s\n' "$STREAMS_HOME"
    else
      printf '%s\n' "$PWD/$STREAMS_HOME"
    fi
  elif [[ "$SCRIPT_DIR" == */streams/kafka/broker && -f "$SCRIPT_DIR/../../../pyproject.toml" ]]; then
    (cd "$SCRIPT_DIR/../../.." && printf '%s\n' "$PWD/.local") # a source checkout (or an editable install)
  elif [[ -n "${XDG_DATA_HOME:-}" ]]; then
    printf '%s\n' "$XDG_DATA_HOME/streams"
  elif [[ -n "${HOME:-}" ]]; then
    printf '%s\n' "$HOME/.local/share/streams"
  else
    printf 'kafka.sh: error: HOME is not set; set STREAMS_HOME (where the broker keeps its state)\n' >&2
    return 1
  fi
}
STATE_HOME="$(state_home)"
readonly STATE_HOME
SECURE=0
[[ "${KAFKA_SECURE:-0}" == 1 ]] && SECURE=1
if ((SECURE)); then
  STATE="${KAFKA_STATE_DIR:-$STATE_HOME/kafka-secure}"
  CLIENT_LISTENER=SASL_SSL
  PORT_VAR=KAFKA_SECURE_PORT
  CONTROLLER_PORT_VAR=KAFKA_SECURE_CONTROLLER_PORT
  DEFAULT_PORT=9192
else
  STATE="${KAFKA_STATE_DIR:-$STATE_HOME/kafka}"
  CLIENT_LISTENER=PLAINTEXT
  PORT_VAR=KAFKA_PORT
  CONTROLLER_PORT_VAR=KAFKA_CONTROLLER_PORT
  DEFAULT_PORT=9092
fi
readonly SECURE STATE CLIENT_LISTENER PORT_VAR CONTROLLER_PORT_VAR DEFAULT_PORT
readonly LIBS="$STATE_HOME/kafka/libs" # shared by both modes
readonly LIBS_MARKER="$LIBS/.kafka-version"
readonly DATA="$STATE/data"
readonly LOGS="$STATE/logs"
readonly SERVER_LOG="$LOGS/server.log"
readonly CONSOLE_LOG="$LOGS/console.log"
readonly PROPS="$STATE/server.properties"
readonly CLUSTER_ID_FILE="$STATE/cluster.id"
readonly PID_FILE="$STATE/kafka.pid"
readonly LOG4J_CONF="$STATE/log4j2.properties"
readonly TOOLS_LOG4J_CONF="$STATE/tools-log4j2.properties"
readonly LOCK_FILE="$STATE/.lock"

START_TIMEOUT="${KAFKA_START_TIMEOUT:-60}"
STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-30}"
read -r -a HEAP_OPTS <<<"${KAFKA_HEAP_OPTS:--Xms256m -Xmx1g}"
read -r -a EXTRA_JVM_OPTS <<<"${KAFKA_JVM_OPTS:-}"
if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then
  JAVA="$JAVA_HOME/bin/java"
else
  JAVA=java
fi
readonly START_TIMEOUT STOP_TIMEOUT HEAP_OPTS EXTRA_JVM_OPTS JAVA
AUTHORIZER_LOG_LEVEL=WARN
((SECURE)) && AUTHORIZER_LOG_LEVEL=INFO # denied requests are logged at INFO
readonly AUTHORIZER_LOG_LEVEL

now_ms() { # milliseconds since the epoch
  if [[ -n "${EPOCHREALTIME:-}" ]]; then
    local t=${EPOCHREALTIME/[.,]/}
    printf '%s\n' "$((t / 1000))"
  else
    date +%s%3N
  fi
}

log() { printf 'kafka.sh: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

is_port_number() { [[ "$1" =~ ^[0-9]+$ ]] && ((10#$1 >= 1 && 10#$1 <= 65535)); }

# Serialise start/stop so that concurrent callers (e.g. parallel test runs)
# cannot launch two brokers. The broker itself must not inherit fd 9.
take_lock() {
  mkdir -p "$STATE"
  command -v flock >/dev/null 2>&1 || return 0
  exec 9>"$LOCK_FILE"
  flock -w 180 9 || die "could not lock $LOCK_FILE (another kafka.sh still running?)"
}

# ----------------------------------------------------------------- process ---

# True if process $1 exists and is not a zombie (an unreaped zombie would
# otherwise look alive to kill -0).
alive() {
  local stat
  kill -0 "$1" 2>/dev/null || return 1
  [[ -r "/proc/$1/stat" ]] || return 0
  stat="$(<"/proc/$1/stat")" 2>/dev/null || return 1
  stat="${stat##*) }"
  [[ "${stat:0:1}" != Z ]]
}

# Prints the pid of our running broker, or fails (removing a stale pid file).
running_pid() {
  local pid cmdline
  [[ -f "$PID_FILE" ]] || return 1
  pid="$(<"$PID_FILE")"
  if [[ "$pid" =~ ^[0-9]+$ ]] && alive "$pid"; then
    if [[ -r "/proc/$pid/cmdline" ]]; then
      cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline")"
    else
      cmdline="$(ps -o args= -p "$pid" 2>/dev/null || true)"
    fi
    # Guard against pid reuse: it must be a Kafka broker on our config.
    if [[ "$cmdline" == *kafka.Kafka*"$PROPS"* ]]; then
      printf '%s\n' "$pid"
      return 0
    fi
  fi
  rm -f "$PID_FILE"
  return 1
}

# Port configured in server.properties (= the running broker's port).
configured_port() {
  local name=${1:-$CLIENT_LISTENER}
  [[ -f "$PROPS" ]] || return 1
  sed -n "s|^listeners=.*${name}://[^,:]*:\([0-9]*\).*|\1|p" "$PROPS"
}

# The client port to use: KAFKA_PORT (secure: KAFKA_SECURE_PORT), else the
# running broker's, else 9092 (secure: 9192).
effective_port() {
  local port want="${!PORT_VAR:-}"
  if [[ -n "$want" ]]; then
    is_port_number "$want" || die "$PORT_VAR must be a port number, got '$want'"
    printf '%s\n' "$((10#$want))"
  elif running_pid >/dev/null && port="$(configured_port)" && [[ -n "$port" ]]; then
    printf '%s\n' "$port"
  else
    printf '%s\n' "$DEFAULT_PORT"
  fi
}

effective_controller_port() {
  local port=$1 want="${!CONTROLLER_PORT_VAR:-}"
  if [[ -n "$want" ]]; then
    is_port_number "$want" || die "$CONTROLLER_PORT_VAR must be a port number, got '$want'"
    printf '%s\n' "$((10#$want))"
  else
    is_port_number "$((port + 1))" || die "$PORT_VAR+1 is not a valid port; set $CONTROLLER_PORT_VAR"
    printf '%s\n' "$((port + 1))"
  fi
}

# True if something accepts TCP connections on 127.0.0.1:$1.
port_open() {
  # shellcheck disable=SC2016 # expanded by the inner shell
  timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$HOST" "$1" 2>/dev/null
}

# True if 127.0.0.1:$1 answers a Kafka ApiVersions (v0) request without error.
# Request: size=18, api_key=18, api_version=0, correlation_id=1, client_id="kafka.sh".
# Response starts with: size(4) correlation_id(4)=1 error_code(2)=0.
kafka_answers() {
  local reply
  # shellcheck disable=SC2016 # expanded by the inner shell
  reply="$(timeout 3 bash -c '
    exec 3<>"/dev/tcp/$0/$1" || exit 1
    printf "\x00\x00\x00\x12\x00\x12\x00\x00\x00\x00\x00\x01\x00\x08kafka.sh" >&3
    head -c 10 <&3 | od -An -v -tx1' "$HOST" "$1" 2>/dev/null)" || return 1
  reply="$(printf '%s' "$reply" | tr -d ' \n')"
  [[ "${reply:8}" == 000000010000 ]]
}

# True if the broker on port $1 serves: a plain ApiVersions answer, or (secure
# mode, where that needs TLS and SASL) an open port once the log says it started.
broker_answers() {
  if ((SECURE)); then
    port_open "$1"
  else
    kafka_answers "$1"
  fi
}

# ------------------------------------------------------------------- setup ---

pom_kafka_version() {
  local v
  v="$(sed -n 's|.*<kafka.version>\(.*\)</kafka.version>.*|\1|p' "$POM" | head -n 1)"
  [[ -n "$v" ]] || die "cannot read <kafka.version> from $POM"
  printf '%s\n' "$v"
}

# Fetch the broker jars into libs/ with Maven unless the marker says they are
# already there for this Kafka version (and this exact pom).
ensure_libs() {
  local version want pom_sum tmp
  [[ -f "$POM" ]] || die "missing $POM"
  version="$(pom_kafka_version)"
  pom_sum="$(cksum <"$POM" | cut -d' ' -f1)"
  want="$version pom-cksum=$pom_sum"
  if [[ -f "$LIBS_MARKER" && "$(<"$LIBS_MARKER")" == "$want" ]] &&
    compgen -G "$LIBS/kafka_2.13-$version.jar" >/dev/null; then
    return 0
  fi
  command -v mvn >/dev/null 2>&1 || die "Maven (mvn) is needed to fetch the Kafka $version jars"
  log "fetching Kafka $version jars with Maven into $LIBS (one-off) ..."
  mkdir -p "$LOGS"
  tmp="$STATE/libs.tmp.$$"
  rm -rf "$tmp"
  if ! mvn -q -B -f "$POM" dependency:copy-dependencies -DoutputDirectory="$tmp" \
    >"$LOGS/mvn.log" 2>&1; then
    rm -rf "$tmp"
    tail -n 40 "$LOGS/mvn.log" >&2 || true
    die "Maven could not fetch the Kafka jars (full log: $LOGS/mvn.log)"
  fi
  [[ -f "$tmp/kafka_2.13-$version.jar" ]] || {
    rm -rf "$tmp"
    die "Maven finished but kafka_2.13-$version.jar is missing (log: $LOGS/mvn.log)"
  }
  rm -rf "$LIBS"
  mkdir -p "$(dirname "$LIBS")"  # the secure mode keeps its state elsewhere; libs/ is shared
  mv "$tmp" "$LIBS"
  printf '%s\n' "$want" >"$LIBS_MARKER"
  log "fetched $(find "$LIBS" -name '*.jar' | wc -l) jars"
}

check_java() {
  local line major
  command -v "$JAVA" >/dev/null 2>&1 || die "java not found (install Java 17+ or set JAVA_HOME)"
  line="$("$JAVA" -version 2>&1 | head -n 1)"
  major="$(sed -n 's/.*version "\([0-9]*\).*/\1/p' <<<"$line")"
  [[ "$major" == 1 ]] && major=8 # "1.8.0_x"
  if ! [[ "$major" =~ ^[0-9]+$ ]] || ((major < 17)); then
    die "Kafka 4 needs Java 17+, found: $line"
  fi
}

run_tool() { # run a Kafka command-line class with the jars in libs/
  "$JAVA" -Xmx256m -XX:TieredStopAtLevel=1 -Dlog4j2.configurationFile="$TOOLS_LOG4J_CONF" \
    -cp "$LIBS/*" "$@"
}

valid_cluster_id() { [[ "$1" =~ ^[A-Za-z0-9_][A-Za-z0-9_-]{21}$ ]]; }

ensure_cluster_id() {
  local id=""
  if [[ -f "$CLUSTER_ID_FILE" ]]; then
    id="$(tr -d '[:space:]' <"$CLUSTER_ID_FILE")"
    valid_cluster_id "$id" && return 0
    log "ignoring invalid cluster id '$id' in $CLUSTER_ID_FILE"
    id=""
  fi
  # Keep the id of already formatted storage rather than wiping it.
  if [[ -f "$DATA/meta.properties" ]]; then
    id="$(sed -n 's/^cluster\.id=//p' "$DATA/meta.properties" | tr -d '[:space:]')"
    valid_cluster_id "$id" || id=""
  fi
  if [[ -z "$id" ]] && command -v python3 >/dev/null 2>&1; then
    # Same shape as org.apache.kafka.common.Uuid.randomUuid(): 16 random bytes,
    # base64url without padding, never starting with '-'.
    id="$(python3 -c '
import base64, uuid
while True:
    s = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
    if not s.startswith("-"):
        print(s)
        break')" || id=""
  fi
  if [[ -z "$id" ]]; then
    id="$(run_tool kafka.tools.StorageTool random-uuid | tail -n 1 | tr -d '[:space:]')"
  fi
  valid_cluster_id "$id" || die "could not generate a cluster id (got '$id')"
  printf '%s\n' "$id" >"$CLUSTER_ID_FILE"
  log "cluster id $id saved to $CLUSTER_ID_FILE"
}

write_if_changed() { # write stdin to file $1 if its content differs; true if changed
  local file=$1 tmp
  tmp="$(mktemp "$file.XXXXXX")"
  cat >"$tmp"
  if [[ -f "$file" ]] && cmp -s "$tmp" "$file"; then
    rm -f "$tmp"
    return 1
  fi
  chmod 644 "$tmp"
  mv -f "$tmp" "$file"
}

# Secure mode: a word safe to put unquoted into JAAS and StorageTool syntax.
plain_word() { [[ "$1" =~ ^[A-Za-z0-9_-]{1,128}$ ]]; }

# "name=password ..." from the variable named $1, checked; prints "name password" lines.
secure_users() {
  local entry name pw
  for entry in ${!1:-}; do
    name=${entry%%=*}
    pw=${entry#*=}
    if ! { [[ "$entry" == *=* ]] && plain_word "$name" && plain_word "$pw"; }; then
      die "$1: entries must be name=password of letters, digits, '-' and '_'"
    fi
    printf '%s %s\n' "$name" "$pw"
  done
}

# server.properties of the secure broker: it holds passwords, so mode 600, and
# written on every start (users and passwords may differ per run).
write_secure_props() {
  local port=$1 cport=$2 certs="${KAFKA_SECURE_CERT_DIR:-}" admin_pw="${KAFKA_SECURE_ADMIN_PASSWORD:-}"
  local plain_users="" users name pw
  [[ -n "$certs" && -f "$certs/ca.pem" && -f "$certs/broker.pem" ]] ||
    die "KAFKA_SECURE_CERT_DIR must name a folder with ca.pem and broker.pem"
  plain_word "$admin_pw" || die "KAFKA_SECURE_ADMIN_PASSWORD must be set (letters, digits, '-', '_')"
  users="$(secure_users KAFKA_SECURE_PLAIN_USERS)" || exit 1
  while read -r name pw; do
    [[ -n "$name" ]] && plain_users+=" user_$name=\"$pw\""
  done <<<"$users"
  secure_users KAFKA_SECURE_SCRAM_USERS >/dev/null || exit 1 # fail now, not at format time
  (
    umask 077
    cat >"$PROPS.tmp" <<PROPERTIES
# Generated by scripts/kafka.sh (KAFKA_SECURE=1) on every start; holds passwords.
# Clients: SASL_SSL (SCRAM-SHA-512 or PLAIN). Controller: SASL_PLAINTEXT/PLAIN on
# loopback. The broker talks to itself and to its controller as the super user.
process.roles=broker,controller
node.id=$NODE_ID
controller.quorum.bootstrap.servers=$HOST:$cport
controller.listener.names=CONTROLLER
listeners=SASL_SSL://$HOST:$port,CONTROLLER://$HOST:$cport
advertised.listeners=SASL_SSL://$HOST:$port
listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:SASL_PLAINTEXT
inter.broker.listener.name=SASL_SSL
sasl.mechanism.inter.broker.protocol=PLAIN
sasl.mechanism.controller.protocol=PLAIN
listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="$admin_pw" user_admin="$admin_pw"$plain_users;
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="$admin_pw" user_admin="$admin_pw";
ssl.keystore.type=PEM
ssl.keystore.location=$certs/broker.pem
ssl.truststore.type=PEM
ssl.truststore.location=$certs/ca.pem
listener.name.sasl_ssl.ssl.client.auth=requested
ssl.endpoint.identification.algorithm=https
ssl.enabled.protocols=TLSv1.3,TLSv1.2
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:admin
allow.everyone.if.no.acl.found=false
log.dirs=$DATA

num.partitions=1
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=false
delete.topic.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
share.coordinator.state.topic.num.partitions=1
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=4
background.threads=4
num.recovery.threads.per.data.dir=1
num.replica.fetchers=1
log.cleaner.threads=1
log.cleaner.dedupe.buffer.size=8388608
PROPERTIES
    mv -f "$PROPS.tmp" "$PROPS"
  )
  log "wrote $PROPS (SASL_SSL port $port, controller port $cport)"
}

write_configs() {
  local port=$1 cport=$2
  if ((SECURE)); then
    write_secure_props "$port" "$cport"
  elif write_if_changed "$PROPS" <<EOF; then log "wrote $PROPS (client port $port, controller port $cport)"; fi
# Generated by scripts/kafka.sh on every start; edits here are overwritten.
# Single-node KRaft broker+controller on loopback, tuned to start fast and small.
process.roles=broker,controller
node.id=$NODE_ID
controller.quorum.bootstrap.servers=$HOST:$cport
controller.listener.names=CONTROLLER
listeners=PLAINTEXT://$HOST:$port,CONTROLLER://$HOST:$cport
advertised.listeners=PLAINTEXT://$HOST:$port
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$DATA

# Topics
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=true
delete.topic.enable=true

# Internal topics: one replica, one partition (the default 50 partitions each are slow to create)
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
share.coordinator.state.topic.num.partitions=1

# Fast group joins, small thread pools. (broker.session.timeout.ms stays at the
# 9 s default: after an unclean stop the next start waits that long for the old
# registration to expire, but a shorter one risks fencing under load.)
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=4
background.threads=4
num.recovery.threads.per.data.dir=1
num.replica.fetchers=1
log.cleaner.threads=1
log.cleaner.dedupe.buffer.size=8388608
EOF

  write_if_changed "$LOG4J_CONF" <<EOF || true
# Generated by scripts/kafka.sh: INFO to logs/server.log, noisy loggers at WARN.
status = warn
name = kafka-local
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = $SERVER_LOG
appender.file.append = true
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.config.name = org.apache.kafka.common.config
logger.config.level = WARN
logger.appinfo.name = org.apache.kafka.common.utils.AppInfoParser
logger.appinfo.level = WARN
logger.clients.name = org.apache.kafka.clients
logger.clients.level = WARN
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.authorizer.name = kafka.authorizer.logger
logger.authorizer.level = $AUTHORIZER_LOG_LEVEL
logger.storage.name = org.apache.kafka.storage.internals
logger.storage.level = WARN
logger.partition.name = kafka.cluster.Partition
logger.partition.level = WARN
logger.unifiedlog.name = kafka.log.UnifiedLog
logger.unifiedlog.level = WARN
logger.fetcher.name = kafka.server.ReplicaFetcherManager
logger.fetcher.level = WARN
logger.alterdirs.name = kafka.server.ReplicaAlterLogDirsManager
logger.alterdirs.level = WARN
EOF

  write_if_changed "$TOOLS_LOG4J_CONF" <<'EOF' || true
# Generated by scripts/kafka.sh: command-line tools log WARN+ to stderr.
status = warn
name = kafka-local-tools
appender.err.type = Console
appender.err.name = STDERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.err.ref = STDERR
EOF
}

# Format the KRaft storage once (skipped when data/meta.properties exists).
# If data/ was formatted for another cluster id or node id, or is incomplete,
# wipe it and format again. (Port changes need no reformat: on start, Kafka
# updates the controller endpoint recorded in the metadata log itself.)
ensure_formatted() {
  local cluster_id meta="$DATA/meta.properties" have_id have_node
  cluster_id="$(tr -d '[:space:]' <"$CLUSTER_ID_FILE")"
  if ((SECURE)); then
    format_secure "$cluster_id"
    return 0
  fi
  if [[ -f "$meta" ]]; then
    have_id="$(sed -n 's/^cluster\.id=//p' "$meta" | tr -d '[:space:]')"
    have_node="$(sed -n 's/^node\.id=//p' "$meta" | tr -d '[:space:]')"
    if [[ "$have_id" == "$cluster_id" && "$have_node" == "$NODE_ID" && -d "$DATA/__cluster_metadata-0" ]]; then
      return 0
    fi
    log "storage in $DATA was formatted with other settings (cluster.id=${have_id:-?} node.id=${have_node:-?}," \
      "want cluster.id=$cluster_id node.id=$NODE_ID) or is incomplete; wiping it and formatting again"
  elif [[ -d "$DATA" ]] && [[ -n "$(ls -A "$DATA")" ]]; then
    log "storage in $DATA has no meta.properties; wiping it and formatting again"
  fi
  rm -rf "$DATA"
  mkdir -p "$DATA"
  log "formatting KRaft storage (cluster id $cluster_id) ..."
  if ! run_tool kafka.tools.StorageTool format --standalone -t "$cluster_id" -c "$PROPS" \
    >"$LOGS/format.log" 2>&1; then
    cat "$LOGS/format.log" >&2
    die "formatting the storage failed"
  fi
}

# Secure mode: a fresh storage on every start, with the SCRAM users in it.
format_secure() {
  local cluster_id=$1 users name pw scram=()
  users="$(secure_users KAFKA_SECURE_SCRAM_USERS)" || exit 1
  while read -r name pw; do
    [[ -n "$name" ]] && scram+=(--add-scram "SCRAM-SHA-512=[name=$name,password=$pw]")
  done <<<"$users"
  rm -rf "$DATA"
  mkdir -p "$DATA"
  log "formatting KRaft storage (cluster id $cluster_id, $((${#scram[@]} / 2)) SCRAM users) ..."
  if ! run_tool kafka.tools.StorageTool format --standalone -t "$cluster_id" -c "$PROPS" \
    ${scram[@]+"${scram[@]}"} >"$LOGS/format.log" 2>&1; then
    cat "$LOGS/format.log" >&2
    die "formatting the storage failed"
  fi
}

# --------------------------------------------------------------- commands ---

print_log_tail() {
  if [[ -s "$SERVER_LOG" ]]; then
    log "last 40 lines of $SERVER_LOG:"
    tail -n 40 "$SERVER_LOG" >&2
  fi
  if [[ -s "$CONSOLE_LOG" ]]; then
    log "last 40 lines of $CONSOLE_LOG:"
    tail -n 40 "$CONSOLE_LOG" >&2
  fi
}

do_stop() {
  local pid deadline
  if ! pid="$(running_pid)"; then
    log "not running"
    return 0
  fi
  log "stopping broker (pid $pid) ..."
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + STOP_TIMEOUT))
  while alive "$pid" && ((SECONDS < deadline)); do
    sleep 0.2
  done
  if alive "$pid"; then
    log "still running after ${STOP_TIMEOUT}s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    while alive "$pid"; do sleep 0.1; done
  fi
  rm -f "$PID_FILE"
  log "stopped"
}

# Wait until broker $1 (pid file) serves Kafka requests on port $2: its
# server.log says "Kafka Server started" and it answers ApiVersions.
# On death or timeout: print the log tail, stop it, exit 1.
wait_ready() {
  local port=$1 pid="" deadline=$((SECONDS + START_TIMEOUT))
  while :; do
    if [[ -z "$pid" && -s "$PID_FILE" ]]; then
      pid="$(<"$PID_FILE")"
    fi
    if [[ -n "$pid" ]] && ! alive "$pid"; then
      rm -f "$PID_FILE"
      print_log_tail
      die "the broker exited during startup"
    fi
    if [[ -n "$pid" ]] && grep -q 'Kafka Server started' "$SERVER_LOG" && broker_answers "$port"; then
      return 0
    fi
    if ((SECONDS >= deadline)); then
      print_log_tail
      log "not ready after ${START_TIMEOUT}s (KAFKA_START_TIMEOUT); stopping it"
      do_stop
      exit 1
    fi
    sleep 0.2
  done
}

do_start() {
  local port cport pid running_port running_cport p t0 elapsed
  port="$(effective_port)"
  cport="$(effective_controller_port "$port")"
  [[ "$port" != "$cport" ]] || die "client and controller ports must differ (both $port)"

  if pid="$(running_pid)"; then
    running_port="$(configured_port || true)"
    running_cport="$(configured_port CONTROLLER || true)"
    if [[ "$running_port" == "$port" && "$running_cport" == "$cport" ]]; then
      if ! broker_answers "$port"; then
        # e.g. a previous start was interrupted while waiting
        log "running (pid $pid) but not ready yet; waiting ..."
        wait_ready "$port"
      fi
      log "already running at $HOST:$port (pid $pid)"
      printf '%s:%s\n' "$HOST" "$port"
      return 0
    fi
    log "running on ports $running_port/$running_cport but $port/$cport requested; restarting"
    do_stop
  fi

  for p in "$port" "$cport"; do
    if port_open "$p"; then
      die "port $HOST:$p is already in use by another process (set $PORT_VAR / $CONTROLLER_PORT_VAR)"
    fi
  done

  check_java
  mkdir -p "$STATE" "$LOGS"
  ensure_libs
  ensure_cluster_id
  write_configs "$port" "$cport"
  ensure_formatted

  # One server.log per run; keep the previous one.
  if [[ -f "$SERVER_LOG" ]]; then
    mv -f "$SERVER_LOG" "$SERVER_LOG.prev"
  fi
  : >"$SERVER_LOG"
  rm -f "$PID_FILE"

  log "starting Kafka broker on $HOST:$port (controller $HOST:$cport) ..."
  t0="$(now_ms)"
  # setsid+nohup: own session, survives the calling shell. The inner shell
  # writes its pid and execs java, so the pid file holds the JVM's pid.
  # No inherited stdout/stderr (callers using $(...) must not hang) and no fd 9 (lock).
  # shellcheck disable=SC2016 # expanded by the inner shell
  nohup setsid bash -c 'printf "%s\n" "$$" >"$0"; exec "$@"' "$PID_FILE" \
    "$JAVA" "${HEAP_OPTS[@]}" \
    -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError \
    -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$LOG4J_CONF" -Dlog4j2.shutdownHookEnabled=false \
    ${EXTRA_JVM_OPTS[@]+"${EXTRA_JVM_OPTS[@]}"} \
    -cp "$LIBS/*" kafka.Kafka "$PROPS" \
    </dev/null >"$CONSOLE_LOG" 2>&1 9>&- &

  wait_ready "$port"
  pid="$(<"$PID_FILE")"
  elapsed=$(($(now_ms) - t0))
  log "ready at $HOST:$port (pid $pid) after $((elapsed / 1000)).$(printf '%03d' $((elapsed % 1000)))s; log: $SERVER_LOG"
  printf '%s:%s\n' "$HOST" "$port"
}

do_status() {
  local pid port
  if pid="$(running_pid)"; then
    port="$(configured_port || true)"
    printf 'running at %s:%s (pid %s)\n' "$HOST" "${port:-?}" "$pid"
    return 0
  fi
  printf 'stopped\n'
  return 3
}

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
}

main() {
  local cmd=${1:-}
  case "$cmd" in
  start)
    take_lock
    do_start
    ;;
  stop)
    take_lock
    do_stop
    ;;
  restart)
    take_lock
    do_stop
    do_start
    ;;
  status) do_status ;;
  bootstrap)
    local port
    port="$(effective_port)"
    printf '%s:%s\n' "$HOST" "$port"
    ;;
  state-dir) printf '%s\n' "$STATE" ;;
  -h | --help | help) usage ;;
  *)
    usage
    exit 2
    ;;
  esac
}

main "$@"
