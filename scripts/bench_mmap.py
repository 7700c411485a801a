#!/usr/bin/env python3
"""mmap random-read benchmark for scripts/bench.sh.

    bench_mmap.py [--pages N] [--rounds R] [--seed S] LABEL=FILE...

Each round maps every FILE read-only (fresh mapping: pages are in the page cache but not yet
mapped, so every touch of an unmapped page is a page fault), reads one byte of each of N
random 4 KiB pages (the same pages, in the same order, for every FILE of that round), and
unmaps it; only the touches are timed. The FILEs take turns going first. Before the first
round each FILE is read once with read(2) and touched once through a mapping (warm page
cache, untimed).

Prints one JSON object: {LABEL: {"pages_per_s": median, "samples": [...]}, "pages": N, ...}.
"""

import argparse
import json
import mmap
import os
import random
import statistics
import sys
import time

PAGE = 4096


def warm(path):
    with open(path, "rb", buffering=0) as f:
        while f.read(8 << 20):
            pass


def one_round(path, offsets):
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        m = mmap.mmap(fd, size, prot=mmap.PROT_READ)
    finally:
        os.close(fd)
    try:
        t0 = time.perf_counter()
        s = 0
        for off in offsets:
            s += m[off]
        t1 = time.perf_counter()
    finally:
        m.close()
    return t1 - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pages", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("files", nargs="+", metavar="LABEL=FILE")
    a = ap.parse_args()

    files = []
    for spec in a.files:
        label, sep, path = spec.partition("=")
        if not sep:
            sys.exit(f"bench_mmap.py: expected LABEL=FILE, got {spec!r}")
        files.append((label, path))
    sizes = {os.stat(p).st_size for _, p in files}
    if len(sizes) != 1:
        sys.exit(f"bench_mmap.py: the files differ in size: {sorted(sizes)}")
    npages = sizes.pop() // PAGE
    if npages == 0:
        sys.exit("bench_mmap.py: the file is smaller than a page")
    n = min(a.pages, npages)
    rng = random.Random(a.seed)

    for _, path in files:
        warm(path)
        one_round(path, range(0, npages * PAGE, PAGE))
    samples = {label: [] for label, _ in files}
    for r in range(a.rounds):
        offsets = [p * PAGE for p in rng.sample(range(npages), n)]
        k = r % len(files)
        for label, path in files[k:] + files[:k]:
            samples[label].append(n / one_round(path, offsets))
    out = {"pages": n, "file_pages": npages, "rounds": a.rounds}
    for label, xs in samples.items():
        out[label] = {"pages_per_s": statistics.median(xs), "samples": [round(x) for x in xs]}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
