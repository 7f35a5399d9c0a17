#!/usr/bin/env bash
# Runs a command with the local Kafka and PostgreSQL up, and stops afterwards whichever of them
# this script started (a developer's already-running broker is left alone), even on failure.
# Exports the addresses the test suite reads. SERVICES="kafka" picks a subset.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

started=()
cleanup() {
  local rc=$?
  for svc in "${started[@]}"; do "$here/$svc.sh" stop || true; done
  exit "$rc"
}
trap cleanup EXIT INT TERM

for svc in ${SERVICES:-kafka postgres}; do
  if ! "$here/$svc.sh" status >/dev/null 2>&1; then
    "$here/$svc.sh" start
    started+=("$svc")
  fi
done

export WEBHOOKS_TEST_KAFKA="${WEBHOOKS_TEST_KAFKA:-127.0.0.1:${KAFKA_PORT:-9092}}"
export WEBHOOKS_TEST_POSTGRES="${WEBHOOKS_TEST_POSTGRES:-$("$here/postgres.sh" url)}"
"$@"
