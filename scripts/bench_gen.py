#!/usr/bin/env python3
"""Data generator for the benchmarks (scripts/bench.sh, bench_core.sh, bench_mount.sh, bench_drafts.sh).

    bench_gen.py random-tree DIR DIRS FILES SIZE   # DIRS x FILES files of SIZE random bytes
    bench_gen.py small-tree  DIR DIRS FILES        # DIRS x FILES tiny files, distinct content
    bench_gen.py big-files   DIR COUNT SIZE        # COUNT files of SIZE random bytes

Every file has distinct content, so the store cannot deduplicate any of it. Sizes accept the
suffixes K, M, G (binary). Files are named dNNNN/fNNNNNN.bin so that paths sort and nest the
same way on every run.
"""

import os
import sys

CHUNK = 8 << 20


def size_of(text):
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    if text[-1].upper() in units:
        return int(text[:-1]) * units[text[-1].upper()]
    return int(text)


def dir_name(d):
    return f"d{d:04d}"


def file_name(f):
    return f"f{f:06d}.bin"


def random_tree(root, dirs, files, size):
    for d in range(dirs):
        sub = os.path.join(root, dir_name(d))
        os.makedirs(sub, exist_ok=True)
        # One urandom call per directory: distinct random bytes for every file, cheaply.
        block = os.urandom(files * size)
        for f in range(files):
            with open(os.path.join(sub, file_name(f)), "wb") as out:
                out.write(block[f * size:(f + 1) * size])


def small_tree(root, dirs, files):
    for d in range(dirs):
        sub = os.path.join(root, dir_name(d))
        os.makedirs(sub, exist_ok=True)
        for f in range(files):
            with open(os.path.join(sub, file_name(f)), "wb") as out:
                out.write(f"{dir_name(d)}/{file_name(f)}\n".encode())


def big_files(root, count, size):
    os.makedirs(root, exist_ok=True)
    for i in range(count):
        with open(os.path.join(root, f"big{i:02d}.bin"), "wb") as out:
            left = size
            while left > 0:
                n = min(CHUNK, left)
                out.write(os.urandom(n))
                left -= n


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    cmd, args = argv[1], argv[2:]
    if cmd == "random-tree" and len(args) == 4:
        random_tree(args[0], int(args[1]), int(args[2]), size_of(args[3]))
    elif cmd == "small-tree" and len(args) == 3:
        small_tree(args[0], int(args[1]), int(args[2]))
    elif cmd == "big-files" and len(args) == 3:
        big_files(args[0], int(args[1]), size_of(args[2]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
