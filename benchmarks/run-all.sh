#!/usr/bin/env bash
# `make bench`: runs every benchmark and rewrites benchmarks/RESULTS.md (date, machine, commit,
# tables), keeping the hand-written findings in benchmarks/FINDINGS.md at its end.
#   1. in-process suites (package-benchmark, benchmarks/Benchmarks): check, batch, build, apply...
#   2. HTTP: authz serve against the bare libmicrohttpd ceiling, with wrk (benchmarks/http/run.sh)
#   3. sync and scale at 1M memberships (benchmarks/sync/run.sh)
# Takes about 25 minutes on 2 cores. SKIP="inprocess http sync" skips parts.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SKIP="${SKIP:-}"
OUT=$(mktemp -d /tmp/authz-bench-all.XXXXXX)
trap 'rm -rf "$OUT"' EXIT
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }

swift build -c release --product authz >/dev/null
export AUTHZ="$ROOT/.build/release/authz"

if [[ " $SKIP " != *" inprocess "* ]]; then
  echo "== in-process suites" >&2
  (cd benchmarks && swift package --disable-sandbox benchmark --format markdown --no-progress) > "$OUT/inprocess.md" 2>"$OUT/inprocess.err" \
    || { cat "$OUT/inprocess.err" >&2; exit 1; }
fi
if [[ " $SKIP " != *" http "* ]]; then
  echo "== HTTP against the libmicrohttpd ceiling" >&2
  benchmarks/http/run.sh > "$OUT/http.md"
fi
if [[ " $SKIP " != *" sync "* ]]; then
  echo "== sync and scale" >&2
  AUTHZ_SKIP_BUILD=1 benchmarks/sync/run.sh --memberships 1000000 --results "$OUT/sync.md" >/dev/null
fi

{
  echo "# Benchmark results"
  echo
  echo "Written by \`make bench\` (benchmarks/run-all.sh); do not edit by hand: findings go in FINDINGS.md."
  echo
  echo "- Date: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "- Machine: $(nproc) cores ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), load average at start $(cut -d' ' -f1-3 /proc/loadavg); the cores are shared by the servers, wrk and the clients"
  echo "- Commit: $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (with uncommitted changes)')"
  echo "- Toolchain: $(swift --version 2>/dev/null | head -1)"
  echo
  for part in inprocess http sync; do
    [ -s "$OUT/$part.md" ] || continue
    case $part in
      inprocess) echo "## In-process (package-benchmark; medians are p50)" ;;
      http) echo "## HTTP: authz serve vs. a bare libmicrohttpd server (wrk)" ;;
      sync) echo "## Sync and scale" ;;
    esac
    echo
    cat "$OUT/$part.md"
    echo
  done
  cat benchmarks/FINDINGS.md
} > benchmarks/RESULTS.md
echo "wrote benchmarks/RESULTS.md" >&2
