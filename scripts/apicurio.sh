#!/usr/bin/env bash
# Run a real Apicurio Registry on loopback, without Docker, for the Schema Registry
# mode: its Confluent-compatible API is at http://127.0.0.1:PORT/apis/ccompat/v7.
# Needs Java 17+ and, on first use, Maven. Storage is in memory: every start is empty.
#
# Usage: scripts/apicurio.sh start|stop|restart|status|url
#
#   start    fetch the server (first time only), start it in the background and
#            wait until /apis/ccompat/v7/subjects answers. Prints the ccompat URL
#            on stdout. A no-op (still printing the URL) when it is already running.
#   stop     SIGTERM, then SIGKILL after APICURIO_STOP_TIMEOUT seconds.
#   restart  stop + start.
#   status   "running at URL (pid N, version V)" (exit 0) or "stopped" (exit 3).
#   url      print the Confluent-compatible base URL.
#
# Environment:
#   APICURIO_PORT           HTTP port (default 8081; when unset and a registry is
#                           running, the running one's port is used)
#   APICURIO_VERSION        io.apicurio:apicurio-registry-app version (default: the
#                           one in scripts/apicurio/pom.xml; 3.3.x needs Java 21)
#   APICURIO_START_TIMEOUT  seconds to wait for the registry to answer (default 90)
#   APICURIO_STOP_TIMEOUT   seconds to wait after SIGTERM before SIGKILL (default 20)
#   APICURIO_HEAP_OPTS      JVM heap options (default "-Xms64m -Xmx512m")
#   APICURIO_JVM_OPTS       extra JVM options, e.g. -Dapicurio.ccompat.legacy-id-mode.enabled=true
#   JAVA_HOME               Java to use (default: java on PATH)
#
# State lives in $REPO/.local/apicurio/: dist/ (the unpacked server, fetched with
# Maven from scripts/apicurio/pom.xml), logs/registry.log (one per run; the previous
# run's is registry.log.prev), apicurio.pid, running (port and version of the
# running server).
set -euo pipefail

readonly HOST=127.0.0.1
readonly CCOMPAT_PATH=/apis/ccompat/v7

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$SCRIPT_DIR/.." && pwd)"
readonly SCRIPT_DIR REPO
readonly POM="$SCRIPT_DIR/apicurio/pom.xml"
readonly STATE="$REPO/.local/apicurio"
readonly DIST="$STATE/dist"
readonly DIST_MARKER="$DIST/.apicurio-version"
readonly LOGS="$STATE/logs"
readonly LOG="$LOGS/registry.log"
readonly PID_FILE="$STATE/apicurio.pid"
readonly RUNNING_FILE="$STATE/running"
readonly LOCK_FILE="$STATE/.lock"

START_TIMEOUT="${APICURIO_START_TIMEOUT:-90}"
STOP_TIMEOUT="${APICURIO_STOP_TIMEOUT:-20}"
read -r -a HEAP_OPTS <<<"${APICURIO_HEAP_OPTS:--Xms64m -Xmx512m}"
read -r -a EXTRA_JVM_OPTS <<<"${APICURIO_JVM_OPTS:-}"
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

