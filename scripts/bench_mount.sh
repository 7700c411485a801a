#!/usr/bin/env bash
# Mount benchmark for artifactfs: every figure is a ratio against baselines measured in the
# same run on the same data, because the machines this runs on are shared and noisy.
#
#   scripts/bench_mount.sh [--quick] [--keep] [--out FILE] [--runs N] [--meta-runs N]
#                          [--count-requests]
#
#   (1) sequential read (dd bs=1M to /dev/null) of a 1 GiB file:
#         artifactfs  MOUNT/big/v0/big.bin
#         native      STORE/blobs/xx/<sha256>, the blob file itself
#         bindfs      the same blob through `bindfs -r STORE/blobs`
#       warm page cache (each file read once first, then timed) and cold (sync and
#       echo 3 > /proc/sys/vm/drop_caches before every timed read). Figures in MB/s; the
#       ratios are throughput ratios (higher is better).
#   (2) `ls -lR`, `find` and stat of every file (`find DIR -printf '%s %T@\n'`) of a
#       100,000-file version (100 dirs x 1,000 small files):
#         artifactfs  MOUNT/tree/v0
#         native      the source directory the version was logged from
#         bindfs      `bindfs -r` of that source directory
#       first pass: right after a fresh mount (artifactfs and bindfs are unmounted and
#       mounted again) and after dropping the page, dentry and inode caches, for all three;
#       second pass: the same command again immediately. Figures in seconds; the ratios are
#       time ratios (lower is better).
#
# Targets (issue 3): warm sequential read >= 0.95x native; second-pass `ls -lR` <= 1.5x
# native; every figure ahead of bindfs.
#
# Each figure is the median of --runs (default 5) cold reads, 3 x --runs warm reads (they
# are short, so noise weighs more), or --meta-runs (default 3) pairs of passes. Within a run the three contenders are measured back to back, in an order
# that rotates from run to run, so slow phases of the machine hit them alike. Output goes
# to /dev/null; LC_ALL=C. --quick shrinks the data (a 256 MiB file, 10 x 1,000 files) and
# the run counts for a smoke run of about a minute.
#
# --count-requests adds a table of the FUSE requests artifactfs receives per pass (from a
# separate mount at RUST_LOG=debug, counted in STORE/mount.log; not timed): where the time
# of a slow figure goes.
#
# Data, store and mount points live in a fresh directory under $BENCH_DIR (default
# /var/tmp), removed at the end unless --keep. Every mount is unmounted on exit, also on
# failure or interrupt.
#
# Needs root (drop_caches, kernel passthrough), /dev/fuse, fuse3, bash, python3 (the data
# generator scripts/bench_gen.py), coreutils, findutils, cargo; installs bindfs with apt-get
# if it is missing.
set -euo pipefail
# Helpers every benchmark script shares: usage, commas, stamp.
source "$(dirname "${BASH_SOURCE[0]}")/bench_lib.sh"


QUICK=0 KEEP=0 OUT="" RUNS="" META_RUNS="" COUNT=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --keep) KEEP=1 ;;
        --out) OUT=${2:?--out needs a FILE}; shift ;;
        --out=*) OUT=${1#--out=} ;;
        --runs) RUNS=${2:?--runs needs N}; shift ;;
        --meta-runs) META_RUNS=${2:?--meta-runs needs N}; shift ;;
        --count-requests) COUNT=1 ;;
        -h|--help) usage 0 ;;
        *) echo "bench_mount.sh: unknown argument $1" >&2; usage 2 >&2 ;;
    esac
    shift
