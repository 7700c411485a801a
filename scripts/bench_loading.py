#!/usr/bin/env python3
"""Timing driver for scripts/bench_loading.sh: how a training job reads a dataset.

    bench_loading.py loop ROOT N [--procs P] [--calls python|os]
        open + read + close of the files ROOT/dDDDD/fFFFFFF.bin (1,000 a directory, as
        bench_gen.py names them) 0..N-1, split among P processes (started before the clock
        starts); prints the wall time in seconds. --calls python uses open(p, "rb").read(),
        as data loaders do (it also fstats and asks isatty); --calls os uses os.open,
        os.read and os.close only.
    bench_loading.py loader ROOT N [--workers W] [--batch B]
        a PyTorch DataLoader (num_workers=W, batch_size=B) over a Dataset whose __getitem__
        opens, reads and closes one file, if torch imports here; otherwise the same with a
        multiprocessing.Pool of W processes (imap, chunksize=B); prints "SECONDS KIND".
    bench_loading.py bigread FILE
        reads FILE sequentially in 1 MiB chunks; prints "SECONDS BYTES".
    bench_loading.py table SAMPLES.tsv OUT.md
        the Markdown table of bench_loading.sh from its samples.
"""

import multiprocessing as mp
import os
import statistics
import sys
import time

PER_DIR = 1000


