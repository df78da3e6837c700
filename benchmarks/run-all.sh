#!/usr/bin/env bash
# `make bench`: runs every benchmark and rewrites benchmarks/RESULTS.md (date, machine, commit,
# tables), keeping the hand-written findings in benchmarks/FINDINGS.md at its end.
#   1. in-process suites (package-benchmark, benchmarks/Benchmarks): check, batch, build, apply...,
#      and their instructions per operation under callgrind (benchmarks/Instructions)
#   2. HTTP: authz serve against the bare libmicrohttpd ceiling, with wrk (benchmarks/http/run.sh)
#   3. sync and scale at 1M memberships (benchmarks/sync/run.sh)
#   4. the machine: memory latency by working set, page-fault cost (benchmarks/machine/machine.c)
# Takes about 13 minutes on 2 cores. SKIP="inprocess instructions http sync machine" skips parts.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SKIP="${SKIP:-}"
OUT=$(mktemp -d /tmp/authz-bench-all.XXXXXX)
trap 'rm -rf "$OUT"' EXIT
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }

swift build -c release --product authz >/dev/null
export AUTHZ="$ROOT/.build/release/authz"

R=benchmarks/results      # one file per part; a skipped part keeps its previous file
COMMIT="$(git rev-parse --short HEAD)$(git diff --quiet -- . ':!benchmarks/results' ':!benchmarks/RESULTS.md' || echo '+dirty')"
# results/runs.tsv: when each part last ran, and at which commit (a skipped part keeps its line).
stamp() { # part
  touch "$R/runs.tsv"
  { grep -v "^$1	" "$R/runs.tsv" || true; printf '%s\t%s\t%s\n' "$1" "$(date -u +%Y-%m-%dT%H:%MZ)" "$COMMIT"; } > "$OUT/runs.tsv"
  sort "$OUT/runs.tsv" > "$R/runs.tsv"
}
if [[ " $SKIP " != *" inprocess "* ]]; then
  echo "== in-process suites" >&2
  (cd benchmarks && swift package --disable-sandbox benchmark --format markdown --no-progress) 2>"$OUT/inprocess.err" \
    | grep -v -e 'Warning' -e "identifier 'package-benchmark'" -e 'your Package.swift' -e '\.package(url' \
              -e '\.product(name' -e '\.plugin(name' -e 'Support for the legacy' -e 'future release' -e 'Note: skipping' \
    > "$R/inprocess-raw.md" || { cat "$OUT/inprocess.err" >&2; exit 1; }
  stamp inprocess
fi
if [[ " $SKIP " != *" instructions "* ]]; then
  # Exact and repeatable, so the three sizes run side by side (1M takes ~1.5 min).
  echo "== instructions per operation (callgrind)" >&2
  (cd benchmarks && swift build -c release --product InstructionCounts >/dev/null)
  # valgrind 3.19 cannot read the DWARF 5 that Swift 6.3 writes.
  cp benchmarks/.build/release/InstructionCounts "$OUT/ic" && strip --strip-debug "$OUT/ic"
  pids=()
  for size in 1M 100k 1k; do
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/callgrind.$size.%p" "$OUT/ic" "$size" \
      >"$OUT/ic.$size.log" 2>&1 &
    pids+=($!)
  done
  for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || { cat "$OUT"/ic.*.log >&2; exit 1; }
  done
  python3 benchmarks/instructions.py "$OUT"/callgrind.* > "$R/instructions.tsv"
  stamp instructions
fi
if [[ " $SKIP " != *" http "* ]]; then
  echo "== HTTP against the libmicrohttpd ceiling" >&2
  benchmarks/http/run.sh > "$R/http.md"
  stamp http
fi
if [[ " $SKIP " != *" sync "* ]]; then
  echo "== sync and scale" >&2
  AUTHZ_SKIP_BUILD=1 benchmarks/sync/run.sh --memberships 1000000 --results "$R/sync.md" >/dev/null
  stamp sync
fi
if [[ " $SKIP " != *" machine "* ]]; then
  echo "== the machine: memory latency and page faults" >&2
  cc -O2 -o "$OUT/machine" benchmarks/machine/machine.c
  "$OUT/machine" > "$R/machine.md"
  stamp machine
fi

{
  echo "# Benchmark results"
  echo
  echo "Written by \`make bench\` (benchmarks/run-all.sh) from the files in results/; findings are hand-written in FINDINGS.md."
  echo
  echo "- Written: $(date -u +%Y-%m-%dT%H:%MZ), commit $COMMIT; parts skipped this time: ${SKIP:-none}"
  echo "- Each part's numbers are from its last run: $(awk -F'\t' '{printf "%s%s %s at %s", (NR > 1 ? "; " : ""), $1, $2, $3}' "$R/runs.tsv" 2>/dev/null)"
  echo "- Machine: $(nproc) cores ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); the cores are shared by the servers, wrk and the clients, and by other work on this machine"
  echo "- Toolchain: $(swift --version 2>/dev/null | head -1)"
  echo
  echo "## In-process (package-benchmark; instructions from callgrind)"
  echo
  python3 benchmarks/summarize-inprocess.py "$R/instructions.tsv" < "$R/inprocess-raw.md"
  echo
  echo "## HTTP: authz serve vs. a bare libmicrohttpd server (wrk)"
  echo
  cat "$R/http.md"
  echo
  echo "## Sync and scale"
  echo
  cat "$R/sync.md"
  echo
  echo "## The machine: what memory costs here (benchmarks/machine)"
  echo
  echo "What bounds the numbers above: a check at 100k or 1M memberships reads keys that do not fit in L2, each such read one of these loads; a large sync touches fresh memory at this cost per page."
  echo
  cat "$R/machine.md"
  echo
  cat benchmarks/FINDINGS.md
} > benchmarks/RESULTS.md
echo "wrote benchmarks/RESULTS.md" >&2
