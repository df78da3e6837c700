#!/usr/bin/env bash
# benchmarks/http: `authz serve` against the libmicrohttpd ceiling, in one run, with wrk.
#
# Builds the ceiling (ceiling.c) and a release `authz`, generates membership data and a
# query list (gendata.py, deterministic), seeds `authz serve` with it, then for ROUNDS
# rounds drives, alternating, the ceiling and authz (and a BASELINE authz binary, if given)
# with GET /v1/check at 1, 16 and 64 keep-alive connections, and authz with POST /v1/check
# and POST /v1/check/batch at 16. Prints a markdown table of medians over the rounds.
#
# Environment (all optional):
#   DURATION=10s  ROUNDS=3  CONNS="1 16 64"  POST_CONNS=16  THREADS=<cores>
#   ORGS=10000 MEMBERS=100000        size of the generated data
#   BASELINE=/path/to/authz          another authz binary to drive in the same rounds
#   AUTHZ=/path/to/authz             skip the swift build and use this binary
#   WORK=/tmp/dir                    where data, stores and logs go (default: a new temp dir)
#   PIN=1                            servers on CPU 0, wrk on CPU 1 (taskset): the ratio then
#                                    compares the servers' own cost, without wrk on their core
# Everything listens on 127.0.0.1 only; both servers are killed on exit.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
DURATION="${DURATION:-10s}"
ROUNDS="${ROUNDS:-3}"
CONNS="${CONNS:-1 16 64}"
POST_CONNS="${POST_CONNS:-16}"
THREADS="${THREADS:-$(nproc)}"
ORGS="${ORGS:-10000}"
MEMBERS="${MEMBERS:-100000}"
WORK="${WORK:-$(mktemp -d /tmp/authz-bench-http.XXXXXX)}"
mkdir -p "$WORK"
CEILING_PORT=18281
AUTHZ_PORT=18282
BASE_PORT=18283

command -v wrk >/dev/null || { echo "wrk is missing (Debian: apt-get install wrk)" >&2; exit 1; }

PIDS=()
declare -A PID_OF
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM

# PIN=1: each server on CPU 0 (its threads share it), wrk on CPU 1.
SERVER_CPU=() WRK_CPU=()
if [[ "${PIN:-0}" == 1 ]]; then
    (( $(nproc) >= 2 )) || { echo "PIN=1 needs 2 CPUs" >&2; exit 1; }
    SERVER_CPU=(taskset -c 0) WRK_CPU=(taskset -c 1)
fi

echo "== build" >&2
cc -O2 -Wall -o "$WORK/ceiling" "$HERE/ceiling.c" $(pkg-config --cflags --libs libmicrohttpd)
if [[ -z "${AUTHZ:-}" ]]; then
    (cd "$ROOT" && swift build -c release --product authz >&2)
    AUTHZ="$(cd "$ROOT" && swift build -c release --show-bin-path)/authz"
fi

echo "== data: $ORGS orgs, $MEMBERS members -> $WORK" >&2
if [[ ! -s "$WORK/data.jsonl" ]]; then
    python3 "$HERE/gendata.py" "$WORK" --orgs "$ORGS" --members "$MEMBERS"
fi
QUERIES="$WORK/queries.txt"

# Ready with the seeded data: /readyz says 200 at revision 1 or later (the empty store
# publishes revision 0, and /readyz already answers 200 for it, before --data is applied).
wait_ready() { # port seconds
    local deadline=$((SECONDS + $2))
    until curl -fs "http://127.0.0.1:$1/readyz" 2>/dev/null | grep -q '"revision":[1-9]'; do
        (( SECONDS < deadline )) || { echo "server on port $1 not ready after $2 s" >&2; exit 1; }
        sleep 0.2
    done
}

start_authz() { # binary port name
    rm -f "$WORK/$3.sqlite"*
    AUTHZ_ADMIN_TOKEN="bench-$RANDOM$RANDOM" AUTHZ_CHECK_TOKEN= \
        "${SERVER_CPU[@]}" "$1" serve --policy "$ROOT/policies/daytona.yaml" --host 127.0.0.1 --port "$2" \
        --threads "$THREADS" --store "$WORK/$3.sqlite" --data "$WORK/data.jsonl" \
        2>"$WORK/$3.log" &
    PIDS+=($!)
    PID_OF[$3]=$!
    wait_ready "$2" 120
}

echo "== start" >&2
"${SERVER_CPU[@]}" "$WORK/ceiling" "$CEILING_PORT" "$THREADS" 2>"$WORK/ceiling.log" &
PIDS+=($!)
PID_OF[ceiling]=$!
start_authz "$AUTHZ" "$AUTHZ_PORT" authz
SERVERS="ceiling:$CEILING_PORT authz:$AUTHZ_PORT"
if [[ -n "${BASELINE:-}" ]]; then
    start_authz "$BASELINE" "$BASE_PORT" baseline
    SERVERS="$SERVERS baseline:$BASE_PORT"
fi

