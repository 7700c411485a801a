#!/usr/bin/env python3
"""Reads every file under ROOT by two processes in turn, one inside run RUN
(ARTIFACTFS_RUN set) and one outside any run, PASSES times each; prints the median
per-open time of each side (microseconds), the median over the passes of inside / outside,
and the number of files. Used by scripts/bench_runs.sh.

    bench_runs.py ROOT RUN PASSES
"""
import os
import statistics
import subprocess
import sys

WORKER = """
import os, sys, time
root = sys.argv[1]
paths = [os.path.join(root, d, f) for d in sorted(os.listdir(root))
         for f in sorted(os.listdir(os.path.join(root, d)))]
def one_pass():
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        os.read(fd, 8192)
        os.close(fd)
one_pass()
print(len(paths), flush=True)
for _ in sys.stdin:
    t0 = time.perf_counter()
    one_pass()
    print(time.perf_counter() - t0, flush=True)
"""


def main():
    root, run, passes = sys.argv[1], sys.argv[2], int(sys.argv[3])
    outside = {k: v for k, v in os.environ.items() if k != "ARTIFACTFS_RUN"}
    procs, files = {}, 0
    for side, env in (("inside", dict(outside, ARTIFACTFS_RUN=run)), ("outside", outside)):
        p = subprocess.Popen([sys.executable, "-c", WORKER, root], env=env, text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        files = int(p.stdout.readline())
        procs[side] = p
    times = {"inside": [], "outside": []}
    for i in range(passes):
        # Turns in alternating order, so that neither side always follows the other.
        for side in (("inside", "outside") if i % 2 else ("outside", "inside")):
            p = procs[side]
            p.stdin.write("go\n")
            p.stdin.flush()
            times[side].append(float(p.stdout.readline()) / files)
    for p in procs.values():
        p.stdin.close()
        p.wait()
    ratio = statistics.median(a / b for a, b in zip(times["inside"], times["outside"]))
    print("%.1f %.1f %.4f %d" % (statistics.median(times["inside"]) * 1e6,
                                 statistics.median(times["outside"]) * 1e6, ratio, files))


if __name__ == "__main__":
    main()
