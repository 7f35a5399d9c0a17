#!/usr/bin/env bash
# A local, single-node Apache Kafka (KRaft, broker+controller in one JVM) for development and tests.
#
#   deploy/local/kafka.sh start|stop|status
#
# The broker's jars come from Maven Central through deploy/local/kafka/pom.xml and are cached in
# .cache/kafka/lib (fetched once). State lives in var/kafka. Idempotent: `start` when our broker is
# already running does nothing; `stop` stops only the process whose pid file we wrote.
#
# Environment: KAFKA_PORT (default 9092), KAFKA_CONTROLLER_PORT (9093), KAFKA_HEAP (512m),
# KAFKA_STATE (var/kafka; another folder runs a second broker, as the fault suite does),
# KAFKA_START_TIMEOUT seconds (90).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cache="$root/.cache/kafka"
lib="$cache/lib"
state="${KAFKA_STATE:-$root/var/kafka}"  # KAFKA_STATE: a second, private broker
port="${KAFKA_PORT:-9092}"
controller_port="${KAFKA_CONTROLLER_PORT:-9093}"
heap="${KAFKA_HEAP:-512m}"
timeout="${KAFKA_START_TIMEOUT:-90}"
pidfile="$state/kafka.pid"
logfile="$state/kafka.log"
python="${PYTHON:-$root/.venv/bin/python}"

log() { printf 'kafka: %s\n' "$*" >&2; }

running() {
  [[ -f "$pidfile" ]] || return 1
  local pid
  pid=$(<"$pidfile")
  # The pid must still be a JVM running *our* server.properties: a recycled pid is not ours.
  [[ -r "/proc/$pid/cmdline" ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "$state/server.properties"
}

port_taken() {
  # bash's /dev/tcp: a successful connect means something is listening.
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

fetch() {
  if [[ -f "$lib/.complete" ]]; then return; fi
  command -v mvn >/dev/null || { log "mvn is required to fetch Kafka from Maven Central"; exit 1; }
  log "fetching Apache Kafka from Maven Central into $lib (once)"
  rm -rf "$lib"
  mvn -q -B -f "$root/deploy/local/kafka/pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$lib" >&2
  touch "$lib/.complete"
}

write_config() {
  mkdir -p "$state/data"
  cat >"$state/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$controller_port
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$state/data
num.partitions=3
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
default.replication.factor=1
min.insync.replicas=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
delete.topic.enable=true
log.retention.hours=24
log.segment.bytes=67108864
PROPS
  cat >"$state/log4j2.properties" <<'PROPS'
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka.server.KafkaRaftServer
logger.kafka.level = info
PROPS
}

format_once() {
  if [[ -f "$state/data/meta.properties" ]]; then return; fi
  log "formatting KRaft storage in $state/data"
  java -cp "$lib/*" -Dlog4j2.configurationFile="$state/log4j2.properties" \
    kafka.tools.StorageTool format -t "$(cluster_id)" -c "$state/server.properties" --standalone \
    >>"$logfile" 2>&1 || { log "storage format failed; see $logfile"; tail -20 "$logfile" >&2; exit 1; }
}

cluster_id() {
  # Any 16 random bytes, base64url without padding: the form Kafka expects.
  head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n'
}

wait_ready() {
  [[ -x "$python" ]] || { log "$python not found: run 'make setup' first"; exit 1; }
  if ! (cd "$root" && "$python" -m tools.kafka_ready "127.0.0.1:$port" "$timeout"); then
    log "broker did not answer within ${timeout}s; last lines of $logfile:"
    tail -30 "$logfile" >&2
    exit 1
  fi
}

start() {
  if running; then log "already running (pid $(<"$pidfile")) on 127.0.0.1:$port"; return; fi
  for p in "$port" "$controller_port"; do
    if port_taken "$p"; then
      variable=KAFKA_PORT
      [[ "$p" == "$controller_port" ]] && variable=KAFKA_CONTROLLER_PORT
      log "port $p on 127.0.0.1 is taken by another process; set $variable to a free one"
      exit 1
    fi
  done
  command -v java >/dev/null || { log "java (17+) is required"; exit 1; }
  fetch
  write_config
  format_once
  log "starting on 127.0.0.1:$port (log: $logfile)"
  # setsid: the broker must not die with the shell that started it, nor take Ctrl-C meant for it.
  KAFKA_HEAP_OPTS="-Xms$heap -Xmx$heap" setsid java "-Xms$heap" "-Xmx$heap" -XX:+UseG1GC \
    -Dlog4j2.configurationFile="$state/log4j2.properties" \
    -cp "$lib/*" kafka.Kafka "$state/server.properties" >>"$logfile" 2>&1 </dev/null &
  echo $! >"$pidfile"
  wait_ready
  log "ready"
}

stop() {
  if ! running; then log "not running"; rm -f "$pidfile"; return; fi
  local pid
  pid=$(<"$pidfile")
  log "stopping pid $pid"
  kill -TERM "$pid"
  for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; log "stopped"; return; }
    sleep 0.5
  done
  log "did not stop in 30s; killing"
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$pidfile"
}

status() {
  if running; then echo "kafka: running (pid $(<"$pidfile")) on 127.0.0.1:$port"; else echo "kafka: stopped"; return 3; fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  fetch) fetch ;;
  *) echo "usage: $0 start|stop|status|fetch" >&2; exit 2 ;;
esac
