#!/usr/bin/env bash
# Local service stack for driftline: Kafka (KRaft, from Maven jars), Redis, Prometheus and
# Alertmanager, run as plain processes on 127.0.0.1 (no Docker, no systemd).
#
#   stack.sh install                  apt-get the Debian packages / resolve Kafka jars, if missing
#   stack.sh up   [service...]        start (default: all) and wait until each really answers
#   stack.sh down [--wipe] [service...]   stop (default: all); --wipe also deletes their state
#   stack.sh status                   one line per service; exit 0 only if all are up and answering
#   stack.sh env                      `export NAME=value` lines for tests: eval "$(stack.sh env)"
#
# Services: kafka redis prometheus alertmanager. See deploy/local/README.md.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

STACK_DIR="${DRIFTLINE_STACK_DIR:-$HOME/.cache/driftline/stack}"
KAFKA_PORT="${DRIFTLINE_KAFKA_PORT:-19092}"
KAFKA_CONTROLLER_PORT="${DRIFTLINE_KAFKA_CONTROLLER_PORT:-19093}"
REDIS_PORT="${DRIFTLINE_REDIS_PORT:-16379}"
PROMETHEUS_PORT="${DRIFTLINE_PROMETHEUS_PORT:-19090}"
ALERTMANAGER_PORT="${DRIFTLINE_ALERTMANAGER_PORT:-19094}"
METRICS_PORT="${DRIFTLINE_METRICS_PORT:-18000}"
WEBHOOK_PORT="${DRIFTLINE_WEBHOOK_PORT:-18080}"
WEBHOOK_TOKEN="${DRIFTLINE_WEBHOOK_TOKEN:-dev-token}"

KAFKA_VERSION=3.9.1
KAFKA_LIBS="${DRIFTLINE_KAFKA_LIBS:-$HOME/.cache/driftline/kafka-$KAFKA_VERSION/libs}"
KAFKA_HEAP="${DRIFTLINE_KAFKA_HEAP:--Xmx768m -Xms256m}"
START_TIMEOUT="${DRIFTLINE_STACK_TIMEOUT:-90}"
STOP_TIMEOUT="${DRIFTLINE_STACK_STOP_TIMEOUT:-30}"
PYTHON="${PYTHON:-python3}"

ALL_SERVICES=(kafka redis prometheus alertmanager)

