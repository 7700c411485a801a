#!/usr/bin/env bash
# Two builds of artifactfs side by side on writing drafts through the mount: `cp -r` into a
# fresh draft, then the commit through `.commit`, for 20,000 files of 4 KiB (100 directories)
# and for 4 files of 256 MiB.
#
#   scripts/bench.sh builds OLD_BINARY NEW_BINARY [RUNS]     (RUNS: default 5)
#
# The builds take turns run by run (old first in odd runs, new first in even ones), each run
# on a fresh store, mount and draft, with `sync`, dropped caches and the source read back in
# before each copy; nothing is deleted until the end (this machine's ext4 has no journal, and
# creating files soon after deleting many is several times slower). Prints every run, then
# the medians and new ÷ old for the copy, with the commit's times beside it. Needs root, fuse3,
# python3 and bc.
set -euo pipefail
[[ $# -ge 2 && ${1:-} != -h && ${1:-} != --help ]] || { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
OLD=$1; NEW=$2; RUNS=${3:-5}
[[ $(id -u) == 0 ]] || { echo "bench_builds.sh: needs root (it drops the page cache)" >&2; exit 1; }
W=$(mktemp -d "${BENCH_DIR:-/var/tmp}/bench-builds.XXXX"); chattr +T "$W" 2>/dev/null || true
# Every mount made here is unmounted on exit, also on failure; then the data goes.
cleanup() {
    for mp in "$W"/mp-*; do
        if mountpoint -q "$mp"; then fusermount3 -uz "$mp" 2>/dev/null || umount -l "$mp"; fi
    done
    rm -rf "$W"
}
trap cleanup EXIT
python3 - "$W/small" "$W/big" <<'PY'
import os, sys
small, big = sys.argv[1], sys.argv[2]
for d in range(100):
    os.makedirs(f"{small}/d{d:03}")
    for f in range(200):
        with open(f"{small}/d{d:03}/f{f:03}.bin", "wb") as h: h.write(os.urandom(4096))
os.makedirs(big)
for i in range(4):
    with open(f"{big}/part{i}.bin", "wb") as h:
        for _ in range(256): h.write(os.urandom(1 << 20))
PY
mkdir -p "$W/seed"; echo seed > "$W/seed/s"
warm() { sync; echo 3 > /proc/sys/vm/drop_caches; find "$1" -type f -exec cat {} + > /dev/null; sync; }
one() { # bin tag data run
  local bin=$1 tag=$2 data=$3 run=$4 st="$W/st-$2-$3-$4" mp="$W/mp-$2-$3-$4"
  mkdir -p "$mp"; "$bin" --store "$st" log seed "$W/seed" --type dataset >/dev/null
  "$bin" --store "$st" mount "$mp" >/dev/null
  mkdir "$mp/drafts/x"; warm "$W/$data"
  local t0 t1 t2
  t0=$(date +%s.%N); cp -r "$W/$data" "$mp/drafts/x/data"; t1=$(date +%s.%N)
  echo commit > "$mp/drafts/x/.commit"; t2=$(date +%s.%N)
  "$bin" umount "$mp" >/dev/null
  echo "$tag $data $(echo "$t1 - $t0" | bc) $(echo "$t2 - $t1" | bc)"
}
for data in small big; do
  for run in $(seq 1 "$RUNS"); do
    if (( run % 2 )); then one "$OLD" old "$data" "$run"; one "$NEW" new "$data" "$run"
    else one "$NEW" new "$data" "$run"; one "$OLD" old "$data" "$run"; fi
  done
done | tee "$W/results"
python3 - "$W/results" <<'PY'
import sys, statistics as st
rows=[l.split() for l in open(sys.argv[1])]
for data in ["small","big"]:
    o=[float(r[2]) for r in rows if r[0]=="old" and r[1]==data]; n=[float(r[2]) for r in rows if r[0]=="new" and r[1]==data]
    oc=[float(r[3]) for r in rows if r[0]=="old" and r[1]==data]; nc=[float(r[3]) for r in rows if r[0]=="new" and r[1]==data]
    print(f"{data}: cp -r old {st.median(o):.3f}s new {st.median(n):.3f}s ratio {st.median(n)/st.median(o):.3f}; commit old {st.median(oc):.3f}s new {st.median(nc):.3f}s")
PY