def path_of(root, i):
    return os.path.join(root, "d%04d" % (i // PER_DIR), "f%06d.bin" % (i % PER_DIR))


def read_python(paths):
    n = 0
    for p in paths:
        with open(p, "rb") as f:
            n += len(f.read())
    return n


def read_os(paths):
    n = 0
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            while True:
                b = os.read(fd, 1 << 16)
                if not b:
                    break
                n += len(b)
        finally:
            os.close(fd)
    return n


def worker(paths, calls, go, done):
    go.wait()
    (read_python if calls == "python" else read_os)(paths)
    done.put(1)


def loop(root, n, procs, calls):
    paths = [path_of(root, i) for i in range(n)]
    if procs == 1:
        t = time.perf_counter()
        (read_python if calls == "python" else read_os)(paths)
        return time.perf_counter() - t
    ctx = mp.get_context("fork")
    go, done = ctx.Event(), ctx.Queue()
    ps = [ctx.Process(target=worker, args=(paths[k::procs], calls, go, done)) for k in range(procs)]
    for p in ps:
        p.start()
    time.sleep(0.2)
    t = time.perf_counter()
    go.set()
    for _ in ps:
        done.get()
    elapsed = time.perf_counter() - t
    for p in ps:
        p.join()
    return elapsed


class FileDataset:
    """A map-style dataset: item i is the bytes of file i."""

    def __init__(self, root, n):
        self.root, self.n = root, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        with open(path_of(self.root, i), "rb") as f:
            return len(f.read())


def loader(root, n, workers, batch):
    ds = FileDataset(root, n)
    try:
        import torch.utils.data as tud  # noqa: F401
    except Exception:
        tud = None
    if tud is not None:
        dl = tud.DataLoader(ds, batch_size=batch, num_workers=workers, collate_fn=len)
        t = time.perf_counter()
        for _ in dl:
            pass
        return time.perf_counter() - t, "torch DataLoader"
    ctx = mp.get_context("fork")
    with ctx.Pool(workers) as pool:
        pool.map(abs, range(workers))  # workers started before the clock
        t = time.perf_counter()
        for _ in pool.imap(ds.__getitem__, range(n), chunksize=batch):
            pass
        return time.perf_counter() - t, "multiprocessing.Pool"


def bigread(path):
    buf = bytearray(1 << 20)
    total = 0
    t = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while True:
            k = f.readinto(buf)
            if not k:
                break
            total += k
    return time.perf_counter() - t, total


# ---------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------

COLUMNS = ["native", "bindfs", "rw_v", "rw_latest", "ro_v", "ro_latest"]


def fmt(v, unit):
    if v is None:
        return "—"
    if unit == "s":
        return "%.3f s" % v if v < 10 else "%.2f s" % v
    if unit == "MB/s":
        return "%.0f MB/s" % (v / 1e6)
    if unit == "MB":
        return "%.1f MB" % (v / 1e6)
    return str(v)


def table(samples, out):
    """SAMPLES.tsv lines: KEY COLUMN VALUE; rows are described by lines 'row KEY LABEL|UNIT|TARGETS'."""
    rows, vals, throughput = [], {}, set()
    for line in open(samples):
        parts = line.rstrip("\n").split("\t")
        if parts[0] == "row":
            rows.append((parts[1], parts[2], parts[3], parts[4]))
            if parts[3] == "MB/s":
                throughput.add(parts[1])
        else:
            vals.setdefault((parts[0], parts[1]), []).append(float(parts[2]))
    # The best run of each: other processes on a shared machine only ever add time (or take
    # throughput), so the best run is the one nearest the cost of the work itself.
    best = {k: (max(v) if k[0] in throughput else min(v)) for k, v in vals.items()}
    lines = [
        "| workload | native | bindfs | read-write `vN/` | read-write `latest/` | read-only `vN/` "
        "| read-only `latest/` | rw ÷ native | ro ÷ native | latest ÷ vN (rw / ro) | rw, ro ÷ bindfs | targets |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, label, unit, targets in rows:
        g = {c: best.get((key, c)) for c in COLUMNS}
        higher = unit == "MB/s"

        def ratio(a, b):
            if a is None or b is None or b == 0:
                return None
            return a / b

        def cost(a, b):  # slowdown: > 1 is slower than b
            r = ratio(a, b)
            return None if r is None else (1 / r if higher else r)

        rw, ro = cost(g["rw_v"], g["native"]), cost(g["ro_v"], g["native"])
        lv = cost(g["rw_latest"], g["rw_v"]), cost(g["ro_latest"], g["ro_v"])
        vb = cost(g["rw_v"], g["bindfs"]), cost(g["ro_v"], g["bindfs"])
        show = lambda r: "—" if r is None else "%.2f×" % r  # noqa: E731
        checks = []
        for t in filter(None, targets.split(";")):
            what, limit = t.split("<=")
            limit = float(limit)
            got = {
                "rw": rw, "ro": ro, "latest": max(filter(None, lv), default=None),
                "bindfs": max(filter(None, vb), default=None),
            }[what]
            ok = got is not None and got <= limit
            label_t = {"rw": "rw", "ro": "ro", "latest": "latest", "bindfs": "vs bindfs"}[what]
            checks.append("%s ≤ %g× %s" % (label_t, limit, "✓" if ok else "✗"))
        lines.append(
            "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s / %s | %s / %s | %s |"
            % (
                label, *(fmt(g[c], unit) for c in COLUMNS), show(rw), show(ro),
                show(lv[0]), show(lv[1]), show(vb[0]), show(vb[1]),
                ", ".join(checks) or "info",
            )
        )
    # The spread of every figure, for the notes: each contender's runs, worst over best.
    spread = sorted(
        (max(v) / min(v) if k[0] not in throughput else max(v) / min(v), k)
        for k, v in vals.items()
        if len(v) > 1 and min(v) > 0
    )
    if spread:
        lines.append("")
        lines.append(
            "Spread of the runs (slowest ÷ fastest of each figure): median %.2f×, largest %.2f× (%s, %s)."
            % (statistics.median(x for x, _ in spread), spread[-1][0], spread[-1][1][0], spread[-1][1][1])
        )
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")
    met = sum(x.count("✓") for x in lines)
    missed = sum(x.count("✗") for x in lines)
    print("%d met, %d missed" % (met, missed))


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    cmd, args = argv[1], argv[2:]

    def opt(name, default):
        if name in args:
            i = args.index(name)
            v = args[i + 1]
            del args[i:i + 2]
            return v
        return default

    if cmd == "loop":
        procs, calls = int(opt("--procs", 1)), opt("--calls", "python")
        print("%.6f" % loop(args[0], int(args[1]), procs, calls))
    elif cmd == "loader":
        workers, batch = int(opt("--workers", 4)), int(opt("--batch", 32))
        secs, kind = loader(args[0], int(args[1]), workers, batch)
        print("%.6f %s" % (secs, kind))
    elif cmd == "bigread":
        secs, total = bigread(args[0])
        print("%.6f %d" % (secs, total))
    elif cmd == "table":
        table(args[0], args[1])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