log() { printf '[stack] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# The state dir must be absolute: it ends up in config files and is matched against cmdlines.
case "$STACK_DIR" in /*) ;; *) STACK_DIR="$PWD/$STACK_DIR" ;; esac

# ---------------------------------------------------------------- per-service facts

svc_dir() { printf '%s/%s' "$STACK_DIR" "$1"; }
pid_file() { printf '%s/%s/%s.pid' "$STACK_DIR" "$1" "$1"; }

svc_port() {
  case "$1" in
    kafka) echo "$KAFKA_PORT" ;;
    redis) echo "$REDIS_PORT" ;;
    prometheus) echo "$PROMETHEUS_PORT" ;;
    alertmanager) echo "$ALERTMANAGER_PORT" ;;
  esac
}

svc_logs() { # the files worth showing when a service fails
  local d; d="$(svc_dir "$1")"
  case "$1" in
    kafka) echo "$d/logs/server.log $d/logs/stdout.log" ;;
    *) echo "$d/$1.log" ;;
  esac
}

check_service_names() {
  local s ok
  for s in "$@"; do
    ok=no
    for a in "${ALL_SERVICES[@]}"; do [[ "$s" == "$a" ]] && ok=yes; done
    [[ $ok == yes ]] || die "unknown service '$s' (expected: ${ALL_SERVICES[*]})"
  done
}

# ---------------------------------------------------------------- process helpers

# Print the pid of the running service, or return 1. The cmdline check guards against a stale
# pid file whose pid has since been reused by an unrelated process (zombies have no cmdline).
running_pid() {
  local svc="$1" pf pid cmd marker
  pf="$(pid_file "$svc")"
  [[ -s "$pf" ]] || return 1
  pid="$(tr -dc '0-9' <"$pf")"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
  cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
  case "$svc" in
    redis) marker="127.0.0.1:$REDIS_PORT" ;; # redis rewrites its title: "redis-server 127.0.0.1:P"
    *) marker="$(svc_dir "$svc")/" ;;
  esac
  [[ "$cmd" == *"$marker"* ]] || return 1
  echo "$pid"
}

port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

HAVE_CONFLUENT=""
kafka_metadata_ok() {
  if [[ -z "$HAVE_CONFLUENT" ]]; then
    if "$PYTHON" -c 'import confluent_kafka' 2>/dev/null; then HAVE_CONFLUENT=yes; else
      HAVE_CONFLUENT=no
      log "confluent_kafka not importable by $PYTHON: Kafka readiness = port check only"
    fi
  fi
  [[ $HAVE_CONFLUENT == yes ]] || return 0
  "$PYTHON" - "127.0.0.1:$KAFKA_PORT" 2>/dev/null <<'PY'
import sys
from confluent_kafka.admin import AdminClient
admin = AdminClient({"bootstrap.servers": sys.argv[1], "socket.timeout.ms": 3000, "log_level": 0})
md = admin.list_topics(timeout=3)
sys.exit(0 if md.brokers else 1)
PY
}

answers() {
  local port; port="$(svc_port "$1")"
  case "$1" in
    kafka) port_open "$port" && kafka_metadata_ok ;;
    redis) [[ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" == PONG ]] ;;
    prometheus | alertmanager) curl -fsS -m 2 -o /dev/null "http://127.0.0.1:$port/-/ready" 2>/dev/null ;;
  esac
}

show_logs() {
  local f
  for f in $(svc_logs "$1"); do
    [[ -s "$f" ]] || continue
    printf '%s\n' "----- last 40 lines of $f -----" >&2
    tail -n 40 "$f" >&2
  done
}

# Start "$@" detached (own session, stdin closed, output to $out); it writes its own pid file.
spawn() {
  local pf="$1" out="$2"; shift 2
  rm -f "$pf"
  printf '==== %s stack.sh: starting %s\n' "$(date '+%F %T')" "$1" >>"$out"
  # 9>&- : do not leak the stack lock (see with_lock) into the long-running service.
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pf" "$@" </dev/null >>"$out" 2>&1 9>&- &
  local i
  for i in $(seq 50); do [[ -s "$pf" ]] && return 0; sleep 0.1; done
  die "could not start: $*"
}

render() { # render TEMPLATE OUT KEY=VALUE... : replace @@KEY@@ placeholders
  local text kv
  text="$(<"$1")"
  for kv in "${@:3}"; do text="${text//@@${kv%%=*}@@/"${kv#*=}"}"; done
  printf '%s\n' "$text" >"$2.tmp" && mv "$2.tmp" "$2"
}

require_free_port() {
  if port_open "$2"; then
    die "$1: port $2 on 127.0.0.1 is already in use by another process (see: ss -ltnp 'sport = :$2')"
  fi
}

# ---------------------------------------------------------------- starting

start_kafka() {
  local d; d="$(svc_dir kafka)"
  [[ -f "$KAFKA_LIBS/kafka_2.13-$KAFKA_VERSION.jar" ]] ||
    die "kafka: jars missing in $KAFKA_LIBS; run: $0 install"
  command -v java >/dev/null || die "kafka: java not found; run: $0 install"
  require_free_port kafka "$KAFKA_PORT"
  require_free_port kafka "$KAFKA_CONTROLLER_PORT"
  mkdir -p "$d/logs"
  render "$HERE/kafka-server.properties" "$d/server.properties" \
    "KAFKA_PORT=$KAFKA_PORT" "KAFKA_CONTROLLER_PORT=$KAFKA_CONTROLLER_PORT" "KAFKA_DATA_DIR=$d/data"
  cp "$HERE/kafka-log4j.properties" "$d/log4j.properties"
  local -a jvm=(-Dlog4j.configuration="file:$d/log4j.properties" -Djava.awt.headless=true
    -cp "$KAFKA_LIBS/*")
  # StorageTool logs go to logs/tools/, so logs/server.log holds only the broker's own log.
  local -a tool=(-Dkafka.logs.dir="$d/logs/tools" "${jvm[@]}")

  # Format the KRaft storage once; again only if the data dir went missing (same cluster id).
  if [[ ! -f "$d/data/meta.properties" ]]; then
    local cid
    if [[ -s "$d/cluster.id" ]]; then cid="$(<"$d/cluster.id")"; else
      cid="$(java "${tool[@]}" kafka.tools.StorageTool random-uuid 2>>"$d/logs/format.log" | tail -n 1)"
      [[ -n "$cid" ]] || die "kafka: StorageTool random-uuid failed (see $d/logs/format.log)"
      echo "$cid" >"$d/cluster.id"
    fi
    log "kafka: formatting $d/data (cluster id $cid)"
    java "${tool[@]}" kafka.tools.StorageTool format -t "$cid" -c "$d/server.properties" \
      >>"$d/logs/format.log" 2>&1 || { tail -n 20 "$d/logs/format.log" >&2; die "kafka: format failed"; }
  fi

  # shellcheck disable=SC2086  # KAFKA_HEAP is a list of JVM flags
  spawn "$(pid_file kafka)" "$d/logs/stdout.log" java $KAFKA_HEAP \
    -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
    -XX:+ExitOnOutOfMemoryError -Dkafka.logs.dir="$d/logs" "${jvm[@]}" kafka.Kafka "$d/server.properties"
}

start_redis() {
  local d; d="$(svc_dir redis)"
  command -v redis-server >/dev/null || die "redis: redis-server not found; run: $0 install"
  require_free_port redis "$REDIS_PORT"
  mkdir -p "$d/data"
  rm -f "$(pid_file redis)"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --daemonize yes \
    --pidfile "$(pid_file redis)" --dir "$d/data" --save '' --appendonly no \
    --logfile "$d/redis.log" 9>&- || { show_logs redis; die "redis: redis-server failed to start"; }
  local i
  for i in $(seq 50); do [[ -s "$(pid_file redis)" ]] && return 0; sleep 0.1; done
  show_logs redis
  die "redis: no pid file after start"
}

start_prometheus() {
  local d; d="$(svc_dir prometheus)"
  command -v prometheus >/dev/null || die "prometheus: binary not found; run: $0 install"
  require_free_port prometheus "$PROMETHEUS_PORT"
  mkdir -p "$d/data" "$STACK_DIR/rules"
  render "$HERE/prometheus.yml" "$d/prometheus.yml" "RULES_DIR=$STACK_DIR/rules" \
    "ALERTMANAGER_PORT=$ALERTMANAGER_PORT" "METRICS_PORT=$METRICS_PORT" \
    "PROMETHEUS_PORT=$PROMETHEUS_PORT"
  spawn "$(pid_file prometheus)" "$d/prometheus.log" prometheus \
    --config.file="$d/prometheus.yml" --storage.tsdb.path="$d/data" \
    --storage.tsdb.retention.time=2d --web.listen-address="127.0.0.1:$PROMETHEUS_PORT" \
    --web.enable-lifecycle
}

start_alertmanager() {
  local d; d="$(svc_dir alertmanager)"
  command -v prometheus-alertmanager >/dev/null ||
    die "alertmanager: prometheus-alertmanager not found; run: $0 install"
  require_free_port alertmanager "$ALERTMANAGER_PORT"
  mkdir -p "$d/data"
  (umask 077 && printf '%s' "$WEBHOOK_TOKEN" >"$d/webhook.token")
  render "$HERE/alertmanager.yml" "$d/alertmanager.yml" "WEBHOOK_PORT=$WEBHOOK_PORT" \
    "WEBHOOK_TOKEN_FILE=$d/webhook.token"
  # --cluster.listen-address= (empty) disables HA gossip; otherwise it binds 0.0.0.0:9094.
  spawn "$(pid_file alertmanager)" "$d/alertmanager.log" prometheus-alertmanager \
    --config.file="$d/alertmanager.yml" --storage.path="$d/data" \
    --web.listen-address="127.0.0.1:$ALERTMANAGER_PORT" --cluster.listen-address=
}

wait_ready() {
  local svc="$1" start=$SECONDS
  while ((SECONDS - start < START_TIMEOUT)); do
    if answers "$svc"; then
      log "$svc ready on 127.0.0.1:$(svc_port "$svc") (pid $(running_pid "$svc" || echo '?'))"
      return 0
    fi
    if ! running_pid "$svc" >/dev/null; then
      log "ERROR: $svc exited during startup"
      show_logs "$svc"
      return 1
    fi
    sleep 0.5
  done
  log "ERROR: $svc did not answer on 127.0.0.1:$(svc_port "$svc") within ${START_TIMEOUT}s"
  show_logs "$svc"
  return 1
}

# ---------------------------------------------------------------- stopping

stop_service() {
  local svc="$1" pid start
  if ! pid="$(running_pid "$svc")"; then
    rm -f "$(pid_file "$svc")"
    log "$svc not running"
    return 0
  fi
  log "stopping $svc (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  start=$SECONDS
  while running_pid "$svc" >/dev/null; do
    if ((SECONDS - start >= STOP_TIMEOUT)); then
      log "$svc did not stop within ${STOP_TIMEOUT}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.5
      break
    fi
    sleep 0.2
  done
  rm -f "$(pid_file "$svc")"
}

# ---------------------------------------------------------------- commands

with_lock() { # serialise concurrent up/down on the same state dir
  mkdir -p "$STACK_DIR"
  exec 9>"$STACK_DIR/.lock"
  flock -w 300 9 || die "timed out waiting for $STACK_DIR/.lock"
}

cmd_install() {
  local -a pkgs=()
  command -v redis-server >/dev/null && command -v redis-cli >/dev/null || pkgs+=(redis-server)
  command -v prometheus >/dev/null || pkgs+=(prometheus)
  command -v prometheus-alertmanager >/dev/null || pkgs+=(prometheus-alertmanager)
  command -v java >/dev/null || pkgs+=(default-jre-headless)
  command -v mvn >/dev/null || pkgs+=(maven)
  command -v curl >/dev/null || pkgs+=(curl)
  if ((${#pkgs[@]})); then
    local sudo=""
    ((EUID == 0)) || sudo=sudo
    log "apt-get install ${pkgs[*]}"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${pkgs[@]}"
  else
    log "Debian packages present (redis-server, prometheus, prometheus-alertmanager)"
  fi
  if [[ -f "$KAFKA_LIBS/kafka_2.13-$KAFKA_VERSION.jar" ]]; then
    log "Kafka $KAFKA_VERSION jars present in $KAFKA_LIBS"
  else
    log "resolving Kafka $KAFKA_VERSION jars into $KAFKA_LIBS (maven)"
    mkdir -p "$KAFKA_LIBS"
    mvn -q -B -Dstyle.color=never -f "$HERE/pom.xml" dependency:copy-dependencies -DoutputDirectory="$KAFKA_LIBS"
    [[ -f "$KAFKA_LIBS/kafka_2.13-$KAFKA_VERSION.jar" ]] || die "maven did not produce the Kafka jar"
  fi
}

cmd_up() {
  local -a svcs=("$@") waiting=()
  ((${#svcs[@]})) || svcs=("${ALL_SERVICES[@]}")
  check_service_names "${svcs[@]}"
  with_lock
  local svc
  for svc in "${svcs[@]}"; do
    if running_pid "$svc" >/dev/null; then
      log "$svc already running"
    else
      log "starting $svc"
      "start_$svc"
    fi
    waiting+=("$svc")
  done
  for svc in "${waiting[@]}"; do wait_ready "$svc" || die "$svc failed to start"; done
}

cmd_down() {
  local wipe=no
  local -a svcs=()
  for a in "$@"; do
    case "$a" in --wipe) wipe=yes ;; *) svcs+=("$a") ;; esac
  done
  ((${#svcs[@]})) || svcs=("${ALL_SERVICES[@]}")
  check_service_names "${svcs[@]}"
  with_lock
  local svc
  for svc in "${svcs[@]}"; do stop_service "$svc"; done
  if [[ $wipe == yes ]]; then
    for svc in "${svcs[@]}"; do
      log "wiping $(svc_dir "$svc")"
      rm -rf "$(svc_dir "$svc")"
      if [[ $svc == prometheus ]]; then rm -rf "$STACK_DIR/rules"; fi
    done
  fi
  return 0
}

cmd_status() {
  local svc pid state rc=0
  printf '%-13s %-9s %-8s %-22s %s\n' SERVICE STATE PID ADDRESS STATE_DIR
  for svc in "${ALL_SERVICES[@]}"; do
    if pid="$(running_pid "$svc")"; then
      if answers "$svc"; then state=up; else state=starting; rc=3; fi
    else
      pid=-; state=stopped; rc=3
    fi
    printf '%-13s %-9s %-8s %-22s %s\n' "$svc" "$state" "$pid" \
      "127.0.0.1:$(svc_port "$svc")" "$(svc_dir "$svc")"
  done
  return $rc
}

cmd_env() {
  local -a vars=(
    "DRIFTLINE_STACK_DIR=$STACK_DIR"
    "DRIFTLINE_KAFKA_PORT=$KAFKA_PORT"
    "DRIFTLINE_KAFKA_CONTROLLER_PORT=$KAFKA_CONTROLLER_PORT"
    "DRIFTLINE_KAFKA_BOOTSTRAP=127.0.0.1:$KAFKA_PORT"
    "DRIFTLINE_REDIS_PORT=$REDIS_PORT"
    "DRIFTLINE_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0"
    "DRIFTLINE_PROMETHEUS_PORT=$PROMETHEUS_PORT"
    "DRIFTLINE_PROMETHEUS_URL=http://127.0.0.1:$PROMETHEUS_PORT"
    "DRIFTLINE_PROMETHEUS_RULES_DIR=$STACK_DIR/rules"
    "DRIFTLINE_ALERTMANAGER_PORT=$ALERTMANAGER_PORT"
    "DRIFTLINE_ALERTMANAGER_URL=http://127.0.0.1:$ALERTMANAGER_PORT"
    "DRIFTLINE_METRICS_PORT=$METRICS_PORT"
    "DRIFTLINE_WEBHOOK_PORT=$WEBHOOK_PORT"
    "DRIFTLINE_WEBHOOK_TOKEN=$WEBHOOK_TOKEN"
  )
  local kv
  for kv in "${vars[@]}"; do printf 'export %s=%q\n' "${kv%%=*}" "${kv#*=}"; done
}

usage() { sed -n '2,11s/^# \{0,1\}//p' "$0"; }

main() {
  local cmd="${1:-}"
  (($#)) && shift
  case "$cmd" in
    install) cmd_install ;;
    up) cmd_up "$@" ;;
    down) cmd_down "$@" ;;
    status) cmd_status ;;
    env) cmd_env ;;
    -h | --help | help) usage ;;
    *) usage >&2; exit 2 ;;
  esac
}

main "$@"
