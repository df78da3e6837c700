#!/usr/bin/env python3
"""Instructions per operation from InstructionCounts' callgrind dumps (benchmarks/Instructions).

Each dump InstructionCounts asks for is named "<benchmark>|<size>|<count>" (its `desc:
Trigger` line) and holds the instructions (`totals:`, event Ir) of `count` operations.
Writes one line per dump to stdout: benchmark, size and instructions per operation,
tab-separated, for summarize-inprocess.py. Usage: instructions.py CALLGRIND_OUT_FILES..."""
import re, sys

# One decision per "operation" for the check suites, whose dumps count 4,096 decisions in one run.
DECISIONS = {"check": 4096, "check bytes": 4096}

rows = []
for path in sys.argv[1:]:
    name = total = None
    with open(path, errors="replace") as f:
        for line in f:
            m = re.match(r"desc: Trigger: Client Request: (.*)$", line)
            if m:
                name = m.group(1).strip()
            m = re.match(r"totals: (\d+)", line)
            if m:
                total = int(m.group(1))
    if name is None or total is None:
        continue  # the dump at program termination, or not one of ours
    parts = name.split("|")
    if len(parts) != 3:
        sys.exit(f"{path}: unexpected dump name {name!r}")
    bench, size, count = parts[0], parts[1], int(parts[2])
    per = total / (count * DECISIONS.get(bench, 1))
    rows.append((bench, size, per))
if not rows:
    sys.exit("no InstructionCounts dumps found (was it run under valgrind --tool=callgrind?)")
for bench, size, per in rows:
    print(f"{bench}\t{size}\t{per:.0f}")
