#!/usr/bin/env bash
# A 3-broker Apache Kafka cluster in KRaft mode on 127.0.0.1 (each node broker+controller, a
# three-voter quorum), for fault tests with replication factor 3. Uses the jars `stack.sh install`
# resolved.
#   kafka-cluster.sh up | down | kill-node N | start-node N | bootstrap
# Ports: node N (1..3) listens on 29091+N (clients) and 29191+N (controller).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
KAFKA_VERSION=3.9.1
KAFKA_LIBS="${DRIFTLINE_KAFKA_LIBS:-$HOME/.cache/driftline/kafka-$KAFKA_VERSION/libs}"
STACK_DIR="${DRIFTLINE_STACK_DIR:-$HOME/.cache/driftline/stack}"
DIR="$STACK_DIR/kafka-cluster"
NODES=(1 2 3)
HEAP="${DRIFTLINE_KAFKA_CLUSTER_HEAP:--Xmx384m -Xms128m}"

port() { echo $((29091 + $1)); }
controller_port() { echo $((29191 + $1)); }
voters() { local v=(); for n in "${NODES[@]}"; do v+=("$n@127.0.0.1:$(controller_port "$n")"); done; (IFS=,; echo "${v[*]}"); }
bootstrap() { local b=(); for n in "${NODES[@]}"; do b+=("127.0.0.1:$(port "$n")"); done; (IFS=,; echo "${b[*]}"); }
pid_of() { [[ -f "$DIR/$1/pid" ]] && kill -0 "$(cat "$DIR/$1/pid")" 2>/dev/null && cat "$DIR/$1/pid"; }

configure() {
  local n=$1 d="$DIR/$1"
  mkdir -p "$d/logs"
  cat > "$d/server.properties" <<PROPS
process.roles=broker,controller
node.id=$n
controller.quorum.voters=$(voters)
listeners=PLAINTEXT://127.0.0.1:$(port "$n"),CONTROLLER://127.0.0.1:$(controller_port "$n")
advertised.listeners=PLAINTEXT://127.0.0.1:$(port "$n")
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$d/data
default.replication.factor=3
min.insync.replicas=2
offsets.topic.replication.factor=3
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
group.initial.rebalance.delay.ms=0
num.network.threads=1
num.io.threads=2
PROPS
  cp "$HERE/kafka-log4j.properties" "$d/log4j.properties"
}

start_node() {
  local n=$1 d="$DIR/$1"
  pid_of "$n" >/dev/null && return 0
  [[ -f "$d/server.properties" ]] || configure "$n"
  if [[ ! -f "$d/data/meta.properties" ]]; then
    java -cp "$KAFKA_LIBS/*" -Dkafka.logs.dir="$d/logs" -Dlog4j.configuration="file:$d/log4j.properties" \
      kafka.tools.StorageTool format -t "$(cat "$DIR/cluster.id")" -c "$d/server.properties" \
      >> "$d/logs/format.log" 2>&1
  fi
  setsid java $HEAP -XX:+UseG1GC -Dkafka.logs.dir="$d/logs" -Dlog4j.configuration="file:$d/log4j.properties" \
    -cp "$KAFKA_LIBS/*" kafka.Kafka "$d/server.properties" > "$d/logs/stdout.log" 2>&1 < /dev/null &
  echo $! > "$d/pid"
}

wait_ready() {
  for _ in $(seq 1 300); do
    if python3 - "$(bootstrap)" <<'PY' 2>/dev/null
import sys
from confluent_kafka.admin import AdminClient
metadata = AdminClient({"bootstrap.servers": sys.argv[1]}).list_topics(timeout=2)
sys.exit(0 if len(metadata.brokers) == 3 else 1)
PY
    then return 0; fi
    sleep 0.3
  done
  echo "kafka cluster not ready; see $DIR/*/logs" >&2
  return 1
}

case "${1:-}" in
  up)
    [[ -f "$KAFKA_LIBS/kafka_2.13-$KAFKA_VERSION.jar" ]] || { echo "run deploy/local/stack.sh install first" >&2; exit 1; }
    mkdir -p "$DIR"
    [[ -f "$DIR/cluster.id" ]] || java -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1 > "$DIR/cluster.id"
    for n in "${NODES[@]}"; do start_node "$n"; done
    wait_ready
    echo "kafka cluster up: $(bootstrap)" ;;
  down)
    for n in "${NODES[@]}"; do pid="$(pid_of "$n" || true)"; [[ -n "$pid" ]] && kill "$pid" || true; done
    for n in "${NODES[@]}"; do
      for _ in $(seq 1 100); do pid_of "$n" >/dev/null || break; sleep 0.2; done
      pid="$(pid_of "$n" || true)"; [[ -n "$pid" ]] && kill -9 "$pid" || true
    done
    rm -rf "$DIR" ;;
  kill-node) pid="$(pid_of "$2" || true)"; [[ -n "$pid" ]] && kill -9 "$pid"; rm -f "$DIR/$2/pid" ;;
  start-node) start_node "$2"; wait_ready ;;
  bootstrap) bootstrap ;;
  *) echo "usage: $0 up|down|kill-node N|start-node N|bootstrap" >&2; exit 2 ;;
esac
