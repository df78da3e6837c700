#!/usr/bin/env bash
# Sync and scale benchmark (issue 5): `authz sync --replace` of N memberships (default 1M) into a
# running server (time, server RSS), server start-up with that store, and GET /v1/check latency
# idle vs. during a large sync. Prints a markdown table; with --results FILE, writes it there.
#
#   benchmarks/sync/run.sh [--memberships N] [--results FILE]
#
# Everything runs on 127.0.0.1; both cores are shared by the server, wrk and the sync client.
set -euo pipefail
cd "$(dirname "$0")/../.."
N=1000000
RESULTS=""
while [ $# -gt 0 ]; do
  case "$1" in
    --memberships) N="$2"; shift 2 ;;
    --results) RESULTS="$2"; shift 2 ;;
    *) echo "usage: $0 [--memberships N] [--results FILE]" >&2; exit 2 ;;
  esac
done
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }

WORK=$(mktemp -d /tmp/authz-sync-bench.XXXXXX)
PORT=18290
export AUTHZ_ADMIN_TOKEN=bench-token
SERVER_PID=""
cleanup() { [ -n "${WRK_PID:-}" ] && kill "$WRK_PID" 2>/dev/null; [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true; [ -n "${AUTHZ_KEEP_LOGS:-}" ] && cp "$WORK"/*.log /tmp/ 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

[ -n "${AUTHZ_SKIP_BUILD:-}" ] || swift build -c release --product authz >/dev/null
AUTHZ=.build/release/authz

echo "generating $N memberships..." >&2
$AUTHZ generate --memberships "$N" --seed 42 --out "$WORK/data.jsonl" --queries 50000 --queries-out "$WORK/queries.jsonl"
RECORDS=$(wc -l < "$WORK/data.jsonl")
python3 - "$WORK/queries.jsonl" > "$WORK/paths.txt" <<'PY'
import json, sys, urllib.parse
for line in open(sys.argv[1]):
    q = json.loads(line)
    print("/v1/check?" + urllib.parse.urlencode({k: q[k] for k in ("subject", "action", "resource", "org")}, safe=":"))
PY

start_server() {
  $AUTHZ serve --port $PORT --store "$WORK/store.sqlite" --max-sync-body $((2 << 30)) >>"$WORK/serve.log" 2>&1 &
  SERVER_PID=$!
}
wait_ready() {
  for _ in $(seq 1 6000); do
    curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && return 0
    sleep 0.01
  done
  echo "server not ready" >&2; cat "$WORK/serve.log" >&2; exit 1
}
rss_mb() { awk '/VmRSS/ {printf "%.0f", $2/1024}' /proc/$SERVER_PID/status; }
hwm_mb() { awk '/VmHWM/ {printf "%.0f", $2/1024}' /proc/$SERVER_PID/status; }
now() { date +%s.%N; }
p99() { awk '/ 99%/ {print $2}'; }
p50() { awk '/ 50%/ {print $2}'; }
took() { grep -o '[0-9.]* s,' "$1" | head -1 | tr -d ','; }

# 1. Replace into an empty server.
start_server; wait_ready
t0=$(now)
$AUTHZ sync --server "http://127.0.0.1:$PORT" --replace "$WORK/data.jsonl" > "$WORK/sync.out"
t1=$(now)
REPLACE_S=$(echo "$t1 - $t0" | bc)
sleep 3   # steady state: the server hands freed memory back a second after a large batch
RSS=$(rss_mb); HWM=$(hwm_mb)

# 2. Check latency idle (8 s), then over the whole of a full replace (wrk runs until the sync
# returns; SIGINT makes it stop and report), under two loads:
#  - saturating: 16 connections, no pause (the throughput benchmark's load). The sync client
#    runs at normal priority on the same two cores, as an operator's `authz sync` on the
#    server's host would; the server's sync work runs in the idle class and gets only what
#    checks leave, so this also shows how long a replace takes when checks use every cycle.
#  - paced: 64 connections, each pausing 1 ms between requests (about a third of the
#    capacity), where a check's latency is its own and not its wait in wrk's queue. The client
#    runs in the idle class (chrt --idle 0): on the platform it runs on another host, and here
#    it would otherwise take the cores from the checks (its local validation and upload).
#    Issue 4's "p99 during a large sync at most twice idle" is read from this pair.
SATURATING="-t2 -c16"
PACED="-t2 -c64"
export WRK_PAUSE_MS=1
wrk_check() { # output-file duration wrk-options script
  wrk $3 -d"$2" --latency -s "benchmarks/http/$4" "http://127.0.0.1:$PORT" -- "$WORK/paths.txt" > "$1"
}
WRK_PID=""
during_replace() { # output-file sync-output-file wrk-options script command-prefix...
  local out=$1 syncout=$2 options=$3 script=$4 rc=0; shift 4
  # wrk started directly, so that $! is wrk: a function started with & runs in a subshell, and
  # a non-interactive shell's background jobs ignore SIGINT. wrk sets its own SIGINT handler
  # (stop, print the report) once its threads run, which the short sleep leaves time for.
  wrk $options -d600s --latency -s "benchmarks/http/$script" "http://127.0.0.1:$PORT" -- "$WORK/paths.txt" > "$out" &
  WRK_PID=$!
  sleep 0.2
  "$@" $AUTHZ sync --server "http://127.0.0.1:$PORT" --replace "$WORK/data.jsonl" > "$syncout" || rc=$?
  kill -INT $WRK_PID 2>/dev/null || true
  wait $WRK_PID || true
  WRK_PID=""
  grep -q 'Requests/sec' "$out" || { echo "wrk reported nothing during the replace ($out)" >&2; rc=1; }
  return $rc
}
wrk_check "$WORK/idle.txt" 8s "$SATURATING" check.lua
during_replace "$WORK/busy.txt" "$WORK/sync2.out" "$SATURATING" check.lua env
sleep 3   # the replaced directory is freed, and the freed memory handed back, after the answer
wrk_check "$WORK/paced-idle.txt" 8s "$PACED" check_paced.lua
during_replace "$WORK/paced-busy.txt" "$WORK/sync3.out" "$PACED" check_paced.lua chrt --idle 0

# 3. Restart on the store: time to /readyz 200.
kill -TERM $SERVER_PID; wait $SERVER_PID 2>/dev/null || true
t0=$(now); start_server; wait_ready; t1=$(now)
START_S=$(echo "$t1 - $t0" | bc)
sleep 3
RSS2=$(rss_mb)

{
  echo "| sync and scale, $N memberships ($RECORDS records) | result |"
  echo "| --- | ---: |"
  echo "| \`authz sync --replace\` end to end | $(printf %.2f "$REPLACE_S") s |"
  echo "| server RSS 3 s after the replace (peak) | $RSS MB ($HWM MB) |"
  echo "| server start with that store, to /readyz 200 | $(printf %.2f "$START_S") s (RSS 3 s later: $RSS2 MB) |"
  row() { # label wrk-output [sync-output]
    echo "| $1 | $(awk '/Requests\/sec/ {printf "%.0f", $2}' "$2"), $(p50 < "$2"), $(p99 < "$2")${3:+; the replace took $(took "$3")} |"
  }
  row "GET /v1/check idle, saturating (16 connections): req/s, p50, p99" "$WORK/idle.txt"
  row "the same over a whole replace, the client at normal priority on the same cores" "$WORK/busy.txt" "$WORK/sync2.out"
  row "GET /v1/check idle, paced (64 connections, 1 ms pause each): req/s, p50, p99" "$WORK/paced-idle.txt"
  row "the same over a whole replace, the client in the idle class" "$WORK/paced-busy.txt" "$WORK/sync3.out"
  echo
  echo "sync: $(tail -1 "$WORK/sync.out")"
} | tee "${RESULTS:-/dev/null}"