# The query mix, as the server decides it: one batch of the first 1000 queries.
body=$(head -1000 "$QUERIES" | python3 -c '
import sys, urllib.parse, json
checks = [dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(l.strip()).query)) for l in sys.stdin]
print(json.dumps({"checks": checks}))')
mix=$(curl -fs -H 'Content-Type: application/json' -d "$body" "http://127.0.0.1:$AUTHZ_PORT/v1/check/batch" |
    python3 -c '
import sys, json, collections
r = json.load(sys.stdin)["results"]
allowed = sum(1 for x in r if x.get("allowed"))
reasons = collections.Counter(x.get("reason", "error") for x in r)
print(f"{allowed}/{len(r)} allowed; " + ", ".join(f"{k} {v}" for k, v in reasons.most_common()))')
echo "query mix (first 1000): $mix" >&2

RESULTS="$WORK/results.tsv"
: >"$RESULTS"
# CPU time (user + system, clock ticks) the process has used so far.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
drive() { # round name port script conns
    local out pid="${PID_OF[$2]}" before after
    before=$(cpu_ticks "$pid")
    out=$("${WRK_CPU[@]}" wrk -t $(( $5 < 2 ? $5 : 2 )) -c "$5" -d "$DURATION" --latency -s "$HERE/$4" "http://127.0.0.1:$3" -- "$QUERIES" | grep '^RESULT')
    after=$(cpu_ticks "$pid")
    # Server CPU per request, in microseconds: steadier than requests/s on a shared machine.
    set -- "$1" "$2" "$3" "$4" "$5" ${out#RESULT }
    local cpu_us
    cpu_us=$(awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" -v n="$9" 'BEGIN { printf "%.2f", (n > 0 ? t / hz * 1e6 / n : 0) }')
    echo "$1 $2 $4 $5 ${out#RESULT } $cpu_us" | tee -a "$RESULTS" >&2
    sleep 1
}

echo "== measure: $ROUNDS rounds of $DURATION each (round server script conns req/s p50us p99us n errors non2xx server-cpu-us/req)" >&2
for round in $(seq 1 "$ROUNDS"); do
    for c in $CONNS; do
        # Alternate the order from round to round so neither server always goes first.
        order="$SERVERS"
        (( round % 2 == 0 )) && order=$(echo "$SERVERS" | tr ' ' '\n' | tac | tr '\n' ' ')
        for s in $order; do drive "$round" "${s%%:*}" "${s##*:}" check.lua "$c"; done
    done
    for s in $SERVERS; do
        [[ "${s%%:*}" == ceiling ]] && continue
        drive "$round" "${s%%:*}" "${s##*:}" check_post.lua "$POST_CONNS"
        drive "$round" "${s%%:*}" "${s##*:}" check_batch.lua "$POST_CONNS"
    done
done

echo
echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), server threads $THREADS$([[ "${PIN:-0}" == 1 ]] && echo ' (servers pinned to CPU 0, wrk to CPU 1)'), wrk -t2 (-t1 at 1 connection), $DURATION per run, medians of $ROUNDS rounds; commit $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet -- . ':!benchmarks/results' ':!benchmarks/RESULTS.md' || echo '+dirty'); data $ORGS orgs / $MEMBERS members; query mix: $mix"
echo
python3 - "$RESULTS" <<'PY'
import sys, statistics, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    r, server, script, conns, rps, p50, p99, n, errors, non2xx, cpu = line.split()
    rows[(server, script, int(conns))].append((float(rps), float(p50), float(p99), int(errors), int(non2xx), float(cpu)))
med = lambda xs: statistics.median(xs)
def stat(key):
    v = rows.get(key)
    if not v: return None
    return (med([x[0] for x in v]), med([x[1] for x in v]), med([x[2] for x in v]),
            sum(x[3] for x in v), sum(x[4] for x in v), [x[0] for x in v], med([x[5] for x in v]))
ms = lambda us: f"{us / 1000:.3f} ms"
servers = [s for s in ("authz", "baseline") if any(k[0] == s for k in rows)]
print("GET /v1/check (random queries), requests/s and latency, medians:\n")
print("| conns | server | requests/s | p50 | p99 | authz/ceiling | server CPU/request | runs (req/s) | errors / non-2xx |")
print("|---:|---|---:|---:|---:|---:|---:|---|---|")
for c in sorted({k[2] for k in rows if k[1] == "check.lua"}):
    ceil = stat(("ceiling", "check.lua", c))
    for s in ["ceiling"] + servers:
        st = stat((s, "check.lua", c))
        if not st: continue
        ratio = "" if s == "ceiling" else f"{st[0] / ceil[0] * 100:.0f}%"
        runs = ", ".join(f"{x:.0f}" for x in st[5])
        print(f"| {c} | {s} | {st[0]:.0f} | {ms(st[1])} | {ms(st[2])} | {ratio} | {st[6]:.1f} µs | {runs} | {st[3]} / {st[4]} |")
print("\nPOST routes (decisions/s = requests/s x checks per request; ratio to the ceiling's GET requests/s at the same connections):\n")
print("| route | conns | server | requests/s | decisions/s | p50 | p99 | decisions/ceiling req | server CPU/request | errors / non-2xx |")
print("|---|---:|---|---:|---:|---:|---:|---:|---:|---|")
for script, route, per in (("check_post.lua", "POST /v1/check", 1), ("check_batch.lua", "POST /v1/check/batch (100)", 100)):
    for c in sorted({k[2] for k in rows if k[1] == script}):
        ceil = stat(("ceiling", "check.lua", c))
        for s in servers:
            st = stat((s, script, c))
            if not st: continue
            ratio = f"{st[0] * per / ceil[0] * 100:.0f}%" if ceil else ""
            print(f"| {route} | {c} | {s} | {st[0]:.0f} | {st[0] * per:.0f} | {ms(st[1])} | {ms(st[2])} | {ratio} | {st[6]:.1f} µs | {st[3]} / {st[4]} |")
PY
