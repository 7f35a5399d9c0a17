#!/usr/bin/env bash
# `make run`: the whole path on one machine. Starts Kafka (unless it runs), migrates the embedded
# SQLite store, creates an API key for org_demo, starts a demo receiver and the service, registers
# a subscription to the receiver, produces the seed page's three examples (and one tagged by
# orchestration), prints what to try next, and shows the receiver's lines until Ctrl-C. On exit it
# stops everything it started (Kafka only if it started it).
#
# Environment: WEBHOOKS_HTTP_PORT (8080), WEBHOOKS_DATABASE_URL (sqlite:///var/webhooks.db), and
# every other WEBHOOKS_* variable, as for `identity-webhooks serve`.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
bin="$root/.venv/bin"
iw="$bin/identity-webhooks"
py="$bin/python"
demo="$root/var/demo"
port="${WEBHOOKS_HTTP_PORT:-8080}"
api="http://127.0.0.1:$port"
installed_by="deploy/local/demo.sh"
export WEBHOOKS_HTTP_PORT="$port"
# People read these logs: the commands' warnings in the terminal, the service's in its log file.
export WEBHOOKS_LOG_FORMAT=console

say() { printf 'demo: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

[[ -x "$iw" ]] || die "$iw not found: run 'make setup' first"
command -v curl >/dev/null || die "curl is required"
if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
  die "port $port on 127.0.0.1 is taken; set WEBHOOKS_HTTP_PORT to a free one"
fi

kafka_started=false
receiver_pid=""
service_pid=""
tail_pid=""
key=""
subscription=""

stop_pid() {
  local pid=$1 name=$2
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  # The service drains in-flight attempts for WEBHOOKS_SHUTDOWN_GRACE (10 s) before it exits.
  for _ in $(seq 1 300); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.1
  done
  say "$name (pid $pid) did not stop in 30 s; killing it"
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  echo >&2
  say "stopping"
  stop_pid "$tail_pid" tail
  if [[ -n "$subscription" && -n "$service_pid" ]] && kill -0 "$service_pid" 2>/dev/null; then
    # So the next run's events do not fan out to a receiver that is gone.
    curl -fsS -m 5 -o /dev/null -X DELETE -H "Authorization: Bearer $key" \
      "$api/api/identity/webhooks/$subscription" || true
  fi
  stop_pid "$service_pid" service
  stop_pid "$receiver_pid" receiver
  if $kafka_started; then deploy/local/kafka.sh stop || true; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$demo"
rm -f "$demo/receiver.url" "$demo/secret"
( umask 077 && : >"$demo/secret" )

if ! deploy/local/kafka.sh status >/dev/null 2>&1; then
  deploy/local/kafka.sh start
  kafka_started=true
fi
# The consumer must find its topics at start-up: it would see ones created later only at its next
# metadata refresh, minutes away.
"$py" -m tools.topics >&2

"$iw" migrate >&2
key=$("$iw" api-key create --org org_demo --name demo | tail -1)
[[ "$key" == qe_key_* ]] || die "could not create an API key"

# setsid: Ctrl-C reaches this script alone, which then stops the children in order (the
# subscription is deleted while the service still answers).
setsid "$py" -m tools.demo_receiver --secret-file "$demo/secret" --url-file "$demo/receiver.url" \
  >"$demo/receiver.log" 2>&1 &
receiver_pid=$!
for _ in $(seq 1 100); do
  [[ -s "$demo/receiver.url" ]] && break
  kill -0 "$receiver_pid" 2>/dev/null || { cat "$demo/receiver.log" >&2; die "the receiver did not start"; }
  sleep 0.1
done
[[ -s "$demo/receiver.url" ]] || die "the receiver did not start in 10 s"
receiver_url=$(<"$demo/receiver.url")

say "starting the service on $api (log: var/demo/service.log)"
WEBHOOKS_ALLOW_PRIVATE_TARGETS=true setsid "$iw" serve \
  >"$demo/service.log" 2>&1 &
service_pid=$!
ready=false
for _ in $(seq 1 300); do
  if ! kill -0 "$service_pid" 2>/dev/null; then
    tail -30 "$demo/service.log" >&2
    die "the service exited; see var/demo/service.log"
  fi
  if curl -fsS -m 2 -o /dev/null "$api/readyz" 2>/dev/null; then ready=true; break; fi
  sleep 0.2
done
$ready || { tail -30 "$demo/service.log" >&2; die "$api/readyz did not answer 200 in 60 s"; }

# Subscriptions an earlier run left behind (killed before it could delete them) point at
# receivers that are gone.
curl -fsS -m 10 -H "Authorization: Bearer $key" "$api/api/identity/webhooks?limit=100" |
  "$py" -c '
import json, sys
for row in json.load(sys.stdin)["rows"]:
    if row.get("installedBy") == sys.argv[1]:
        print(row["id"])
' "$installed_by" | while read -r stale; do
  curl -fsS -m 10 -o /dev/null -X DELETE -H "Authorization: Bearer $key" \
    "$api/api/identity/webhooks/$stale" || true
done || say "could not list the subscriptions of earlier runs; going on"

created=$(curl -sS -m 10 -X POST -H "Authorization: Bearer $key" \
  -H 'Content-Type: application/json' \
  -d "{\"url\": \"$receiver_url\", \"installedBy\": \"$installed_by\", \"events\": [\"verification.created\", \"customer.kyc_updated\", \"review.overridden\"]}" \
  -w '\n%{http_code}' "$api/api/identity/webhooks")
[[ "${created##*$'\n'}" == 201 ]] || die "registering the subscription failed: ${created%$'\n'*}"
# The secret goes from the API's answer straight into the receiver's file, never to the terminal.
subscription=$(printf '%s' "${created%$'\n'*}" | "$py" -c '
import json, os, sys
answer = json.load(sys.stdin)
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_TRUNC)
os.write(fd, answer["secret"].encode() + b"\n")
os.close(fd)
print(answer["id"])
' "$demo/secret")

"$py" -m tools.produce --count 3 >&2
"$py" -m tools.produce --count 1 --event verification.created --sibling-service orchestration >&2

cat <<EOF

  identity-webhooks is running on $api (log: var/demo/service.log)

  API key (org_demo):  $key
  console:             $api/console   (paste the API key to sign in)
  demo receiver:       $receiver_url   (subscription $subscription, all three events)

  Try:
    curl -s -H "Authorization: Bearer $key" $api/api/identity/webhooks
    curl -s -X POST -H "Authorization: Bearer $key" $api/api/identity/webhooks/$subscription/test
    curl -s $api/metrics | grep '^webhooks_'
  More events:
    .venv/bin/python -m tools.produce --count 100 --rate 20

  Deliveries as the receiver sees them (Ctrl-C stops everything):

EOF

tail -n +1 -f "$demo/receiver.log" &
tail_pid=$!
# Returns when the service exits on its own, or at once when a signal runs the traps.
wait -n "$tail_pid" "$service_pid" || true
if ! kill -0 "$service_pid" 2>/dev/null; then
  tail -30 "$demo/service.log" >&2
  die "the service exited; see var/demo/service.log"
fi