done
if [[ -n $OUT && $OUT != /* ]]; then OUT="$PWD/$OUT"; fi

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
GEN=(python3 "$ROOT/scripts/bench_gen.py")
export LC_ALL=C

if [[ $QUICK == 1 ]]; then
    BIG_SIZE=256M BIG_LABEL="256 MiB" TREE_DIRS=10 TREE_FILES=1000
    : "${RUNS:=3}" "${META_RUNS:=2}"
else
    BIG_SIZE=1G BIG_LABEL="1 GiB" TREE_DIRS=100 TREE_FILES=1000
    : "${RUNS:=5}" "${META_RUNS:=3}"
fi
# 100000 -> 100,000
TREE_N=$(commas $((TREE_DIRS * TREE_FILES)))
WARM_RUNS=$((3 * RUNS))

say() { printf '[bench] %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

# --- prerequisites -----------------------------------------------------------------------
[[ $(id -u) == 0 ]] || die "needs root (drop_caches, kernel passthrough)"
[[ -c /dev/fuse ]] || die "/dev/fuse is missing"
[[ -w /proc/sys/vm/drop_caches ]] || die "/proc/sys/vm/drop_caches is not writable"
command -v fusermount3 >/dev/null || die "fusermount3 is missing (apt-get install fuse3)"
if ! command -v bindfs >/dev/null; then
    say "installing bindfs"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y bindfs >/dev/null 2>&1 ||
        { apt-get update >/dev/null && apt-get install -y bindfs >/dev/null; } ||
        die "could not install bindfs"
fi
BINDFS_VERSION=$(bindfs --version 2>&1 | head -n 1)

# --- build -------------------------------------------------------------------------------
say "building the release binary"
(cd "$ROOT" && cargo build --release --quiet)
BIN="$ROOT/target/release/artifactfs"

# --- work dir, mounts, cleanup -----------------------------------------------------------
BASE_DIR=${BENCH_DIR:-/var/tmp}
mkdir -p "$BASE_DIR"
W=$(mktemp -d "$BASE_DIR/bench_mount.XXXXXX")
STORE="$W/store"
MNT="$W/mnt"                 # artifactfs
BMNT_BLOBS="$W/bindfs_blobs" # bindfs -r STORE/blobs
BMNT_TREE="$W/bindfs_tree"   # bindfs -r W/tree
mkdir -p "$MNT" "$BMNT_BLOBS" "$BMNT_TREE"

is_mounted() { mountpoint -q "$1" 2>/dev/null; }

unmount_one() { # MOUNTPOINT
    local mp=$1
    is_mounted "$mp" || return 0
    if [[ $mp == "$MNT" ]]; then
        "$BIN" umount "$mp" >/dev/null 2>&1 || true
    else
        fusermount3 -u "$mp" >/dev/null 2>&1 || true
    fi
    if is_mounted "$mp"; then
        umount -l "$mp" 2>/dev/null || true
    fi
}

cleanup() {
    local rc=$? mp
    trap - EXIT INT TERM
    for mp in "$MNT" "$BMNT_BLOBS" "$BMNT_TREE"; do unmount_one "$mp"; done
    if [[ $KEEP == 1 ]]; then
        say "kept work dir $W"
    elif findmnt -rno TARGET | grep -qF "$W"; then
        say "a mount under $W is still there; not removing $W"
    else
        chmod -R u+w "$W" 2>/dev/null || true # blobs are read-only
        rm -rf "$W"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
say "work dir $W ($(findmnt -no FSTYPE -T "$W" 2>/dev/null || echo '?'))"

# mount_artifactfs [RUST_LOG level]: mounts the store at $MNT; the timed mounts log at the
# default level, whatever RUST_LOG the caller has set.
mount_artifactfs() {
    unmount_one "$MNT"
    if [[ -n ${1:-} ]]; then
        RUST_LOG=$1 "$BIN" --store "$STORE" mount "$MNT" >"$W/last.out" 2>&1
    else
        env -u RUST_LOG "$BIN" --store "$STORE" mount "$MNT" >"$W/last.out" 2>&1
    fi || { cat "$W/last.out" >&2; tail -n 20 "$STORE/mount.log" >&2 2>/dev/null; die "mount failed"; }
}

mount_bindfs() { # SRC MOUNTPOINT
    unmount_one "$2"
    bindfs -r "$1" "$2" >"$W/last.out" 2>&1 || { cat "$W/last.out" >&2; die "bindfs $1 failed"; }
}

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

# --- timing ------------------------------------------------------------------------------

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

# timed KEY CMD...: runs CMD (output to /dev/null), appends its wall time to $W/t/KEY.
timed() {
    local key=$1 t0
    shift
    stamp; t0=$_T
    if ! "$@" >/dev/null 2>"$W/last.err"; then
        say "FAILED: $*"
        head -c 2000 "$W/last.err" >&2
        exit 1
    fi
    stamp
    awk -v a="$t0" -v b="$_T" 'BEGIN {printf "%.5f\n", b - a}' >>"$W/t/$key"
}
mkdir -p "$W/t"

med() { median <"$W/t/$1"; }
samples() { tr '\n' ' ' <"$W/t/$1"; }

# The three contenders, in an order that rotates with the run number.
order() { local r=$1 all=(artifactfs native bindfs); echo "${all[r % 3]} ${all[(r + 1) % 3]} ${all[(r + 2) % 3]}"; }

# --- data --------------------------------------------------------------------------------
say "generating data: one $BIG_LABEL file, $TREE_N small files ($TREE_DIRS dirs x $TREE_FILES)"
"${GEN[@]}" big-files "$W/bigsrc" 1 "$BIG_SIZE"
mv "$W/bigsrc/big00.bin" "$W/bigsrc/big.bin"
"${GEN[@]}" small-tree "$W/tree" "$TREE_DIRS" "$TREE_FILES"
say "logging both into the store"
"$BIN" --store "$STORE" log big "$W/bigsrc" --type dataset >/dev/null
"$BIN" --store "$STORE" log tree "$W/tree" --type dataset >/dev/null
rm -rf "$W/bigsrc" # the native baseline is the blob file itself
sync

mount_artifactfs
mount_bindfs "$STORE/blobs" "$BMNT_BLOBS"
mount_bindfs "$W/tree" "$BMNT_TREE"
PASSTHROUGH=$(grep -o 'kernel passthrough [a-z]*' "$STORE/mount.log" | tail -n 1 | awk '{print $3}')
SHA=$(python3 -c 'import os, sys; print(os.getxattr(sys.argv[1], "user.artifactfs.sha256").decode())' \
    "$MNT/big/v0/big.bin")
BLOB_REL="${SHA:0:2}/$SHA"
[[ -f $STORE/blobs/$BLOB_REL ]] || die "blob $STORE/blobs/$BLOB_REL not found"
BIG_BYTES=$(stat -c %s "$STORE/blobs/$BLOB_REL")
[[ $BIG_BYTES == $(stat -c %s "$MNT/big/v0/big.bin") ]] || die "size through the mount differs"

declare -A BIG_PATH=(
    [artifactfs]="$MNT/big/v0/big.bin"
    [native]="$STORE/blobs/$BLOB_REL"
    [bindfs]="$BMNT_BLOBS/$BLOB_REL"
)
declare -A TREE_PATH=(
    [artifactfs]="$MNT/tree/v0"
    [native]="$W/tree"
    [bindfs]="$BMNT_TREE"
)
# The same data everywhere, or the timings mean nothing.
for c in artifactfs native bindfs; do
    n=$(find "${TREE_PATH[$c]}" -type f | wc -l)
    [[ $n == $((TREE_DIRS * TREE_FILES)) ]] || die "$c shows $n files, not $TREE_N"
done

# --- (1) sequential read -----------------------------------------------------------------
read_big() { dd if="$1" of=/dev/null bs=1M status=none; }

say "sequential read of $BIG_LABEL, warm page cache ($WARM_RUNS runs)"
for c in artifactfs native bindfs; do read_big "${BIG_PATH[$c]}"; done # warm up
for ((r = 0; r < WARM_RUNS; r++)); do
    for c in $(order "$r"); do timed "read_warm_$c" read_big "${BIG_PATH[$c]}"; done
done
say "sequential read of $BIG_LABEL, cold page cache ($RUNS runs)"
for ((r = 0; r < RUNS; r++)); do
    for c in $(order "$r"); do
        drop_caches
        timed "read_cold_$c" read_big "${BIG_PATH[$c]}"
    done
done
for c in artifactfs native bindfs; do
    say "$(printf '%-26s warm %s| cold %s' "read $c" "$(samples "read_warm_$c")" "$(samples "read_cold_$c")")"
done

# --- (2) listing and stat of every file --------------------------------------------------
tool_ls() { ls -lR "$1"; }
tool_find() { find "$1"; }
tool_stat() { find "$1" -printf '%s %T@\n'; }

# fresh_start CONTENDER: what comes before a first pass: a new mount, then no caches.
fresh_start() {
    case $1 in
        artifactfs) mount_artifactfs ;;
        bindfs) mount_bindfs "$W/tree" "$BMNT_TREE" ;;
    esac
    drop_caches
}

for tool in ls find stat; do
    say "$tool of $TREE_N files, first and second pass ($META_RUNS runs)"
    for ((r = 0; r < META_RUNS; r++)); do
        for c in $(order "$r"); do
            fresh_start "$c"
            timed "${tool}_1_$c" "tool_$tool" "${TREE_PATH[$c]}"
            timed "${tool}_2_$c" "tool_$tool" "${TREE_PATH[$c]}"
        done
    done
    for c in artifactfs native bindfs; do
        say "$(printf '%-26s 1st %s| 2nd %s' "$tool $c" "$(samples "${tool}_1_$c")" "$(samples "${tool}_2_$c")")"
    done
done

# --- (3) optional: FUSE requests per pass ------------------------------------------------
REQ_ROWS=()
if [[ $COUNT == 1 ]]; then
    say "counting FUSE requests (a separate mount at RUST_LOG=debug, not timed)"
    LOG="$STORE/mount.log"
    mark() { sleep 0.3; wc -l <"$LOG"; } # let the last requests reach the log
    # count_ops FROM TO: "N total: OP n, OP n, ..." for log lines FROM+1..TO
    count_ops() {
        sed -n "$(($1 + 1)),$2p" "$LOG" |
            sed -n 's/.*\] FUSE( *[0-9]*) ino 0x[0-9a-f]* \([A-Z_]*\).*/\1/p' |
            sort | uniq -c | sort -rn |
            awk '{t += $1; s = s (s ? ", " : "") $2 " " $1} END {printf "%d | %s", t, (t ? s : "—")}'
    }
    mount_artifactfs debug
    read_big "${BIG_PATH[artifactfs]}"
    a=$(mark); read_big "${BIG_PATH[artifactfs]}"; b=$(mark)
    REQ_ROWS+=("| sequential read $BIG_LABEL, warm | $(count_ops "$a" "$b") |")
    for tool in ls find stat; do
        case $tool in
            ls) label="\`ls -lR\`" ;; find) label="\`find\`" ;; stat) label="stat of every file" ;;
        esac
        mount_artifactfs debug
        drop_caches
        a=$(mark); "tool_$tool" "${TREE_PATH[artifactfs]}" >/dev/null; b=$(mark)
        "tool_$tool" "${TREE_PATH[artifactfs]}" >/dev/null; c2=$(mark)
        REQ_ROWS+=("| $label $TREE_N files, first pass | $(count_ops "$a" "$b") |")
        REQ_ROWS+=("| $label $TREE_N files, second pass | $(count_ops "$b" "$c2") |")
    done
    mount_artifactfs # back to the default level
