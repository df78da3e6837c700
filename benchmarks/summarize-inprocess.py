#!/usr/bin/env python3
"""Turns package-benchmark's markdown output into one table: p50 wall clock and mallocs per
benchmark, by corpus size. Reads the raw output on stdin, writes markdown on stdout."""
import re, sys

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

print("| benchmark (p50 wall clock; mallocs) | 1k | 100k | 1M |")
print("| --- | ---: | ---: | ---: |")
for base in sorted(rows):
    sizes = rows[base]
    if "" in sizes:
        t, mal = sizes[""]
        print(f"| {base} | {t}; {mal} mallocs | | |")
        continue
    cells = []
    for size in ("1k", "100k", "1M"):
        t, mal = sizes.get(size, (None, None))
        cells.append(f"{t}; {mal}" if t else "")
    print(f"| {base} | " + " | ".join(cells) + " |")
print()
print("Per operation; `check` and `check bytes` are one decision each (16,384 pre-generated queries cycled), `batch100` is 100 decisions, `apply100` a 100-record batch. Full percentiles: [results/inprocess-raw.md](results/inprocess-raw.md).")
