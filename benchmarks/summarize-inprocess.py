#!/usr/bin/env python3
"""Turns package-benchmark's markdown output into one table: p50 wall clock, instructions and
mallocs per benchmark, by corpus size. Reads the raw output on stdin and, if given, the
instruction counts instructions.py wrote (a file: benchmark, size, instructions per operation,
tab-separated); writes markdown on stdout."""
import os, re, sys

raw = sys.stdin.read()
rows = {}
for block in re.split(r"^### ", raw, flags=re.M)[1:]:
    name = block.splitlines()[0].strip()
    time = mallocs = None
    for line in block.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 4:
            continue
        if cells[0].startswith("Time (wall clock)"):
            unit = re.search(r"\((ns|μs|us|ms|s)\)", cells[0]).group(1).replace("μs", "µs").replace("us", "µs")
            time = f"{cells[3]} {unit}"
        elif cells[0].startswith("Malloc (total)"):
            k = "K" if "(K)" in cells[0] else ""
            mallocs = f"{cells[3]}{k}"
    m = re.match(r"(.*?) (1k|100k|1M)$", name)
    base, size = (m.group(1), m.group(2)) if m else (name, "")
    rows.setdefault(base, {})[size] = (time, mallocs)

instructions = {}
if len(sys.argv) > 1 and os.path.exists(sys.argv[1]):
    with open(sys.argv[1]) as f:
        for line in f:
            bench, size, per = line.rstrip("\n").split("\t")
            instructions[(bench, size)] = int(per)


def short(n):
    """1234 -> 1234, 120500 -> 120K, 2400000 -> 2.4M (as package-benchmark prints counts)."""
    if n >= 10_000_000:
        return f"{n / 1e6:.0f}M"
    if n >= 1_000_000:
        return f"{n / 1e6:.1f}M"
    if n >= 10_000:
        return f"{n / 1e3:.0f}K"
    return str(n)


def cell(base, size, t, mal):
    if not t:
        return ""
    ins = instructions.get((base, size))
    return f"{t}; {short(ins) if ins is not None else '-'}; {mal}"


print("| benchmark (p50 wall clock; instructions; mallocs) | 1k | 100k | 1M |")
print("| --- | ---: | ---: | ---: |")
for base in sorted(rows):
    sizes = rows[base]
    if "" in sizes:
        t, mal = sizes[""]
        print(f"| {base} | {cell(base, '', t, mal + ' mallocs')} | | |")
        continue
    cells = [cell(base, size, *sizes.get(size, (None, None))) for size in ("1k", "100k", "1M")]
    print(f"| {base} | " + " | ".join(cells) + " |")
print()
print("Per operation; `check` and `check bytes` are one decision each (16,384 pre-generated queries cycled), `batch100` is 100 decisions, `apply100` a 100-record batch. Wall clock and mallocs: package-benchmark (full percentiles: [results/inprocess-raw.md](results/inprocess-raw.md)). Instructions: callgrind, from the same operations run by `InstructionCounts` (this VM has no hardware counters; runs agree within 0.1%; `-` where not counted): [results/instructions.tsv](results/instructions.tsv).")
