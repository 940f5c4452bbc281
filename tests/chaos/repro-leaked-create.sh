#!/usr/bin/env bash
# Reproducer (docs/reliability.md, "Chaos soak"): shells whose Create response psfleet never
# read are leaked, and nothing in psfleet's state knows them.
#
#   1. reset: a host that cuts every service response off mid-body. psfleet retries the
#      reset three times; each attempt's Create made a shell the client never learned the
#      id of, so 3 shells stay open (until the host's IdleTimeout: 2 h by default on Windows).
#   2. kill: psfleet SIGKILLed while Creates are in flight; `--resume last
#      --rerun-interrupted` reaps the shells the journal recorded (shell_opened lines) but not
#      those whose Create was in flight; `psfleet cleanup` (it enumerates the user's shells)
#      deletes them.
#
#   PSFLEET_BIN=target/release/psfleet tests/chaos/repro-leaked-create.sh
#
# Standard tools and python3 only. Uses 127.74.0.0/24 and 127.75.0.1.
set -u
cd "$(dirname "$0")/../.."
B=${PSFLEET_BIN:-target/release/psfleet}
D=$(mktemp -d)
export HOME=$D XDG_CONFIG_HOME=$D/config XDG_STATE_HOME=$D/xdg
trap 'kill $SIM 2>/dev/null; wait 2>/dev/null; rm -rf "$D"' EXIT
open_shells() {
  sleep 1.3 # stats.json is refreshed every second
  python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['service_totals']['shells_open'])" "$1/stats.json"
}

echo "== 1. every service response cut off mid-body"
cat > "$D/reset.toml" <<'TOML'
description = "every service response cut off mid-body"
[[class]]
name = "reset_all"
count = 1
reset_probability = 1.0
TOML
"$B" sim --hosts 1 --profile "$D/reset.toml" --seed 1 --first-address 127.75.0.1 \
  --out "$D/reset" >/dev/null 2>&1 & SIM=$!
sleep 2
export PSFLEET_PASSWORD=$(awk '$1=="fleetadmin"{print $2}' "$D/reset/accounts.txt")
"$B" --state-dir "$D/state-reset" run -i "$D/reset/inventory.csv" --user fleetadmin \
  -c "'x'" -o json --no-progress 2>/dev/null | python3 -c \
  "import json,sys;[print('  outcome:',r['status'],r['bucket'],'attempts',r['attempts']) for r in map(json.loads,sys.stdin)]"
echo "  shells open on the host: $(open_shells "$D/reset") (expected 0)"
echo "  shell_opened lines in the journal: $(cat "$D"/state-reset/runs/*/journal.jsonl | grep -c shell_opened)"
kill $SIM; wait $SIM 2>/dev/null

echo "== 2. SIGKILL while Creates are in flight"
"$B" sim --hosts 300 --profile bench --latency-ms 0 --seed 1 --first-address 127.74.0.1 \
  --out "$D/fleet" >/dev/null 2>&1 & SIM=$!
sleep 2
export PSFLEET_PASSWORD=$(awk '$1=="fleetadmin"{print $2}' "$D/fleet/accounts.txt")
for try in 1 2 3 4 5; do
  S=$D/state$try
  "$B" --state-dir "$S" run -i "$D/fleet/inventory.csv" --user fleetadmin -c "'x'" -o json \
    -f 64 --no-progress >/dev/null 2>&1 & P=$!
  sleep 0.2; kill -9 $P; wait $P 2>/dev/null
  after_kill=$(open_shells "$D/fleet")
  "$B" --state-dir "$S" run -i "$D/fleet/inventory.csv" --user fleetadmin -c "'x'" -o json \
    -f 64 --no-progress --resume last --rerun-interrupted >/dev/null 2>&1
  after_resume=$(open_shells "$D/fleet")
  "$B" --state-dir "$S" cleanup -i "$D/fleet/inventory.csv" --user fleetadmin \
    --no-progress >/dev/null 2>&1
  echo "  try $try: shells open after the kill $after_kill, after the resume $after_resume" \
    "(expected 0), after psfleet cleanup $(open_shells "$D/fleet")"
done
