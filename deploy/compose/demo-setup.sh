#!/bin/sh
# docker-compose.yml's demo-setup: what deploy/local/demo.sh does once the service is ready, in
# the demo image (identity-webhooks, python, curl, the producer of tools/). Replaces the
# subscription an earlier `up` made, so the receiver holds the one secret that signs what it
# gets. Prints the API key last.
set -eu
installed_by=deploy/docker-compose.yml

key=$(identity-webhooks api-key create --org org_demo --name compose | tail -1)
auth="Authorization: Bearer $key"

curl -fsS "$DEMO_API/api/identity/webhooks?limit=100" -H "$auth" |
  python -c '
import json, sys
for row in json.load(sys.stdin)["rows"]:
    if row.get("installedBy") == sys.argv[1]:
        print(row["id"])
' "$installed_by" | while read -r old; do
  curl -fsS -o /dev/null -X DELETE -H "$auth" "$DEMO_API/api/identity/webhooks/$old"
done

body=$(printf '{"url": "%s", "installedBy": "%s", "events": ["verification.created", "customer.kyc_updated", "review.overridden"]}' \
  "$DEMO_RECEIVER_URL" "$installed_by")
# The secret goes from the API's answer straight into the receiver's file, never to the log.
curl -fsS -X POST -H "$auth" -H 'Content-Type: application/json' -d "$body" \
  "$DEMO_API/api/identity/webhooks" |
  python -c '
import json, os, sys
answer = json.load(sys.stdin)
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
os.write(fd, answer["secret"].encode() + b"\n")
os.close(fd)
print("subscription", answer["id"], "->", answer["url"])
' /demo/secret

python -m tools.produce --count 3
echo "API key for org_demo (curl -H \"Authorization: Bearer <key>\" localhost:8080/api/identity/webhooks):"
echo "$key"
