#!/usr/bin/env python3
"""Why did a request thread wait? Reads `perf sched timehist` output and, for the given
threads, prints their scheduling delays (p50, p99, max) and, for each wait longer than a
threshold, what ran on that CPU meanwhile (who held the core).

    perf sched record -o sched.data -- sleep 3        # while the server is under load
    perf sched timehist -i sched.data > timehist.txt
    benchmarks/sync/sched-waits.py timehist.txt TID [TID ...] [--over MS]

The request threads' TIDs: /proc/PID/task/*/comm ("MHD-worker") with nice 0 in
/proc/PID/task/*/stat (background threads run at nice 10 and SCHED_IDLE).
"""
import collections
import re
import sys

args = sys.argv[1:]
over = 1.0
if "--over" in args:
    i = args.index("--over")
    over = float(args[i + 1])
    del args[i:i + 2]
if len(args) < 2:
    sys.exit(__doc__)
path, tids = args[0], {int(t) for t in args[1:]}

# time [cpu] task[tid/pid] wait-time sch-delay run-time (milliseconds)
line = re.compile(r"\s*([\d.]+)\s+\[(\d+)\]\s+(.+?)\[(\d+)(?:/\d+)?\]\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)")
events = []
for text in open(path):
    m = line.match(text)
    if m:
        events.append((float(m[1]), int(m[2]), m[3].strip(), int(m[4]), float(m[6]), float(m[7])))

for tid in sorted(tids):
    delays = sorted(e[4] for e in events if e[3] == tid)
    if delays:
        print(f"{tid}: {len(delays)} runs, scheduling delay p50 {delays[len(delays) // 2]:.3f} ms, "
              f"p99 {delays[int(len(delays) * 0.99)]:.3f} ms, max {delays[-1]:.3f} ms")

holders = collections.Counter()
long_waits = [e for e in events if e[3] in tids and e[4] > over]
for end, cpu, _, tid, delay, run in long_waits:
    ran_at = end - run / 1000
    waited_from = ran_at - delay / 1000
    meanwhile = [e for e in events if e[1] == cpu and waited_from <= e[0] <= ran_at + 1e-4 and e[3] != tid]
    if meanwhile:
        longest = max(meanwhile, key=lambda e: e[5])
        holders[f"{longest[2]}[{longest[3]}]"] += 1
print(f"{len(long_waits)} waits over {over} ms; the longest-running task on that CPU meanwhile:")
for name, n in holders.most_common(10):
    print(f"  {n:5d}  {name}")
