#!/usr/bin/env python3
"""Reads every file under ROOT by three processes in turn, one inside run RUN
(ARTIFACTFS_RUN set) and two outside any run, PASSES times each; prints the median
per-file time inside and outside (microseconds), the median over the passes of inside /
outside, the same of the second outside process / the first (what noise alone gives), and
the number of files. Used by scripts/bench_runs.sh.

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
    sides = (("inside", dict(outside, ARTIFACTFS_RUN=run)), ("outside", outside),
             ("control", outside))
    for side, env in sides:
        p = subprocess.Popen([sys.executable, "-c", WORKER, root], env=env, text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        files = int(p.stdout.readline())
        procs[side] = p
    times = {side: [] for side, _ in sides}
    names = [side for side, _ in sides]
    for i in range(passes):
        # Turns in rotating order, so that no side always follows another.
        for side in names[i % 3:] + names[:i % 3]:
            p = procs[side]
            p.stdin.write("go\n")
            p.stdin.flush()
            times[side].append(float(p.stdout.readline()) / files)
    for p in procs.values():
        p.stdin.close()
        p.wait()
    def ratio(a, b):
        return statistics.median(x / y for x, y in zip(times[a], times[b]))
    print("%.1f %.1f %.4f %.4f %d" % (statistics.median(times["inside"]) * 1e6,
                                      statistics.median(times["outside"]) * 1e6,
                                      ratio("inside", "outside"), ratio("control", "outside"),
                                      files))


if __name__ == "__main__":
    main()
