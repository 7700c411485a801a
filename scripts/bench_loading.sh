#!/usr/bin/env bash
# Dataset-loading benchmark for artifactfs (issue 16): what a training job does to a dataset,
# through MOUNT/NAME/vN/ and MOUNT/NAME/latest/, on the read-write mount and on the read-only
# one (`mount --read-only`), each figure against the native filesystem and bindfs measured in
# the same run on the same data. Nothing here is a timed assertion; the ratios are the result.
#
#   scripts/bench_loading.sh [--quick] [--files N] [--runs N] [--out FILE] [--samples FILE]
#                            [--no-build] [--keep]
#
#   1. open + read + close of N small files (default 100,000 of 1 KiB, 100 directories of
#      1,000; --quick 20,000) in a Python loop (`open(p, "rb").read()`, as data loaders do),
#      1 process and 8 processes, warm (best of --runs after a warm-up pass) and cold (after
#      `sync; echo 3 > /proc/sys/vm/drop_caches`, best of 2); and with os.open/os.read/
#      os.close (no fstat, no isatty), warm.
#   2. A PyTorch DataLoader (num_workers=4, batch 32) whose Dataset opens one file per item, if
#      torch imports here; otherwise the same with a multiprocessing.Pool of 4 (the table says
#      which). Warm.
#   3. `ls -lR`, `find` and stat of every file (`find -printf '%s %T@'`), warm.
#   4. Sequential read of one 1 GiB file (--quick 256 MiB) in 1 MiB reads, warm and cold.
#   5. Memory: the page cache a cold read of that file fills (Cached in /proc/meminfo, after
#      minus before), and each server's peak RSS (VmHWM) at the end of the run.
#
# Contenders: native (the source tree, on the same filesystem), bindfs -r of it, and the store
# holding that tree as loading:v0 mounted twice at once: read-write (`artifactfs mount`) and
# read-only (`artifactfs mount --read-only`), each read through v0/ and through latest/.
# Contenders rotate between runs. Each figure is the best of its runs (the fastest; other
# processes only ever add time), and the notes give the spread; --samples keeps every run
# (KEY, contender, value) in FILE. The data is written once, to a fresh directory under
# $BENCH_DIR (default /var/tmp), and deleted at the end (unless --keep); nothing is deleted
# before the timed runs. The table (Markdown) replaces the section "## Loading datasets" of
# --out (default docs/BENCHMARKS.md), which scripts/bench.sh calls it to append to its own.
#
# Needs root (drop_caches, passthrough), /dev/fuse, fuse3, bindfs, python3, cargo.
set -euo pipefail

usage() { awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"; exit "${1:-0}"; }

CMDLINE="scripts/bench_loading.sh${*:+ $*}"
QUICK=0 FILES="" RUNS=3 OUT="" BUILD=1 KEEP=0 KEEP_SAMPLES=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --files) FILES=${2:?--files needs N}; shift ;;
        --runs) RUNS=${2:?--runs needs N}; shift ;;
        --out) OUT=${2:?--out needs FILE}; shift ;;
        --samples) KEEP_SAMPLES=${2:?--samples needs FILE}; shift ;;
        --no-build) BUILD=0 ;;
        --keep) KEEP=1 ;;
        -h|--help) usage 0 ;;
        *) echo "bench_loading.sh: unknown argument $1" >&2; usage 2 >&2 ;;
    esac
    shift
