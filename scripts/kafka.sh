#!/usr/bin/env bash
# Run a real single-node Apache Kafka broker (KRaft, combined broker+controller)
# on loopback, without Docker. Needs Java 17+ and, on first use, Maven.
#
# Usage: scripts/kafka.sh start|stop|restart|status|bootstrap
#
#   start      fetch the jars (first time only), write the config, format the
#              storage (first time only), start the broker in the background and
#              wait until it answers Kafka requests. Prints host:port on stdout.
#              A no-op (still printing host:port) when it is already running.
#   stop       SIGTERM, then SIGKILL after KAFKA_STOP_TIMEOUT seconds.
#   restart    stop + start.
#   status     "running at 127.0.0.1:PORT (pid N)" (exit 0) or "stopped" (exit 3).
#   bootstrap  print the bootstrap address, host:port.
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
#
# State lives in $REPO/.local/kafka/: libs/ (jars, fetched with Maven from
# scripts/kafka/pom.xml), data/, logs/ (server.log), server.properties (generated
# on every start; edits are overwritten), cluster.id, kafka.pid.
set -euo pipefail

readonly HOST=127.0.0.1
readonly NODE_ID=1

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$SCRIPT_DIR/.." && pwd)"
readonly SCRIPT_DIR REPO
readonly POM="$SCRIPT_DIR/kafka/pom.xml"
readonly STATE="$REPO/.local/kafka"
readonly LIBS="$STATE/libs"
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
  local name=${1:-PLAINTEXT}
  [[ -f "$PROPS" ]] || return 1
  sed -n "s|^listeners=.*${name}://[^,:]*:\([0-9]*\).*|\1|p" "$PROPS"
}

# The client port to use: KAFKA_PORT, else the running broker's, else 9092.
effective_port() {
  local port
  if [[ -n "${KAFKA_PORT:-}" ]]; then
    is_port_number "$KAFKA_PORT" || die "KAFKA_PORT must be a port number, got '$KAFKA_PORT'"
    printf '%s\n' "$((10#$KAFKA_PORT))"
  elif running_pid >/dev/null && port="$(configured_port)" && [[ -n "$port" ]]; then
    printf '%s\n' "$port"
  else
    printf '9092\n'
  fi
}

effective_controller_port() {
  local port=$1
  if [[ -n "${KAFKA_CONTROLLER_PORT:-}" ]]; then
    is_port_number "$KAFKA_CONTROLLER_PORT" ||
      die "KAFKA_CONTROLLER_PORT must be a port number, got '$KAFKA_CONTROLLER_PORT'"
    printf '%s\n' "$((10#$KAFKA_CONTROLLER_PORT))"
  else
    is_port_number "$((port + 1))" || die "KAFKA_PORT+1 is not a valid port; set KAFKA_CONTROLLER_PORT"
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

write_configs() {
  local port=$1 cport=$2
  if write_if_changed "$PROPS" <<EOF; then log "wrote $PROPS (client port $port, controller port $cport)"; fi
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
logger.authorizer.level = WARN
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
    if [[ -n "$pid" ]] && grep -q 'Kafka Server started' "$SERVER_LOG" && kafka_answers "$port"; then
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
    running_port="$(configured_port PLAINTEXT || true)"
    running_cport="$(configured_port CONTROLLER || true)"
    if [[ "$running_port" == "$port" && "$running_cport" == "$cport" ]]; then
      if ! kafka_answers "$port"; then
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
      die "port $HOST:$p is already in use by another process (set KAFKA_PORT / KAFKA_CONTROLLER_PORT)"
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
    port="$(configured_port PLAINTEXT || true)"
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
  -h | --help | help) usage ;;
  *)
    usage
    exit 2
    ;;
  esac
}

main "$@"
