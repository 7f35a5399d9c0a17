#!/usr/bin/env bash
# With `make run` going in another terminal: produces N events (default 20,000) for the demo org
# at full speed and times how long until /metrics counts them all sent. The figure includes
# producing, and the demo receiver printing a line per delivery.
set -euo pipefail
n=${1:-20000}
cd "$(dirname "$0")/../.."
metrics=${METRICS_URL:-http://127.0.0.1:8080/metrics}
sent() { curl -sf "$metrics" | awk '/^webhooks_deliveries_total\{.*outcome="sent"/ {s+=$2} END {printf "%d", s}'; }
before=$(sent)
start=$(date +%s.%N)
WEBHOOKS_LOG_LEVEL=warning .venv/bin/python -m tools.produce --count "$n" --org org_demo
while [ "$(sent)" -lt $((before + n)) ]; do sleep 0.2; done
end=$(date +%s.%N)
awk -v n="$n" -v s="$start" -v e="$end" \
  'BEGIN { printf "delivered %d in %.1f s: %.0f deliveries/s\n", n, e - s, n / (e - s) }'