log() { printf 'apicurio.sh: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

is_port_number() { [[ "$1" =~ ^[0-9]+$ ]] && ((10#$1 >= 1 && 10#$1 <= 65535)); }

# Serialise start/stop so that concurrent callers (e.g. two test sessions) cannot
# launch two registries. The server itself must not inherit fd 9.
take_lock() {
  mkdir -p "$STATE"
  command -v flock >/dev/null 2>&1 || return 0
  exec 9>"$LOCK_FILE"
  flock -w 180 9 || die "could not lock $LOCK_FILE (another apicurio.sh still running?)"
}

# ----------------------------------------------------------------- process ---

# True if process $1 exists and is not a zombie.
alive() {
  local stat
  kill -0 "$1" 2>/dev/null || return 1
  [[ -r "/proc/$1/stat" ]] || return 0
  stat="$(<"/proc/$1/stat")" 2>/dev/null || return 1
  stat="${stat##*) }"
  [[ "${stat:0:1}" != Z ]]
}

# Prints the pid of our running registry, or fails (removing stale state files).
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
    # Guard against pid reuse: it must be a JVM running our unpacked server.
    if [[ "$cmdline" == *java*"$DIST/"* ]]; then
      printf '%s\n' "$pid"
      return 0
    fi
  fi
  rm -f "$PID_FILE" "$RUNNING_FILE"
  return 1
}

running_value() { # running_value port|version: what the running server was started with
  [[ -f "$RUNNING_FILE" ]] || return 1
  sed -n "s/^$1=//p" "$RUNNING_FILE"
}

# The port to use: APICURIO_PORT, else the running registry's, else 8081.
effective_port() {
  local port
  if [[ -n "${APICURIO_PORT:-}" ]]; then
    is_port_number "$APICURIO_PORT" || die "APICURIO_PORT must be a port number, got '$APICURIO_PORT'"
    printf '%s\n' "$((10#$APICURIO_PORT))"
  elif running_pid >/dev/null && port="$(running_value port)" && [[ -n "$port" ]]; then
    printf '%s\n' "$port"
  else
    printf '8081\n'
  fi
}

ccompat_url() { printf 'http://%s:%s%s\n' "$HOST" "$1" "$CCOMPAT_PATH"; }

# True if something accepts TCP connections on 127.0.0.1:$1.
port_open() {
  # shellcheck disable=SC2016 # expanded by the inner shell
  timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$HOST" "$1" 2>/dev/null
}

# True if GET /apis/ccompat/v7/subjects on 127.0.0.1:$1 answers 200.
registry_answers() {
  local status
  # shellcheck disable=SC2016 # expanded by the inner shell
  status="$(timeout 3 bash -c '
    exec 3<>"/dev/tcp/$0/$1" || exit 1
    printf "GET %s/subjects HTTP/1.1\r\nHost: %s:%s\r\nAccept: application/json\r\nConnection: close\r\n\r\n" \
      "$2" "$0" "$1" >&3
    head -n 1 <&3' "$HOST" "$1" "$CCOMPAT_PATH" 2>/dev/null)" || return 1
  [[ "$status" == "HTTP/1."?" 200"* ]]
}

# ------------------------------------------------------------------- setup ---

wanted_version() {
  local v
  if [[ -n "${APICURIO_VERSION:-}" ]]; then
    [[ "$APICURIO_VERSION" =~ ^[0-9A-Za-z._-]+$ ]] || die "APICURIO_VERSION looks wrong: '$APICURIO_VERSION'"
    printf '%s\n' "$APICURIO_VERSION"
    return 0
  fi
  v="$(sed -n 's|.*<apicurio.version>\(.*\)</apicurio.version>.*|\1|p' "$POM" | head -n 1)"
  [[ -n "$v" ]] || die "cannot read <apicurio.version> from $POM"
  printf '%s\n' "$v"
}

# Fetch and unpack the server into dist/ unless the marker says it is there already.
ensure_dist() {
  local version=$1 download tmp archive
  [[ -f "$POM" ]] || die "missing $POM"
  if [[ -f "$DIST_MARKER" && "$(<"$DIST_MARKER")" == "$version" ]]; then
    return 0
  fi
  command -v mvn >/dev/null 2>&1 || die "Maven (mvn) is needed to fetch Apicurio Registry $version"
  log "fetching Apicurio Registry $version with Maven into $DIST (one-off) ..."
  mkdir -p "$LOGS"
  download="$STATE/download.$$"
  tmp="$STATE/dist.tmp.$$"
  rm -rf "$download" "$tmp"
  if ! mvn -q -B -f "$POM" dependency:copy -Dapicurio.version="$version" \
    -Dapicurio.download.dir="$download" >"$LOGS/mvn.log" 2>&1; then
    rm -rf "$download"
    tail -n 40 "$LOGS/mvn.log" >&2 || true
    die "Maven could not fetch io.apicurio:apicurio-registry-app:$version:tar.gz:all (full log: $LOGS/mvn.log)"
  fi
  archive="$download/apicurio-registry-app-$version-all.tar.gz"
  [[ -f "$archive" ]] || {
    rm -rf "$download"
    die "Maven finished but $archive is missing (log: $LOGS/mvn.log)"
  }
  mkdir -p "$tmp"
  tar -xzf "$archive" -C "$tmp" || {
    rm -rf "$download" "$tmp"
    die "could not unpack $archive"
  }
  rm -rf "$download" "$DIST"
  mv "$tmp" "$DIST"
  printf '%s\n' "$version" >"$DIST_MARKER"
  log "unpacked $(du -sh "$DIST" | cut -f1) into $DIST"
}

# The jar to run: quarkus-run.jar (3.1 and later) or the 3.0.x legacy *-runner.jar.
server_jar() {
  local jar
  if [[ -f "$DIST/quarkus-run.jar" ]]; then
    printf '%s\n' "$DIST/quarkus-run.jar"
    return 0
  fi
  for jar in "$DIST"/apicurio-registry-app-*-runner.jar; do
    [[ -f "$jar" ]] && {
      printf '%s\n' "$jar"
      return 0
    }
  done
  die "no quarkus-run.jar or *-runner.jar in $DIST (delete it to fetch again)"
}

java_major() {
  local line major
  line="$("$JAVA" -version 2>&1 | head -n 1)"
  major="$(sed -n 's/.*version "\([0-9]*\).*/\1/p' <<<"$line")"
  [[ "$major" == 1 ]] && major=8 # "1.8.0_x"
  printf '%s\n' "${major:-0}"
}

check_java() {
  local major
  command -v "$JAVA" >/dev/null 2>&1 || die "java not found (install Java 17+ or set JAVA_HOME)"
  major="$(java_major)"
  if ! [[ "$major" =~ ^[0-9]+$ ]] || ((major < 17)); then
    die "Apicurio Registry 3 needs Java 17+, found: $("$JAVA" -version 2>&1 | head -n 1)"
  fi
}

# --------------------------------------------------------------- commands ---

print_log_tail() {
  if [[ -s "$LOG" ]]; then
    log "last 40 lines of $LOG:"
    tail -n 40 "$LOG" >&2
    if grep -q UnsupportedClassVersionError "$LOG"; then
      log "this Apicurio build needs a newer Java than $(java_major) (3.3.x needs Java 21)"
    fi
  fi
}

do_stop() {
  local pid deadline
  if ! pid="$(running_pid)"; then
    log "not running"
    return 0
  fi
  log "stopping Apicurio Registry (pid $pid) ..."
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
  rm -f "$PID_FILE" "$RUNNING_FILE"
  log "stopped"
}

# Wait until the registry answers on port $1. On death or timeout: print the log
# tail, stop it, exit 1.
wait_ready() {
  local port=$1 pid="" deadline=$((SECONDS + START_TIMEOUT))
  while :; do
    if [[ -z "$pid" && -s "$PID_FILE" ]]; then
      pid="$(<"$PID_FILE")"
    fi
    if [[ -n "$pid" ]] && ! alive "$pid"; then
      rm -f "$PID_FILE" "$RUNNING_FILE"
      print_log_tail
      die "the registry exited during startup"
    fi
    if [[ -n "$pid" ]] && registry_answers "$port"; then
      return 0
    fi
    if ((SECONDS >= deadline)); then
      print_log_tail
      log "not ready after ${START_TIMEOUT}s (APICURIO_START_TIMEOUT); stopping it"
      do_stop
      exit 1
    fi
    sleep 0.1
  done
}

do_start() {
  local port version pid jar t0 elapsed
  port="$(effective_port)"
  version="$(wanted_version)"

  if pid="$(running_pid)"; then
    if [[ "$(running_value port || true)" == "$port" && "$(running_value version || true)" == "$version" ]]; then
      if ! registry_answers "$port"; then
        # e.g. a previous start was interrupted while waiting
        log "running (pid $pid) but not ready yet; waiting ..."
        wait_ready "$port"
      fi
      log "already running at $(ccompat_url "$port") (pid $pid)"
      ccompat_url "$port"
      return 0
    fi
    log "running as $(tr '\n' ' ' <"$RUNNING_FILE")but port=$port version=$version requested; restarting"
    do_stop
  fi

  if port_open "$port"; then
    die "port $HOST:$port is already in use by another process (set APICURIO_PORT)"
  fi

  check_java
  mkdir -p "$STATE" "$LOGS"
  ensure_dist "$version"
  jar="$(server_jar)"

  # One log per run; keep the previous one.
  if [[ -f "$LOG" ]]; then
    mv -f "$LOG" "$LOG.prev"
  fi
  rm -f "$PID_FILE"
  printf 'port=%s\nversion=%s\n' "$port" "$version" >"$RUNNING_FILE"

  log "starting Apicurio Registry $version on $HOST:$port ..."
  t0="$(now_ms)"
  # setsid+nohup: own session, survives the calling shell. The inner shell writes
  # its pid and execs java, so the pid file holds the JVM's pid. No inherited
  # stdout/stderr (callers using $(...) must not hang) and no fd 9 (the lock).
  # It runs in $STATE, so whatever the server writes to its working folder stays there.
  # Settings: loopback only (also the management interface, where a version has one);
  # H2 in memory; Confluent's behaviour of answering a re-registration of the same
  # schema (in any formatting) with its existing id (canonical hash); deletes allowed,
  # as in Confluent's registry.
  # shellcheck disable=SC2016 # expanded by the inner shell
  nohup setsid bash -c 'cd "$1" && printf "%s\n" "$$" >"$0" && shift && exec "$@"' "$PID_FILE" "$STATE" \
    "$JAVA" "${HEAP_OPTS[@]}" \
    -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
    -Dquarkus.http.host="$HOST" -Dquarkus.http.port="$port" \
    -Dquarkus.management.host="$HOST" \
    -Dapicurio.storage.kind=sql -Dapicurio.storage.sql.kind=h2 \
    -Dapicurio.datasource.url="jdbc:h2:mem:registry" \
    -Dapicurio.datasource.jdbc.initial-size=2 -Dapicurio.datasource.jdbc.min-size=2 \
    -Dapicurio.ccompat.use-canonical-hash=true \
    -Dapicurio.rest.deletion.group.enabled=true \
    -Dapicurio.rest.deletion.artifact.enabled=true \
    -Dapicurio.rest.deletion.artifact-version.enabled=true \
    -Dquarkus.log.console.color=false \
    ${EXTRA_JVM_OPTS[@]+"${EXTRA_JVM_OPTS[@]}"} \
    -jar "$jar" \
    </dev/null >"$LOG" 2>&1 9>&- &

  wait_ready "$port"
  pid="$(<"$PID_FILE")"
  elapsed=$(($(now_ms) - t0))
  log "ready at $(ccompat_url "$port") (pid $pid) after $((elapsed / 1000)).$(printf '%03d' $((elapsed % 1000)))s; log: $LOG"
  ccompat_url "$port"
}

do_status() {
  local pid
  if pid="$(running_pid)"; then
    printf 'running at %s (pid %s, version %s)\n' "$(ccompat_url "$(running_value port || echo '?')")" "$pid" \
      "$(running_value version || echo '?')"
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
  url) ccompat_url "$(effective_port)" ;;
  -h | --help | help) usage ;;
  *)
    usage
    exit 2
    ;;
  esac
}

main "$@"