done
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
: "${OUT:=$ROOT/docs/BENCHMARKS.md}"
if [[ $OUT != /* ]]; then OUT="$PWD/$OUT"; fi
if [[ $QUICK == 1 ]]; then : "${FILES:=20000}"; BIG=256M; else : "${FILES:=100000}"; BIG=1G; fi
DIRS=$(((FILES + 999) / 1000))
DRIVER=(python3 "$ROOT/scripts/bench_loading.py")
export LC_ALL=C
unset ARTIFACTFS_STORE

say() { printf '[bench_loading %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { say "$*"; exit 1; }
[[ $(id -u) == 0 ]] || die "needs root (drop_caches)"
[[ -c /dev/fuse ]] || die "/dev/fuse is missing"
command -v bindfs >/dev/null || {
    say "installing bindfs"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bindfs >/dev/null 2>&1 ||
        die "bindfs is missing and could not be installed"
}

if [[ $BUILD == 1 ]]; then
    say "building the release binary"
    (cd "$ROOT" && cargo build --release --quiet) || die "cargo build failed"
fi
W=$(mktemp -d "${BENCH_DIR:-/var/tmp}/bench_loading.XXXXXX")
BIN="$W/artifactfs"
cp "$ROOT/target/release/artifactfs" "$BIN"
SRC="$W/src" STORE="$W/store" RW="$W/rw" RO="$W/ro" BF="$W/bindfs"
mkdir -p "$RW" "$RO" "$BF"
SAMPLES="$W/samples.tsv"
: >"$SAMPLES"

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for mp in "$RW" "$RO"; do
        mountpoint -q "$mp" && { timeout 60 "$BIN" umount "$mp" >/dev/null 2>&1 || umount -l "$mp"; }
    done
    mountpoint -q "$BF" && { fusermount3 -u "$BF" 2>/dev/null || umount -l "$BF"; }
    if [[ $KEEP == 1 ]]; then say "kept $W"; else
        chmod -R u+w "$W" 2>/dev/null || true
        rm -rf "$W"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
load() { cut -d' ' -f1 /proc/loadavg; }
sample() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$SAMPLES"; } # KEY COLUMN VALUE
rowdef() { printf 'row\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${4:-}" >>"$SAMPLES"; } # KEY LABEL UNIT TARGETS

# --- data: written once; nothing is deleted until the end -------------------------------
say "generating $FILES files of 1 KiB in $DIRS directories, and one $BIG file ($W)"
python3 "$ROOT/scripts/bench_gen.py" random-tree "$SRC" "$DIRS" 1000 1K
if ((FILES % 1000)); then # the last directory holds only what is asked for
    find "$SRC/d$(printf %04d $((DIRS - 1)))" -name 'f*.bin' | sort | tail -n +$((FILES % 1000 + 1)) | xargs -r rm -f
fi
python3 "$ROOT/scripts/bench_gen.py" big-files "$SRC/big" 1 "$BIG"
"$BIN" --store "$STORE" log loading "$SRC" --type dataset >/dev/null
sync

mount_all() {
    env -u RUST_LOG "$BIN" --store "$STORE" mount "$RW" >/dev/null
    env -u RUST_LOG "$BIN" --store "$STORE" mount --read-only "$RO" >/dev/null
    bindfs -r "$SRC" "$BF"
}
unmount_all() {
    timeout 60 "$BIN" umount "$RW"
    timeout 60 "$BIN" umount "$RO"
    fusermount3 -u "$BF"
}
mount_all
PASSTHROUGH=$(python3 -c 'import os,sys; print(os.getxattr(sys.argv[1], "user.artifactfs.passthrough").decode())' "$RW")

declare -A DIR=([native]="$SRC" [bindfs]="$BF" [rw_v]="$RW/loading/v0" [rw_latest]="$RW/loading/latest"
    [ro_v]="$RO/loading/v0" [ro_latest]="$RO/loading/latest")
ALL=(native bindfs rw_v rw_latest ro_v ro_latest)
# order R: the contenders, rotated by R
order() { local r=$1 i n=${#ALL[@]}; for ((i = 0; i < n; i++)); do echo "${ALL[(i + r) % n]}"; done; }

LOADS=("$(load)")
T0=$(date +%s)

# --- 1. small files: warm -------------------------------------------------------------------
rowdef 1a "open + read + close, $FILES files, 1 process, warm (Python \`open().read()\`)" s "rw<=3;ro<=1.3;bindfs<=1;latest<=1.1"
rowdef 1b "… 8 processes, warm" s "bindfs<=1;latest<=1.1"
rowdef 1e "… 1 process, warm, \`os.open\`/\`os.read\`/\`os.close\` (no fstat, no isatty)" s "latest<=1.1"
say "(1) small files, warm: warm-up pass"
for c in "${ALL[@]}"; do "${DRIVER[@]}" loop "${DIR[$c]}" "$FILES" >/dev/null; done
for ((r = 0; r < RUNS; r++)); do
    say "(1) small files, warm: run $((r + 1)) of $RUNS (load $(load))"
    for c in $(order "$r"); do
        sample 1a "$c" "$("${DRIVER[@]}" loop "${DIR[$c]}" "$FILES")"
        sample 1b "$c" "$("${DRIVER[@]}" loop "${DIR[$c]}" "$FILES" --procs 8)"
        sample 1e "$c" "$("${DRIVER[@]}" loop "${DIR[$c]}" "$FILES" --calls os)"
    done
done
LOADS+=("$(load)")

# --- 2. a data loader ---------------------------------------------------------------------
KIND=""
for ((r = 0; r < RUNS; r++)); do
    say "(2) data loader, 4 workers: run $((r + 1)) of $RUNS"
    for c in $(order "$r"); do
        read -r secs kind < <("${DRIVER[@]}" loader "${DIR[$c]}" "$FILES" --workers 4)
        sample 2a "$c" "$secs"
        KIND=$kind
    done
done
rowdef 2a "$KIND, 4 workers, one file per item, warm" s "bindfs<=1;latest<=1.1"

# --- 3. listings through latest/ (native and bindfs have no alias: their own directory) ---
rowdef 3a "\`ls -lR\`, warm" s "latest<=1.1"
rowdef 3b "\`find\`, warm" s "latest<=1.1"
rowdef 3c "stat of every file (\`find -printf '%s %T@'\`), warm" s "latest<=1.1"
timeit() { # KEY COLUMN CMD...
    local key=$1 col=$2 t0 t1
    shift 2
    t0=$(date +%s.%N)
    "$@" >/dev/null
    t1=$(date +%s.%N)
    sample "$key" "$col" "$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')"
}
for c in "${ALL[@]}"; do ls -lR "${DIR[$c]}/" >/dev/null; done
for ((r = 0; r < RUNS; r++)); do
    say "(3) listings: run $((r + 1)) of $RUNS"
    for c in $(order "$r"); do
        timeit 3a "$c" ls -lR "${DIR[$c]}/"
        timeit 3b "$c" find "${DIR[$c]}/"
        timeit 3c "$c" find "${DIR[$c]}/" -printf '%s %T@\n'
    done
done

# --- 4. the big file, warm ------------------------------------------------------------------
rowdef 4a "sequential read of one $BIG file, 1 MiB reads, warm" MB/s "rw<=1.053;latest<=1.1"
for c in "${ALL[@]}"; do "${DRIVER[@]}" bigread "${DIR[$c]}/big/big00.bin" >/dev/null; done
for ((r = 0; r < RUNS; r++)); do
    for c in $(order "$r"); do
        read -r secs bytes < <("${DRIVER[@]}" bigread "${DIR[$c]}/big/big00.bin")
        sample 4a "$c" "$(awk -v b="$bytes" -v t="$secs" 'BEGIN {print b / t}')"
    done
done
LOADS+=("$(load)")

# --- cold: every timed pass after sync and drop_caches --------------------------------------
rowdef 1c "open + read + close, $FILES files, 1 process, cold" s "bindfs<=1;latest<=1.1"
rowdef 1d "… 8 processes, cold" s "bindfs<=1;latest<=1.1"
rowdef 4b "sequential read of one $BIG file, cold" MB/s "bindfs<=1"
rowdef 5a "page cache filled by that cold read" MB ""
cached_kb() { awk '/^Cached:/ {print $2}' /proc/meminfo; }
for ((r = 0; r < 2; r++)); do
    say "(1, 4) cold: run $((r + 1)) of 2 (load $(load))"
    for c in $(order "$r"); do
        drop_caches
        sample 1c "$c" "$("${DRIVER[@]}" loop "${DIR[$c]}" "$FILES")"
        drop_caches
        sample 1d "$c" "$("${DRIVER[@]}" loop "${DIR[$c]}" "$FILES" --procs 8)"
        drop_caches
        before=$(cached_kb)
        read -r secs bytes < <("${DRIVER[@]}" bigread "${DIR[$c]}/big/big00.bin")
        after=$(cached_kb)
        sample 4b "$c" "$(awk -v b="$bytes" -v t="$secs" 'BEGIN {print b / t}')"
        sample 5a "$c" "$(((after - before) * 1024))"
    done
done
LOADS+=("$(load)")

# --- 5. server memory -----------------------------------------------------------------------
rowdef 5b "peak RSS of the server (VmHWM), whole run" MB ""
for m in rw ro; do
    mp=$RW
    [[ $m == ro ]] && mp=$RO
    pid=$(python3 -c 'import os,sys; print(os.getxattr(sys.argv[1], "user.artifactfs.pid").decode())' "$mp")
    kb=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status")
    sample 5b "${m}_v" "$((kb * 1024))"
done
unmount_all
ELAPSED=$(($(date +%s) - T0))

# --- the report -----------------------------------------------------------------------------
"${DRIVER[@]}" table "$SAMPLES" "$W/table.md" >"$W/met.txt"
[[ -z $KEEP_SAMPLES ]] || cp "$SAMPLES" "$KEEP_SAMPLES"
{
    echo "## Loading datasets"
    echo
    echo "Written by \`scripts/bench_loading.sh\` (see its header for what each figure measures)."
    echo "Each figure is the best of its runs; ratios are time ratios, lower is better (a throughput"
    echo "row is turned into one: native's throughput ÷ ours); \`latest ÷ vN\` compares the two paths"
    echo "into the same version on the same mount."
    echo
    echo "- command: \`$CMDLINE\`"
    echo "- date: $(date -u +%Y-%m-%dT%H:%MZ); run time $((ELAPSED / 60)) min; $FILES files of 1 KiB, one $BIG file"
    echo "- machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo) RAM, kernel $(uname -r), $(findmnt -no FSTYPE -T "$W") under ${BENCH_DIR:-/var/tmp}"
    echo "- artifactfs $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'); kernel passthrough on the read-write mount: $PASSTHROUGH; $(bindfs --version 2>&1 | head -n 1); $(python3 --version)"
    echo "- load average at the start, after the warm runs, after the big file, at the end: ${LOADS[*]}"
    echo "- warm: best of $RUNS runs after a warm-up pass; cold: best of 2, each after \`sync; echo 3 > /proc/sys/vm/drop_caches\`"
    echo "- targets: $(cat "$W/met.txt")"
    echo
    cat "$W/table.md"
} >"$W/section.md"
cat "$W/section.md"
if [[ -f $OUT ]] && grep -q '^## Loading datasets' "$OUT"; then
    # Replace the section: from its heading to the next "## " heading or the end.
    awk -v sec="$W/section.md" '
        /^## Loading datasets/ {skip = 1; while ((getline l < sec) > 0) print l; print ""; next}
        skip && /^## / {skip = 0}
        !skip {print}' "$OUT" >"$W/out.md"
    cp "$W/out.md" "$OUT"
elif [[ -f $OUT ]]; then
    { echo; cat "$W/section.md"; } >>"$OUT"
else
    cp "$W/section.md" "$OUT"
fi
say "wrote the section to $OUT"
