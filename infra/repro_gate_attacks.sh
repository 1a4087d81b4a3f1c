#!/usr/bin/env bash
# The approval-gate attacks of issue 12, by hand, against `make run` (after "stack up"):
#   bash infra/repro_gate_attacks.sh
set -u
cd "$(dirname "$0")/.."
source .stack/demo.env
T=temporal
step() { echo; echo "=== $*"; }

step "1. cross-run replay"
curl -s -X POST 'http://127.0.0.1:8088/debug/leak?connections=150' >/dev/null
sleep 11
remediate start pool_restart --target orders-db --reason "repro 1"
remediate pending --wait --timeout 30 >/dev/null
REMEDIATE_TOKEN=demo-bob-token remediate approve pool_restart-orders-db --reason "repro 1"
sleep 8
OLD_RUN=$($T workflow describe -w pool_restart-orders-db -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["workflowExecutionInfo"]["execution"]["runId"])')
echo "old run $OLD_RUN: $(remediate status pool_restart-orders-db | head -1)"
$T workflow show -w pool_restart-orders-db -r "$OLD_RUN" -o json > /tmp/old.json
python3 - <<'PY'
import json, base64
events = json.load(open("/tmp/old.json"))["events"]
for e in events:
    a = e.get("workflowExecutionUpdateAcceptedEventAttributes")
    if a:
        payload = a["acceptedRequest"]["input"]["args"]["payloads"][0]
        json.dump(json.loads(base64.b64decode(payload["data"])), open("/tmp/cap.json", "w"))
        print("captured the approve Update input:", open("/tmp/cap.json").read()[:120], "...")
PY
curl -s -X POST 'http://127.0.0.1:8088/debug/leak?connections=150' >/dev/null
sleep 11
remediate start pool_restart --target orders-db --reason "repro 1, next run"
echo "-- sent before the next run's gate opens:"
$T workflow update execute -w pool_restart-orders-db --name approve --input-file /tmp/cap.json 2>&1 | tail -2
remediate pending --wait --timeout 30 | head -3
echo "-- sent at its gate:"
$T workflow update execute -w pool_restart-orders-db --name approve --input-file /tmp/cap.json 2>&1 | tail -2
remediate status pool_restart-orders-db | head -1
grep -c "refused approve decision" .stack/logs/worker.log

step "2. the CLI cannot mint, even with the private key"
REMEDIATE_API_URL=http://127.0.0.1:9 REMEDIATE_APPROVAL_SIGNING_KEY=$(grep REMEDIATE_APPROVAL_SIGNING_KEY .stack/secrets | cut -d= -f2-) \
  REMEDIATE_TOKEN=demo-bob-token remediate approve pool_restart-orders-db; echo "exit $?"
REMEDIATE_TOKEN=demo-bob-token remediate reject pool_restart-orders-db --reason "repro done"
curl -s -X POST 'http://127.0.0.1:8088/debug/heal' >/dev/null || true

step "3. self-approval through a raw start naming someone else"
$T workflow start --type ReadOnlyWorkflow --task-queue remediation --workflow-id read_only-web \
  --input '{"target":"web","requested_by":"alice","parameters":{"mode":"app_flag"}}' >/dev/null
remediate pending --wait --timeout 30 | grep -A2 read_only-web | head -3
REMEDIATE_TOKEN=demo-bob-token remediate approve read_only-web --reason "bob alone"
sleep 3
echo "web writes: $(curl -s -o /dev/null -w '%{http_code}' -X POST http://127.0.0.1:8088/orders -H 'Content-Type: application/json' -d '{}') (2xx: not read-only)"
remediate status read_only-web | grep -E "requester_unverified|approval_counted|gate_opened" | head -3
REMEDIATE_TOKEN=demo-bob-token remediate reject read_only-web --reason "repro done"

step "4. kill switch resumed through raw Temporal"
remediate pause --reason "repro 4"
$T workflow update execute --workflow-id remediation-safety-remediation --name resume --input '{"by":"mallory"}' 2>&1 | tail -1
remediate resume; echo "alice's resume: exit $?"
remediate status remediation-safety-remediation
REMEDIATE_TOKEN=demo-bob-token remediate resume --reason "repro done"
remediate status remediation-safety-remediation | tail -2

step "5. a gate that reopens can be approved"
remediate start read_only --target orders-db --reason "repro 5"
REMEDIATE_TOKEN=demo-bob-token remediate approve read_only-orders-db --wait
sleep 3; remediate end-hold read_only-orders-db --reason first
REMEDIATE_TOKEN=demo-bob-token remediate reject read_only-orders-db --wait --reason "not yet"
sleep 3; remediate end-hold read_only-orders-db --reason again
REMEDIATE_TOKEN=demo-bob-token remediate approve read_only-orders-db --wait
sleep 6; remediate status read_only-orders-db | head -1

step "6. junk Updates do not grow a run's history"
curl -s -X POST 'http://127.0.0.1:8088/debug/leak?connections=150' >/dev/null; sleep 11
remediate start pool_restart --target orders-db --reason "repro 6"; remediate pending --wait --timeout 30 >/dev/null
BEFORE=$($T workflow show -w pool_restart-orders-db -o json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["events"]))')
for i in $(seq 1 10); do $T workflow update execute -w pool_restart-orders-db --name approve --input "{\"plan_id\":\"junk$i\",\"approver\":\"bob\"}" >/dev/null 2>&1; done
AFTER=$($T workflow show -w pool_restart-orders-db -o json | python3 -c 'import json,sys; e=json.load(sys.stdin)["events"]; print(len(e), sum("Update" in x["eventType"] for x in e))')
echo "history events before $BEFORE, after (events, update events) $AFTER"
REMEDIATE_TOKEN=demo-bob-token remediate reject pool_restart-orders-db --reason "repro done"