fi

# --- report ------------------------------------------------------------------------------
ROWS=()
fmt_s() { awk -v t="$1" 'BEGIN {printf (t < 10 ? "%.3f s" : "%.2f s"), t}'; }
fmt_mbs() { awk -v b="$BIG_BYTES" -v t="$1" 'BEGIN {printf "%.0f MB/s", b / 1e6 / t}'; }
# Throughput ratio of times a (ours) and b (theirs): b / a. Time ratio: a / b.
tput_ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", b / a}'; }
time_ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
ALL_MET=1
# check VALUE OP LIMIT: appends "✓" or "✗" to $MET (clearing ALL_MET on a miss). Not for use
# in $(...): it sets globals.
check() {
    local mark="✓"
    if ! awk -v v="$1" -v l="$3" -v op="$2" \
        'BEGIN {exit !((op == ">=") ? v >= l : (op == ">") ? v > l : (op == "<=") ? v <= l : v < l)}'; then
        mark="✗"
        ALL_MET=0
    fi
    MET+="${MET:+ }$mark"
}

read_row() { # KIND LABEL
    local k=$1 label=$2 a n b rn rb target
    a=$(med "read_${k}_artifactfs") n=$(med "read_${k}_native") b=$(med "read_${k}_bindfs")
    rn=$(tput_ratio "$a" "$n") rb=$(tput_ratio "$a" "$b")
    if [[ $k == warm ]]; then
        target="≥ 0.95× native; > 1× bindfs"
        MET=""; check "$rn" ">=" 0.95; check "$rb" ">" 1
    else
        target="> 1× bindfs"
        MET=""; check "$rb" ">" 1
    fi
    ROWS+=("| $label | $(fmt_mbs "$a") | $(fmt_mbs "$n") | $(fmt_mbs "$b") | ${rn}× | ${rb}× | $target | $MET |")
}
read_row warm "sequential read $BIG_LABEL, warm cache (throughput)"
read_row cold "sequential read $BIG_LABEL, cold cache (throughput)"

