#!/usr/bin/env bash
# Pool scale (issue 16): how long `accounts import` of N credential files takes, how long the gateway takes to start
# with them, and the gateway's instructions per request (valgrind's callgrind) with 1 account and with N accounts.
#
#   bench/pool-scale.sh [N]      N defaults to 10000; needs valgrind and python3; uses target/release binaries
#
# The suite (bench/run.sh, section 7) measures the import, the start-up and the added latency with N accounts side by
# side with one account in front of the fast upstream; this script adds instruction counts, which need no quiet machine.
# Instruction counts do not depend on machine load, so the per-request figures are repeatable on a busy machine; the
# import and start-up times are wall-clock and are not. Per-request instructions are taken as the difference between
# a run of 1,200 requests and one of 200 (start-up, account loading and shutdown cancel out), divided by 1,000.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000}
bin=${BIN:-target/release}
sim_bin=${SIM_BIN:-$bin/anthropic-simulator}
[ -x "$sim_bin" ] || sim_bin=target/debug/anthropic-simulator
command -v valgrind >/dev/null || { echo "pool-scale.sh: needs valgrind (apt-get install valgrind)" >&2; exit 2; }
work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"' EXIT

# Waits until $1 contains "listening on http://" and prints the address.
listen_addr() {
  for _ in $(seq 1 600); do
    if a=$(grep -o 'listening on http://[0-9.:]*' "$1" 2>/dev/null | head -1); then
      [ -n "$a" ] && { echo "${a#listening on }"; return; }
    fi
    sleep 0.2
  done
  echo "no listening line in $1" >&2; cat "$1" >&2; exit 1
}

"$sim_bin" --listen 127.0.0.1:0 --accept-any-key --latency-ms 0 >"$work/sim.log" 2>&1 &
pids+=($!)
upstream=$(listen_addr "$work/sim.log")

# $1 accounts: writes a gateway dir with that many CLIProxyAPI files, imports them, prints the import seconds.
setup() {
  local n=$1 dir="$work/gw-$1"
  mkdir -p "$dir/files"
  python3 - "$dir/files" "$n" <<'EOF'
import json, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    json.dump({"type": "claude", "access_token": f"sk-ant-oat01-bench-{i}", "refresh_token": f"sk-ant-ort01-bench-{i}",
               "email": f"bench{i}@example.com", "account_uuid": f"00000000-0000-4000-8000-{i:012d}",
               "expired": "2099-01-01T00:00:00Z"}, open(f"{d}/claude-{i}.json", "w"))
EOF
  cat >"$dir/gateway.toml" <<EOF
listen = "127.0.0.1:0"
data_dir = "$dir/data"
client_keys = ["bench-client-key"]

[upstream]
base_url = "$upstream"

[refresh]
scan_interval_secs = 3600
EOF
  local t0 t1
  t0=$(date +%s.%N)
  "$bin/claude-gateway" --config "$dir/gateway.toml" accounts import "$dir/files" >/dev/null
  t1=$(date +%s.%N)
  echo "$t0 $t1" | awk '{printf "%.2f", $2 - $1}'
}

# $1 accounts, $2 requests: total instructions of a gateway run under callgrind serving that many requests.
instructions() {
  local dir="$work/gw-$1" out="$work/cg-$1-$2"
  valgrind --tool=callgrind -q --callgrind-out-file="$out" \
    "$bin/claude-gateway" --config "$dir/gateway.toml" serve >"$dir/serve.log" 2>&1 &
  local pid=$!
  pids+=($pid)
  local addr
  addr=$(listen_addr "$dir/serve.log")
  python3 - "$addr" "$2" <<'EOF'
import http.client, sys, time
host, n = sys.argv[1].replace("http://", ""), int(sys.argv[2])
body = '{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}'
hdr = {"x-api-key": "bench-client-key", "anthropic-version": "2023-06-01", "content-type": "application/json"}
c = http.client.HTTPConnection(host, timeout=60)
for _ in range(200):  # ready: accounts loaded
    c.request("GET", "/readyz"); r = c.getresponse(); r.read()
    if r.status == 200: break
    time.sleep(0.5)
for i in range(n):
    c.request("POST", "/v1/messages", body, hdr); r = c.getresponse(); r.read()
    assert r.status == 200, (i, r.status)
EOF
  kill -TERM "$pid"
  wait "$pid" || true
  grep -E '^(summary|totals):' "$out" | head -1 | awk '{print $2}'
}

# $1 accounts: seconds from `serve` to ready.
startup() {
  local dir="$work/gw-$1"
  local t0 t1
  t0=$(date +%s.%N)
  "$bin/claude-gateway" --config "$dir/gateway.toml" serve >"$dir/startup.log" 2>&1 &
  local pid=$!
  pids+=($pid)
  local addr
  addr=$(listen_addr "$dir/startup.log")
  until curl -sf "$addr/readyz" >/dev/null; do sleep 0.02; done
  t1=$(date +%s.%N)
  kill -TERM "$pid"; wait "$pid" || true
  echo "$t0 $t1" | awk '{printf "%.2f", $2 - $1}'
}

for n in 1 "$N"; do
  imp=$(setup "$n")
  up=$(startup "$n")
  a=$(instructions "$n" 200)
  b=$(instructions "$n" 1200)
  per=$(( (b - a) / 1000 ))
  echo "accounts=$n import_secs=$imp startup_secs=$up instructions_per_request=$per"
done
