#!/usr/bin/env bash
# A 3-node Redis Cluster on 127.0.0.1 (no replicas), for running the suite against Redis Cluster.
#   redis-cluster.sh up | down | env
# Ports: DRIFTLINE_REDIS_CLUSTER_PORTS (default "17001 17002 17003"); state under
# $DRIFTLINE_STACK_DIR/redis-cluster. Idempotent: `up` on a running cluster does nothing.
set -euo pipefail
STACK_DIR="${DRIFTLINE_STACK_DIR:-$HOME/.cache/driftline/stack}"
DIR="$STACK_DIR/redis-cluster"
read -r -a PORTS <<< "${DRIFTLINE_REDIS_CLUSTER_PORTS:-17001 17002 17003}"

ping() { redis-cli -p "$1" ping 2>/dev/null | grep -q PONG; }

up() {
  mkdir -p "$DIR"
  for port in "${PORTS[@]}"; do
    ping "$port" && continue
    mkdir -p "$DIR/$port"
    redis-server --port "$port" --bind 127.0.0.1 --daemonize yes \
      --dir "$DIR/$port" --pidfile "$DIR/$port/redis.pid" --logfile "$DIR/$port/redis.log" \
      --cluster-enabled yes --cluster-config-file "$DIR/$port/nodes.conf" \
      --cluster-node-timeout 5000 --save '' --appendonly no
  done
  for port in "${PORTS[@]}"; do
    for _ in $(seq 1 100); do ping "$port" && break; sleep 0.1; done
    ping "$port" || { echo "redis cluster node $port did not start" >&2; tail -20 "$DIR/$port/redis.log" >&2; exit 1; }
  done
  if ! redis-cli -p "${PORTS[0]}" cluster info | grep -q 'cluster_state:ok'; then
    if [[ "$(redis-cli -p "${PORTS[0]}" cluster info | sed -n 's/^cluster_known_nodes:\([0-9]*\).*/\1/p')" -lt "${#PORTS[@]}" ]]; then
      redis-cli --cluster create $(printf '127.0.0.1:%s ' "${PORTS[@]}") --cluster-replicas 0 --cluster-yes >/dev/null
    fi
    for _ in $(seq 1 100); do
      redis-cli -p "${PORTS[0]}" cluster info | grep -q 'cluster_state:ok' && break
      sleep 0.1
    done
  fi
  redis-cli -p "${PORTS[0]}" cluster info | grep -q 'cluster_state:ok' || { echo "cluster not ok" >&2; exit 1; }
  echo "redis cluster up on ports ${PORTS[*]}"
}

down() {
  for port in "${PORTS[@]}"; do
    ping "$port" && redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
  done
  rm -rf "$DIR"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  env) echo "export DRIFTLINE_REDIS_URL=redis+cluster://127.0.0.1:${PORTS[0]}/0" ;;
  *) echo "usage: $0 up|down|env" >&2; exit 2 ;;
esac