meta_row() { # TOOL PASS LABEL
    local key="$1_$2" a n b rn rb target
    a=$(med "${key}_artifactfs") n=$(med "${key}_native") b=$(med "${key}_bindfs")
    rn=$(time_ratio "$a" "$n") rb=$(time_ratio "$a" "$b")
    if [[ $1 == ls && $2 == 2 ]]; then
        target="≤ 1.5× native; < 1× bindfs"
        MET=""; check "$rn" "<=" 1.5; check "$rb" "<" 1
    else
        target="< 1× bindfs"
        MET=""; check "$rb" "<" 1
    fi
    ROWS+=("| $3 | $(fmt_s "$a") | $(fmt_s "$n") | $(fmt_s "$b") | ${rn}× | ${rb}× | $target | $MET |")
}
for tool in ls find stat; do
    case $tool in
        ls) label="\`ls -lR\`" ;;
        find) label="\`find\`" ;;
        stat) label="stat of every file (\`find -printf '%s %T@'\`)" ;;
    esac
    meta_row "$tool" 1 "$label, $TREE_N files, first pass (time)"
    meta_row "$tool" 2 "$label, $TREE_N files, second pass (time)"
done

CPU=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)
FS=$(findmnt -no FSTYPE -T "$W" 2>/dev/null || echo '?')
{
    echo "| benchmark | artifactfs | native | bindfs | ratio to native | ratio to bindfs | target | met |"
    echo "|---|---|---|---|---|---|---|---|"
    printf '%s\n' "${ROWS[@]}"
    echo
    echo "$(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores ($CPU), kernel $(uname -r), $FS;"
    echo "artifactfs kernel passthrough: ${PASSTHROUGH:-unknown}; $BINDFS_VERSION, \`bindfs -r\` (default options)."
    echo "Reads: median of $WARM_RUNS warm and $RUNS cold \`dd bs=1M\` reads to /dev/null; native is"
    echo "the blob file, bindfs mounts the blob directory; ratios are throughput ratios"
    echo "(artifactfs ÷ other, higher is better); cold = \`sync; echo 3 > /proc/sys/vm/drop_caches\`"
    echo "before every read."
    echo "Listings: median of $META_RUNS runs; first pass right after a fresh mount (artifactfs,"
    echo "bindfs) and dropped caches (all three), second pass immediately after; ratios are time"
    echo "ratios (artifactfs ÷ other, lower is better). Contenders alternate within each run."
    if [[ $QUICK == 1 ]]; then echo "QUICK run: reduced sizes and run counts."; fi
    if [[ $ALL_MET == 1 ]]; then echo "All targets met."; else echo "Some targets missed (✗)."; fi
    if [[ ${#REQ_ROWS[@]} -gt 0 ]]; then
        echo
        echo "FUSE requests artifactfs received (separate mount at RUST_LOG=debug, not timed;"
        echo "FORGETs may land in the next pass):"
        echo
        echo "| pass | requests | by type |"
        echo "|---|---|---|"
        printf '%s\n' "${REQ_ROWS[@]}"
    fi
} >"$W/table.md"
cat "$W/table.md"
if [[ -n $OUT ]]; then cp "$W/table.md" "$OUT"; say "wrote $OUT"; fi
