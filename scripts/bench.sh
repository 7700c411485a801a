#!/usr/bin/env bash
# Scale benchmark for artifactfs: a million files, bounded memory, near-native speed. Every
# figure is a ratio against a baseline measured in the same run on the same data (the native
# filesystem, and bindfs as a plain FUSE filesystem), because the machines this runs on are
# shared and noisy; nothing here is a timed assertion.
#
#   scripts/bench.sh [--quick] [--keep] [--out FILE] [--runs N] [--meta-runs N]
#                    [--commit-runs N] [--bindfs-cap SECONDS] [--no-build]
#   scripts/bench.sh core|mount|drafts|shared|bigwrites [OPTIONS]   the smaller suites:
#                    scripts/bench_core.sh (log, hashing, commits), bench_mount.sh (reads and
#                    listings through the mount), bench_drafts.sh (writing drafts through the
#                    mount), bench_shared.sh (a shared store on PostgreSQL + S3 against rclone,
#                    s3fs and the embedded store), bench_bigwrites.sh (checkpoints: big files
#                    logged, written into drafts, cloned; wandb alongside); --help each
#   scripts/bench.sh runs [OPTIONS]    what recording a run's inputs costs a data loader
#   scripts/bench.sh builds OLD NEW [RUNS]   two builds side by side on writing drafts
#
#   1. fio on a big file of a version (MOUNT/big/v0/big.bin) vs the blob file itself (native)
#      vs that blob through `bindfs -r STORE/blobs`: sequential 1 MiB and random 4 KiB reads,
#      1 and 4 jobs, warm page cache, time-based; and one sequential read of the whole file
#      after `sync; echo 3 > /proc/sys/vm/drop_caches` (cold). psync, buffered, invalidate=0.
#   2. mmap: random 4 KiB pages of that file touched through fresh mappings
#      (scripts/bench_mmap.py), the same three ways.
#   3. `ls -lR`, `find` and stat of every file (`find -printf '%s %T@'`) of the big version
#      (1,000 dirs x 1,000 files of 1 KiB; --quick 100 x 1,000) vs the source directory vs
#      `bindfs -r` of it: first pass after a fresh mount and dropped caches, second pass right
#      after. A bindfs pass longer than --bindfs-cap is stopped and shown as "> CAP"; its
#      later passes are skipped (and say so).
#   4. `artifactfs log` of that tree into an empty store; `cp -r` of it into a draft of an
#      empty store through the mount, then `echo commit > .commit`; each vs native `cp -r` of
#      the same tree on the same filesystem, and `cp -r` through `bindfs` (the cost of FUSE
#      itself). Source warm, nothing dirty, before each.
#   5. A commit that changes 1 file of the big version: with the CLI (`draft new`,
#      `draft add`, timed `draft commit`, unmounted) and through the mount (`mkdir`, one file
#      overwritten, timed `echo commit > .commit`); and the catalog's growth per commit
#      (catalog.db + catalog.db-wal after `PRAGMA wal_checkpoint(TRUNCATE)`, before/after).
#   6. Peak RSS: of the mount server (VmHWM, fresh mount each) across `ls -lR` + reading every
#      file of the version, and of the CLI (/usr/bin/time) while `log`ging it; at 10,000,
#      100,000 and 1,000,000 files (--quick: 10,000 and 100,000).
#   7. Hashing: `verify` of the big blob vs `sha256sum` of it, and of the 100,000-file
#      version vs `sha256sum` of the same files (one process, through xargs): throughput and
#      CPU utilisation ((user + sys) / wall / nproc); whether the CPU has SHA extensions.
#
# The data is built once per run (scripts/bench_gen.py) in a fresh directory under $BENCH_DIR
# (default /var/tmp), removed at the end unless --keep; every mount is unmounted on exit, also
# on failure or interrupt. The table goes to stdout and, as Markdown with the command, date,
# machine and git revision, to --out (default docs/BENCHMARKS.md). A full run needs about
# 25 GiB of disk and roughly 30-45 minutes on 2 cores; --quick about 3 GiB and a few minutes.
#
# Defaults: --runs (fio, mmap, verify) 3, quick 2; --meta-runs (listings) 2; --commit-runs 5,
# quick 3; --bindfs-cap 90 s, quick 60 s. --no-build uses target/release/artifactfs as it is.
# A section that fails records FAILED rows and the next section still runs (exit status 1).
#
# Needs root (drop_caches), /dev/fuse, fuse3, bindfs, fio, sqlite3, python3, /usr/bin/time,
# coreutils, findutils, cargo; installs bindfs, fio and time with apt-get if they are missing.
set -euo pipefail
# Helpers every benchmark script shares: usage, commas, stamp.
source "$(dirname "${BASH_SOURCE[0]}")/bench_lib.sh"

# One entry point: `bench.sh core|mount|drafts|shared|bigwrites [OPTIONS]` runs that suite.
[[ ${1:-} != runs ]] || { shift; exec bash "$(dirname "${BASH_SOURCE[0]}")/bench_runs.sh" "$@"; }
[[ ${1:-} != builds ]] || { shift; exec bash "$(dirname "${BASH_SOURCE[0]}")/bench_builds.sh" "$@"; }
case ${1:-} in
core | mount | drafts | shared | bigwrites)
    suite=$1
    shift
    exec bash "$(dirname "${BASH_SOURCE[0]}")/bench_$suite.sh" "$@"
    ;;
esac


CMDLINE="scripts/bench.sh${*:+ $*}"
[[ -z ${BENCH_DIR:-} ]] || CMDLINE="BENCH_DIR=$BENCH_DIR $CMDLINE"
QUICK=0 KEEP=0 OUT="" RUNS="" META_RUNS="" COMMIT_RUNS="" BINDFS_CAP="" BUILD=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --keep) KEEP=1 ;;
        --out) OUT=${2:?--out needs a FILE}; shift ;;
        --out=*) OUT=${1#--out=} ;;
        --runs) RUNS=${2:?--runs needs N}; shift ;;
        --meta-runs) META_RUNS=${2:?--meta-runs needs N}; shift ;;
        --commit-runs) COMMIT_RUNS=${2:?--commit-runs needs N}; shift ;;
        --bindfs-cap) BINDFS_CAP=${2:?--bindfs-cap needs SECONDS}; shift ;;
        --no-build) BUILD=0 ;;
        -h|--help) usage 0 ;;
        *) echo "bench.sh: unknown argument $1" >&2; usage 2 >&2 ;;
    esac
    shift
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
: "${OUT:=$ROOT/docs/BENCHMARKS.md}"
if [[ $OUT != /* ]]; then OUT="$PWD/$OUT"; fi
GEN=(python3 "$ROOT/scripts/bench_gen.py")
export LC_ALL=C
unset ARTIFACTFS_STORE

if [[ $QUICK == 1 ]]; then
    TREE_DIRS=100 BIG_SIZE=1G FIO_TIME=2 COLD_RUNS=1 MMAP_PAGES=100000 CP_CAP=900 BCP_CAP=300
    RSS_SIZES=(10 100) # thousands of files: 10 and 100 dirs of 1,000
    : "${RUNS:=2}" "${META_RUNS:=2}" "${COMMIT_RUNS:=3}" "${BINDFS_CAP:=60}"
else
    TREE_DIRS=1000 BIG_SIZE=4G FIO_TIME=5 COLD_RUNS=3 MMAP_PAGES=200000 CP_CAP=2400 BCP_CAP=900
    RSS_SIZES=(10 100 1000)
    : "${RUNS:=3}" "${META_RUNS:=2}" "${COMMIT_RUNS:=5}" "${BINDFS_CAP:=90}"
fi
TREE_FILES=1000 TREE_FSIZE=1K TREE_FSIZE_B=1024
TREE_COUNT=$((TREE_DIRS * TREE_FILES))
# 1000000 -> 1,000,000
TREE_N=$(commas $TREE_COUNT)
BIG_LABEL="${BIG_SIZE%G} GiB"

say() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { say "$*"; [[ -z ${W:-} ]] || echo "$*" >"$W/fail.txt"; exit 1; }

# --- prerequisites -----------------------------------------------------------------------
[[ $(id -u) == 0 ]] || die "needs root (drop_caches)"
[[ -c /dev/fuse ]] || die "/dev/fuse is missing"
[[ -w /proc/sys/vm/drop_caches ]] || die "/proc/sys/vm/drop_caches is not writable"
for tool in fusermount3 sqlite3 python3 timeout; do
    command -v "$tool" >/dev/null || die "$tool is missing (scripts/setup.sh installs it)"
done
missing=()
[[ -x /usr/bin/time ]] || missing+=(time)
command -v bindfs >/dev/null || missing+=(bindfs)
command -v fio >/dev/null || missing+=(fio)
if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 ||
        { apt-get update -qq >/dev/null && apt-get install -y -qq "${missing[@]}" >/dev/null; } ||
        die "could not install ${missing[*]}"
fi

# --- build (retried: others may be editing src/ right now) -------------------------------
if [[ $BUILD == 1 ]]; then
    say "building the release binary"
    build_release "$ROOT" 6
fi
[[ -x $ROOT/target/release/artifactfs ]] || die "no target/release/artifactfs"
REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')
if [[ -n $(git -C "$ROOT" status --porcelain --untracked-files=no -- src Cargo.toml Cargo.lock 2>/dev/null) ]]; then
    REV+=" (with uncommitted changes in src/)"
fi

# --- work dir, mounts, cleanup -----------------------------------------------------------
BASE_DIR=${BENCH_DIR:-/var/tmp}
mkdir -p "$BASE_DIR"
W=$(mktemp -d "$BASE_DIR/bench.XXXXXX")
# A copy of the binary: a rebuild by someone else during the run must not change what runs.
BIN="$W/artifactfs"
cp "$ROOT/target/release/artifactfs" "$BIN"
STORE="$W/store"            # big:v0 (the fio file) and tree:v0 (the TREE_N-file version)
MNT="$W/mnt"                # artifactfs mounts, one store at a time
B_BLOBS="$W/b_blobs"        # bindfs -r STORE/blobs
B_TREE="$W/b_tree"          # bindfs -r W/tree
B_DST="$W/b_dst"            # bindfs over W/bindfs_back, the target of a bindfs cp -r
MOUNTS=("$MNT" "$B_BLOBS" "$B_TREE" "$B_DST")
mkdir -p "${MOUNTS[@]}" "$W/t"
: >"$W/rows.tsv"
: >"$W/notes.md"
MOUNTED_STORE=""

is_mounted() { mountpoint -q "$1" 2>/dev/null; }

unmount_one() { # MOUNTPOINT
    local mp=$1
    is_mounted "$mp" || return 0
    if [[ $mp == "$MNT" ]]; then
        timeout 120 "$BIN" umount "$mp" >/dev/null 2>&1 || true
    else
        fusermount3 -u "$mp" >/dev/null 2>&1 || true
    fi
    if is_mounted "$mp"; then umount -l "$mp" 2>/dev/null || fusermount3 -uz "$mp" 2>/dev/null || true; fi
}

cleanup() {
    local rc=$? mp
    trap - EXIT INT TERM
    for mp in "${MOUNTS[@]}"; do unmount_one "$mp"; done
    if [[ $KEEP == 1 ]]; then
        say "kept work dir $W"
    elif findmnt -rno TARGET | grep -qF "$W/"; then
        say "a mount under $W is still there; not removing $W"
    else
        say "removing $W"
        chmod -R u+w "$W" 2>/dev/null || true # blobs are read-only
        rm -rf "$W"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

FS=$(findmnt -no FSTYPE -T "$W" 2>/dev/null || echo '?')
say "work dir $W ($FS)"
[[ $FS != tmpfs ]] || say "WARNING: $W is on tmpfs; set BENCH_DIR to a disk-backed directory"
# ext4: each directory made here gets a block group of its own choosing (see bench_drafts.sh:
# inode allocation in groups with many recently freed inodes is very slow).
if [[ $FS == ext* ]] && command -v chattr >/dev/null; then chattr +T "$W" 2>/dev/null || true; fi

# Disk: the tree (4 KiB a file on disk) exists 5 times (source, store, draft store, native
# and bindfs copies), the big file once, plus the smaller stores and slack.
NEED_KB=$((TREE_COUNT * 4 * 6 + ${BIG_SIZE%G} * 1048576 + 2097152))
AVAIL_KB=$(df -Pk "$W" | awk 'NR == 2 {print $4}')
((AVAIL_KB > NEED_KB)) ||
    die "$W has $((AVAIL_KB >> 20)) GiB free; this run needs about $((NEED_KB >> 20)) GiB"
INODES_FREE=$(df -Pi "$W" | awk 'NR == 2 {print $4}')
[[ $INODES_FREE == - ]] || ((INODES_FREE > TREE_COUNT * 6)) ||
    die "$W has $INODES_FREE free inodes; this run needs about $((TREE_COUNT * 6))"

mount_log_tail() { tail -n "${2:-20}" "$1/mount.log" 2>/dev/null | sed 's/^/    mount.log: /' >&2 || true; }

# mount_store STORE [RUST_LOG]: (re)mounts STORE at $MNT, at the default log level.
mount_store() {
    unmount_one "$MNT"
    local level=${2:-}
    if [[ -n $level ]]; then
        RUST_LOG=$level "$BIN" --store "$1" mount "$MNT" >"$W/mount.out" 2>&1
    else
        env -u RUST_LOG "$BIN" --store "$1" mount "$MNT" >"$W/mount.out" 2>&1
    fi || { cat "$W/mount.out" >&2; mount_log_tail "$1"; die "mount of $1 failed"; }
    is_mounted "$MNT" || die "mount of $1 returned, but $MNT is not a mount point"
    MOUNTED_STORE=$1
}

mount_bindfs() { # SRC MOUNTPOINT [OPTIONS]
    unmount_one "$2"
    bindfs ${3:-} "$1" "$2" >"$W/bindfs.out" 2>&1 || { cat "$W/bindfs.out" >&2; die "bindfs $1 failed"; }
}

server_pid() {
    python3 -c 'import os, sys; print(os.getxattr(sys.argv[1], "user.artifactfs.pid").decode())' "$MNT"
}
hwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

# --- timing ------------------------------------------------------------------------------
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.5f", b - a}'; }
median() { sort -g | awk '{a[NR]=$1} END {if (NR) print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
med() { median <"$W/t/$1"; }
has() { [[ -s $W/t/$1 ]]; }
samples() { awk '{printf ($1 == int($1) ? "%s%d" : "%s%.4g"), (NR > 1 ? " " : ""), $1}' "$W/t/$1"; }
record() { echo "$2" >>"$W/t/$1"; } # KEY VALUE

# timed KEY CAP CMD...: runs CMD (stdout to /dev/null) under `timeout CAP` (0: none), appends
# its wall time to $W/t/KEY and sets LAST. Returns 124 if stopped at the cap (nothing
# recorded); on any other failure, says why and exits (the section's subshell).
timed() {
    local key=$1 cap=$2 t0 rc=0
    shift 2
    stamp; t0=$_T
    if [[ $cap == 0 ]]; then "$@" >/dev/null 2>"$W/last.err" || rc=$?; else
        timeout "$cap" "$@" >/dev/null 2>"$W/last.err" || rc=$?
    fi
    stamp
    LAST=$(elapsed "$t0" "$_T")
    if [[ $rc == 124 && $cap != 0 ]]; then
        say "stopped at the cap of $cap s: ${*//$W/W}"
        return 124
    fi
    if [[ $rc != 0 ]]; then
        local err
        err=$(head -n 1 "$W/last.err" | cut -c 1-150)
        say "FAILED (exit $rc after $LAST s): $*"
        head -c 2000 "$W/last.err" >&2
        echo "${*//$W/W} -> exit $rc${err:+: $err}" >"$W/fail.txt"
        [[ -z $MOUNTED_STORE ]] || mount_log_tail "$MOUNTED_STORE"
        exit 1
    fi
    record "$key" "$LAST"
}

# --- table helpers (rows go to files so that sections can run in subshells) --------------
# row SORTKEY LABEL ARTIFACTFS NATIVE BINDFS VS_NATIVE VS_BINDFS TARGET MET
row() {
    local key=$1
    shift
    printf '%s\t| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$key" "$@" >>"$W/rows.tsv"
}
note() { echo "$*" >>"$W/notes.md"; }
fmt_s() { awk -v t="$1" 'BEGIN {printf (t < 10 ? "%.3f s" : (t < 100 ? "%.2f s" : "%.1f s")), t}'; }
fmt_ms() { awk -v t="$1" 'BEGIN {printf "%.1f ms", t * 1000}'; }
fmt_mbs() { awk -v b="$1" 'BEGIN {printf "%.0f MB/s", b / 1e6}'; }            # bytes/s
fmt_rate() { awk -v r="$1" 'BEGIN {printf (r >= 1e6 ? "%.2f M/s" : "%.0f k/s"), (r >= 1e6 ? r / 1e6 : r / 1e3)}'; }
fmt_mb() { awk -v k="$1" 'BEGIN {printf "%.1f MB", k * 1024 / 1e6}'; }         # KiB
fmt_kib() { awk -v b="$1" 'BEGIN {printf "%.1f KiB", b / 1024}'; }             # bytes
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f×", a / b}'; }           # a / b
# met VALUE OP LIMIT -> ✓ / ✗ (VALUE may carry a trailing ×)
met() {
    if awk -v v="${1%×}" -v l="$3" -v op="$2" \
        'BEGIN {exit !((op == ">=") ? v >= l : (op == ">") ? v > l : (op == "<=") ? v <= l : v < l)}'; then
        echo "✓"
    else
        echo "✗"
    fi
}

# section KEY LABEL FUNCTION: runs FUNCTION in a subshell with errexit; on failure, records a
# FAILED row and carries on.
FAILED=0
section() {
    local key=$1 label=$2 rc=0
    shift 2
    rm -f "$W/fail.txt"
    set +e
    (set -e; "$@")
    rc=$?
    set -e
    if [[ $rc != 0 ]]; then
        FAILED=1
        local why
        why=$(cat "$W/fail.txt" 2>/dev/null || echo "exit status $rc")
        why=${why//|/\\|}
        row "$key" "$label" "FAILED: ${why//$'\n'/ }" "—" "—" "—" "—" "—" "✗"
        say "section '$label' FAILED; carrying on"
        for mp in "${MOUNTS[@]}"; do unmount_one "$mp"; done
    fi
}

# latest_of STORE NAME: "VERSION FILES" of NAME's latest version.
latest_of() {
    "$BIN" --store "$1" --json list "$2" 2>/dev/null | python3 -c '
import json, sys
vs = [v for v in json.load(sys.stdin) if "latest" in v["aliases"]]
print(vs[0]["version"], vs[0]["files"]) if vs else print("none 0")
' 2>/dev/null || echo "error 0"
}

# prepare SRC: nothing dirty, the page cache emptied of earlier runs' writes, SRC read back in.
prepare() {
    sync
    echo 3 >/proc/sys/vm/drop_caches
    find "$1" -type f -exec cat {} + >/dev/null
    sync
}

# The three contenders, in an order that rotates with the run number.
order() { local r=$1 all=(artifactfs native bindfs); echo "${all[r % 3]} ${all[(r + 1) % 3]} ${all[(r + 2) % 3]}"; }

# =========================================================================================
# Data: one build per run
# =========================================================================================
stamp; T_START=$_T
say "generating data: $TREE_N files of $TREE_FSIZE ($TREE_DIRS dirs x $TREE_FILES), one $BIG_LABEL file"
GEN_T0=$_T
"${GEN[@]}" random-tree "$W/tree" "$TREE_DIRS" "$TREE_FILES" "$TREE_FSIZE"
declare -A RSS_TREE RSS_STORE
for k in "${RSS_SIZES[@]}"; do
    if ((k == TREE_DIRS)); then
        RSS_TREE[$k]="$W/tree" RSS_STORE[$k]="$STORE"
    else
        "${GEN[@]}" random-tree "$W/tree_$k" "$k" "$TREE_FILES" "$TREE_FSIZE"
        RSS_TREE[$k]="$W/tree_$k" RSS_STORE[$k]="$W/store_$k"
    fi
done
"${GEN[@]}" big-files "$W/bigsrc" 1 "$BIG_SIZE"
mv "$W/bigsrc/big00.bin" "$W/bigsrc/big.bin"
sync
stamp
note "Data build (bench_gen.py, $TREE_N + smaller trees + $BIG_LABEL): $(fmt_s "$(elapsed "$GEN_T0" "$_T")")."

# =========================================================================================
# 4 (and 6, CLI): log; cp -r native, into a draft, through bindfs
# =========================================================================================
# log_rss KEY STORE NAME SRC: `log` under /usr/bin/time; records wall time and max RSS (KiB).
log_rss() {
    local key=$1 store=$2 name=$3 src=$4 e m
    /usr/bin/time -f '%e %M' -o "$W/time.out" "$BIN" --store "$store" log "$name" "$src" \
        --type dataset >"$W/log.out" 2>&1 ||
        { cat "$W/log.out" "$W/time.out" >&2; echo "log $name: $(tail -n 1 "$W/log.out")" >"$W/fail.txt"; exit 1; }
    read -r e m < <(tail -n 1 "$W/time.out")
    record "log_time_$key" "$e"
    record "log_rss_$key" "$m"
}

section_log() {
    say "(4) log of $TREE_N files into an empty store (and the RSS of each log)"
    prepare "$W/tree"
    log_rss "$TREE_DIRS" "$STORE" tree "$W/tree"
    say "log of $TREE_N files: $(samples "log_time_$TREE_DIRS") s, max RSS $(samples "log_rss_$TREE_DIRS") KiB"
    "$BIN" --store "$STORE" log big "$W/bigsrc" --type dataset >/dev/null
    local k
    for k in "${RSS_SIZES[@]}"; do
        ((k == TREE_DIRS)) && continue
        sync
        log_rss "$k" "${RSS_STORE[$k]}" tree "${RSS_TREE[$k]}"
        say "log of $((k * TREE_FILES)) files: $(samples "log_time_$k") s, max RSS $(samples "log_rss_$k") KiB"
    done
    read -r v f < <(latest_of "$STORE" tree)
    [[ $v == v0 && $f == "$TREE_COUNT" ]] || { echo "tree: latest is $v with $f files" >"$W/fail.txt"; exit 1; }
}
section 4.00 "\`log\` of $TREE_N files" section_log
rm -rf "$W/bigsrc" # the native baseline for reads is the blob file itself

section_copies() {
    say "(4) cp -r of $TREE_N files: native, into a draft through the mount, through bindfs"
    prepare "$W/tree"
    timed cp_native 0 cp -r "$W/tree" "$W/cp_native"
    timed sync_native 0 sync
    say "native cp -r: $(samples cp_native) s, then sync $(samples sync_native) s"

    prepare "$W/tree"
    "$BIN" init "$W/store_copy" >/dev/null
    mount_store "$W/store_copy"
    mkdir "$MNT/drafts/copy"
    timed cp_draft "$CP_CAP" cp -r "$W/tree" "$MNT/drafts/copy/data" ||
        { echo "cp -r into the draft took over $CP_CAP s" >"$W/fail.txt"; exit 1; }
    timed commit_draft "$CP_CAP" sh -c "echo commit > '$MNT/drafts/copy/.commit'" ||
        { echo "the commit took over $CP_CAP s" >"$W/fail.txt"; exit 1; }
    say "draft cp -r: $(samples cp_draft) s, commit $(samples commit_draft) s"
    unmount_one "$MNT"
    read -r v f < <(latest_of "$W/store_copy" copy)
    [[ $v == v0 && $f == "$TREE_COUNT" ]] ||
        { echo "the draft copy committed $v with $f files, not v0 with $TREE_COUNT" >"$W/fail.txt"; exit 1; }

    prepare "$W/tree"
    mkdir "$W/bindfs_back"
    mount_bindfs "$W/bindfs_back" "$B_DST"
    if timed cp_bindfs "$BCP_CAP" cp -r "$W/tree" "$B_DST/data"; then
        timed sync_bindfs 0 sync
        say "bindfs cp -r: $(samples cp_bindfs) s, then sync $(samples sync_bindfs) s"
    else
        echo "$BCP_CAP" >"$W/t/cp_bindfs_capped"
    fi
    unmount_one "$B_DST"
}
section 4.10 "\`cp -r\` of $TREE_N files into a draft" section_copies

report_4() {
    local n=$TREE_DIRS cpn cpb bcell="—" vsb="—"
    has cp_native || return 0
    cpn=$(med cp_native)
    if has "log_time_$n"; then
        local tl
        tl=$(med "log_time_$n")
        row 4.01 "\`artifactfs log\` of $TREE_N × 1 KiB files (time)" "$(fmt_s "$tl")" \
            "$(fmt_s "$cpn") (\`cp -r\`)" "—" "$(ratio "$tl" "$cpn")" "—" "≤ 2× native" \
            "$(met "$(ratio "$tl" "$cpn")" "<=" 2)"
    fi
    if has cp_bindfs; then
        cpb=$(med cp_bindfs)
        bcell="$(fmt_s "$cpb")"
    elif [[ -f $W/t/cp_bindfs_capped ]]; then
        bcell="> $BCP_CAP s (stopped)"
    fi
    if has cp_draft && has commit_draft; then
        local td tc tt
        td=$(med cp_draft) tc=$(med commit_draft)
        tt=$(awk -v a="$td" -v b="$tc" 'BEGIN {print a + b}')
        [[ -z ${cpb:-} ]] || vsb=$(ratio "$td" "$cpb")
        row 4.02 "\`cp -r\` of $TREE_N files into a draft + commit (time)" "$(fmt_s "$tt")" \
            "$(fmt_s "$cpn") (\`cp -r\`)" "—" "$(ratio "$tt" "$cpn")" "—" "≤ 2× native" \
            "$(met "$(ratio "$tt" "$cpn")" "<=" 2)"
        row 4.03 "… of which \`cp -r\` into the draft (time)" "$(fmt_s "$td")" "$(fmt_s "$cpn")" \
            "$bcell" "$(ratio "$td" "$cpn")" "$vsb" "info (bindfs: the cost of FUSE)" "—"
        row 4.04 "… of which \`echo commit > .commit\` (time)" "$(fmt_s "$tc")" \
            "$(fmt_s "$(med sync_native)") (\`sync\` after \`cp -r\`)" \
            "$(has sync_bindfs && fmt_s "$(med sync_bindfs)" || echo —)" "$(ratio "$tc" "$(med sync_native)")" "—" \
            "info (the commit makes the files durable)" "—"
    fi
    note "Figure 4: one run each (the tree is large); before each, \`sync\`, caches dropped, the source read back in, \`sync\`. \`log\` and the draft go into empty stores; the native copy and the bindfs backing directory are on the same filesystem. The native \`cp -r\` leaves its data dirty: the durable baseline is \`cp -r\` + \`sync\` = $(fmt_s "$(awk -v a="$cpn" -v b="$(med sync_native)" 'BEGIN {print a + b}')")."
}

# =========================================================================================
# 1 and 2: fio and mmap on the big file
# =========================================================================================
declare -A BIG_PATH
section_reads() {
    mount_store "$STORE"
    PASSTHROUGH=$(grep -o 'kernel passthrough [a-z]*' "$STORE/mount.log" | tail -n 1 | awk '{print $3}')
    echo "${PASSTHROUGH:-unknown}" >"$W/passthrough"
    mount_bindfs "$STORE/blobs" "$B_BLOBS" -r
    local sha rel
    sha=$(python3 -c 'import os, sys; print(os.getxattr(sys.argv[1], "user.artifactfs.sha256").decode())' \
        "$MNT/big/v0/big.bin")
    rel="${sha:0:2}/$sha"
    BIG_PATH=([artifactfs]="$MNT/big/v0/big.bin" [native]="$STORE/blobs/$rel" [bindfs]="$B_BLOBS/$rel")
    [[ $(stat -c %s "${BIG_PATH[native]}") == $(stat -c %s "${BIG_PATH[artifactfs]}") ]] ||
        { echo "the big file's size through the mount differs from its blob" >"$W/fail.txt"; exit 1; }

    # fio_run KEY FILE RW BS JOBS [time-based]: appends bytes/s and IOPS to t/KEY, t/KEY_iops.
    fio_run() {
        local key=$1 file=$2 rw=$3 bs=$4 jobs=$5 tb=${6:-1} args
        args=(--name=bench --filename="$file" --readonly --rw="$rw" --bs="$bs" --numjobs="$jobs"
            --ioengine=psync --direct=0 --invalidate=0 --group_reporting --output-format=json)
        [[ $tb == 0 ]] || args+=(--time_based --runtime="$FIO_TIME")
        fio "${args[@]}" >"$W/fio.json" 2>"$W/fio.err" ||
            { cat "$W/fio.err" >&2; echo "fio $rw $bs x$jobs on ${file//$W/W} failed: $(head -n 1 "$W/fio.err")" >"$W/fail.txt"; exit 1; }
        python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))["jobs"][0]["read"]
print(r["bw_bytes"], r["iops"])' "$W/fio.json" >"$W/fio.out"
        local bw iops
        read -r bw iops <"$W/fio.out"
        record "$key" "$bw"
        record "${key}_iops" "$iops"
    }

    say "(1) fio: warm-up reads"
    local c r spec rw bs jobs
    for c in artifactfs native bindfs; do cat "${BIG_PATH[$c]}" >/dev/null; done
    local specs=("read 1M 1" "read 1M 4" "randread 4k 1" "randread 4k 4")
    for spec in "${specs[@]}"; do
        read -r rw bs jobs <<<"$spec"
        say "(1) fio $rw bs=$bs numjobs=$jobs, warm, ${FIO_TIME} s x $RUNS runs x 3"
        for ((r = 0; r < RUNS; r++)); do
            for c in $(order "$r"); do fio_run "fio_${rw}_${bs}_${jobs}_$c" "${BIG_PATH[$c]}" "$rw" "$bs" "$jobs"; done
        done
    done
    say "(1) fio read bs=1M, cold (whole file once after dropping caches), $COLD_RUNS runs x 3"
    for ((r = 0; r < COLD_RUNS; r++)); do
        for c in $(order "$r"); do
            drop_caches
            fio_run "fio_cold_$c" "${BIG_PATH[$c]}" read 1M 1 0
        done
    done

    say "(2) mmap random 4 KiB pages ($MMAP_PAGES pages x $((RUNS * 3)) rounds)"
    python3 "$ROOT/scripts/bench_mmap.py" --pages "$MMAP_PAGES" --rounds $((RUNS * 3)) \
        "artifactfs=${BIG_PATH[artifactfs]}" "native=${BIG_PATH[native]}" "bindfs=${BIG_PATH[bindfs]}" \
        >"$W/mmap.json" || { echo "bench_mmap.py failed" >"$W/fail.txt"; exit 1; }
    python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
for c in ("artifactfs", "native", "bindfs"):
    print(c, d[c]["pages_per_s"], " ".join(map(str, d[c]["samples"])))' "$W/mmap.json" |
        while read -r c v s; do
            echo "$v" >"$W/t/mmap_$c"
            say "mmap $c: $s pages/s"
        done
    unmount_one "$B_BLOBS"
}
section 1.00 "fio / mmap on the $BIG_LABEL file" section_reads

report_1_2() {
    local spec rw bs jobs key a n b label target lim
    for spec in "read 1M 1 1.01" "read 1M 4 1.02" "randread 4k 1 1.04" "randread 4k 4 1.05" "cold 1M 1 1.03"; do
        read -r rw bs jobs sk <<<"$spec"
        if [[ $rw == cold ]]; then key=fio_cold; else key="fio_${rw}_${bs}_${jobs}"; fi
        has "${key}_artifactfs" && has "${key}_native" && has "${key}_bindfs" || continue
        a=$(med "${key}_artifactfs") n=$(med "${key}_native") b=$(med "${key}_bindfs")
        case $rw in
            read) label="fio sequential 1 MiB reads, $jobs job$([[ $jobs == 1 ]] || echo s), warm"; lim=0.95 ;;
            cold) label="fio sequential 1 MiB reads, 1 job, cold: the whole file once"; lim=0.9 ;;
            randread) label="fio random 4 KiB reads, $jobs job$([[ $jobs == 1 ]] || echo s), warm"; lim=0.8 ;;
        esac
        target="≥ $lim× native"
        if [[ $rw == randread ]]; then
            row "$sk" "$label (IOPS)" "$(fmt_rate "$(med "${key}_artifactfs_iops")")" \
                "$(fmt_rate "$(med "${key}_native_iops")")" "$(fmt_rate "$(med "${key}_bindfs_iops")")" \
                "$(ratio "$a" "$n")" "$(ratio "$a" "$b")" "$target" "$(met "$(ratio "$a" "$n")" ">=" "$lim")"
        else
            row "$sk" "$label (throughput)" "$(fmt_mbs "$a")" "$(fmt_mbs "$n")" "$(fmt_mbs "$b")" \
                "$(ratio "$a" "$n")" "$(ratio "$a" "$b")" "$target" "$(met "$(ratio "$a" "$n")" ">=" "$lim")"
        fi
    done
    if has mmap_artifactfs; then
        a=$(med mmap_artifactfs) n=$(med mmap_native) b=$(med mmap_bindfs)
        row 2.01 "mmap, random 4 KiB pages touched (pages/s)" "$(fmt_rate "$a")" "$(fmt_rate "$n")" \
            "$(fmt_rate "$b")" "$(ratio "$a" "$n")" "$(ratio "$a" "$b")" "≥ 0.8× native" \
            "$(met "$(ratio "$a" "$n")" ">=" 0.8)"
    fi
    note "Figures 1-2: the file is \`big/v0/big.bin\` ($BIG_LABEL of random bytes); native is its blob file, bindfs is \`bindfs -r STORE/blobs\` (default options). fio: median of $RUNS time-based runs of ${FIO_TIME} s (\`--ioengine=psync --direct=0 --invalidate=0\`), cold: $COLD_RUNS reads of the whole file, each after \`sync; echo 3 > /proc/sys/vm/drop_caches\`; contenders rotate. mmap: median of $((RUNS * 3)) rounds, each a fresh mapping and $(commas "$MMAP_PAGES") random pages (one byte read from each, Python). Ratios are throughput ratios (higher is better)."
}

# =========================================================================================
# 3: ls -lR, find, stat of every file
# =========================================================================================
section_meta() {
    declare -A TREE_PATH=([artifactfs]="$MNT/tree/v0" [native]="$W/tree" [bindfs]="$B_TREE")
    mount_store "$STORE"
    mount_bindfs "$W/tree" "$B_TREE" -r
    local c n
    for c in artifactfs native bindfs; do
        n=$(find "${TREE_PATH[$c]}" -type f | wc -l)
        [[ $n == "$TREE_COUNT" ]] || { echo "$c shows $n files, not $TREE_COUNT" >"$W/fail.txt"; exit 1; }
    done
    # tool_cmd TOOL DIR: sets CMD to the command line of TOOL on DIR
    tool_cmd() {
        case $1 in
            ls) CMD=(ls -lR "$2") ;;
            find) CMD=(find "$2") ;;
            stat) CMD=(find "$2" -printf '%s %T@\n') ;;
        esac
    }
    local tool r rc
    for tool in ls find stat; do
        say "(3) $tool of $TREE_N files, first and second pass ($META_RUNS runs)"
        for ((r = 0; r < META_RUNS; r++)); do
            for c in $(order "$r"); do
                if [[ $c == bindfs && -f $W/t/${tool}_bindfs_capped ]]; then continue; fi
                case $c in
                    artifactfs) mount_store "$STORE" ;;
                    bindfs) mount_bindfs "$W/tree" "$B_TREE" -r ;;
                esac
                drop_caches
                local cap=0
                [[ $c != bindfs ]] || cap=$BINDFS_CAP
                rc=0
                tool_cmd "$tool" "${TREE_PATH[$c]}"
                timed "${tool}_1_$c" "$cap" "${CMD[@]}" || rc=$?
                if [[ $rc == 124 ]]; then echo "$BINDFS_CAP" >"$W/t/${tool}_bindfs_capped"; continue; fi
                rc=0
                timed "${tool}_2_$c" "$cap" "${CMD[@]}" || rc=$?
                if [[ $rc == 124 ]]; then echo "$BINDFS_CAP" >"$W/t/${tool}_bindfs_capped"; fi
            done
        done
        for c in artifactfs native bindfs; do
            say "$(printf '%-22s 1st %s | 2nd %s' "$tool $c" "$(has "${tool}_1_$c" && samples "${tool}_1_$c")" "$(has "${tool}_2_$c" && samples "${tool}_2_$c")")"
        done
    done
    unmount_one "$B_TREE"
}
section 3.00 "listings of $TREE_N files" section_meta

report_3() {
    local tool pass label a n b vsb bcell lim sk=3.01
    for tool in ls find stat; do
        for pass in 1 2; do
            has "${tool}_${pass}_artifactfs" && has "${tool}_${pass}_native" || continue
            case $tool in
                ls) label="\`ls -lR\`" ;; find) label="\`find\`" ;; stat) label="stat of every file" ;;
            esac
            a=$(med "${tool}_${pass}_artifactfs") n=$(med "${tool}_${pass}_native")
            if has "${tool}_${pass}_bindfs"; then
                b=$(med "${tool}_${pass}_bindfs") bcell=$(fmt_s "$b") vsb=$(ratio "$a" "$b")
            elif [[ -f $W/t/${tool}_bindfs_capped ]]; then
                bcell="> $BINDFS_CAP s (stopped$([[ $pass == 2 ]] && ! has "${tool}_1_bindfs" && echo '; not run'))"
                vsb="< $(ratio "$a" "$BINDFS_CAP")"
            else
                bcell="—" vsb="—"
            fi
            if [[ $pass == 1 ]]; then lim=3; else lim=1.5; fi
            row "$sk" "$label, $TREE_N files, $([[ $pass == 1 ]] && echo 'first pass (fresh mount, caches dropped)' || echo 'second pass') (time)" \
                "$(fmt_s "$a")" "$(fmt_s "$n")" "$bcell" "$(ratio "$a" "$n")" "$vsb" "≤ $lim× native" \
                "$(met "$(ratio "$a" "$n")" "<=" "$lim")"
            sk=$(awk -v k="$sk" 'BEGIN {printf "%.2f", k + 0.01}')
        done
    done
    note "Figure 3: median of $META_RUNS runs, contenders rotating; native is the source directory, bindfs is \`bindfs -r\` of it; stat of every file is \`find DIR -printf '%s %T@\\n'\`. First pass: right after a fresh mount (artifactfs, bindfs) and \`sync; echo 3 > /proc/sys/vm/drop_caches\`; second pass immediately after. A bindfs pass is stopped after $BINDFS_CAP s and not run again (\"> $BINDFS_CAP s\"). Ratios are time ratios (lower is better)."
}

# =========================================================================================
# 6: peak RSS of the mount server
# =========================================================================================
section_rss_mount() {
    local k pid
    for k in "${RSS_SIZES[@]}"; do
        say "(6) mount server RSS: ls -lR + every file read, $(commas $((k * TREE_FILES))) files"
        mount_store "${RSS_STORE[$k]}"
        pid=$(server_pid)
        [[ -r /proc/$pid/status ]] || { echo "no process $pid (from user.artifactfs.pid)" >"$W/fail.txt"; exit 1; }
        record "srv_rss0_$k" "$(hwm_kb "$pid")"
        timed "srv_ls_$k" 0 ls -lR "$MNT/tree/v0"
        timed "srv_cat_$k" 0 sh -c "find '$MNT/tree/v0' -type f -exec cat {} + >/dev/null"
        record "srv_rss_$k" "$(hwm_kb "$pid")"
        say "VmHWM $(samples "srv_rss0_$k") KiB after mounting, $(samples "srv_rss_$k") KiB after (ls -lR $(samples "srv_ls_$k") s, read all $(samples "srv_cat_$k") s)"
        unmount_one "$MNT"
    done
}
section 6.00 "peak RSS of the mount server" section_rss_mount

report_6() {
    local k first="" last="" lfirst="" llast="" sk
    for k in "${RSS_SIZES[@]}"; do
        sk=$(awk -v k="$k" 'BEGIN {printf "6.%02d", (k == 10 ? 1 : k == 100 ? 2 : 3)}')
        if has "srv_rss_$k"; then
            local v
            v=$(med "srv_rss_$k")
            row "$sk" "peak RSS of the mount server, \`ls -lR\` + read every file, $(commas $((k * TREE_FILES))) files" \
                "$(fmt_mb "$v")" "—" "—" "—" "—" "< 100 MB" "$(met "$(awk -v v="$v" 'BEGIN {print v * 1024 / 1e6}')" "<" 100)"
            [[ -n $first ]] || first=$v
            last=$v
        fi
        if has "log_rss_$k"; then
            local v
            v=$(med "log_rss_$k")
            row "${sk}5" "peak RSS of \`artifactfs log\`, $(commas $((k * TREE_FILES))) files" \
                "$(fmt_mb "$v")" "—" "—" "—" "—" "< 100 MB" "$(met "$(awk -v v="$v" 'BEGIN {print v * 1024 / 1e6}')" "<" 100)"
            [[ -n $lfirst ]] || lfirst=$v
            llast=$v
        fi
    done
    local lo hi
    lo=$(commas $((RSS_SIZES[0] * TREE_FILES))) hi=$(commas $((RSS_SIZES[-1] * TREE_FILES)))
    if [[ -n $first && -n $last ]]; then
        row 6.08 "peak RSS growth of the mount server, $hi ÷ $lo files" "$(ratio "$last" "$first")" "—" "—" "—" "—" \
            "flat: ≤ 1.5×" "$(met "$(ratio "$last" "$first")" "<=" 1.5)"
    fi
    if [[ -n $lfirst && -n $llast ]]; then
        row 6.09 "peak RSS growth of \`artifactfs log\`, $hi ÷ $lo files" "$(ratio "$llast" "$lfirst")" "—" "—" "—" "—" \
            "flat: ≤ 1.5×" "$(met "$(ratio "$llast" "$lfirst")" "<=" 1.5)"
    fi
    local info=""
    for k in "${RSS_SIZES[@]}"; do
        has "srv_rss0_$k" || continue
        info+="${info:+; }$(commas $((k * TREE_FILES))): $(fmt_mb "$(med "srv_rss0_$k")") after mounting, \`ls -lR\` $(fmt_s "$(med "srv_ls_$k")"), reading every file $(fmt_s "$(med "srv_cat_$k")"), \`log\` $(has "log_time_$k" && fmt_s "$(med "log_time_$k")")"
    done
    note "Figure 6: one fresh mount (and one \`log\` into an empty store) per size; the server's VmHWM from /proc/PID/status (PID from the xattr \`user.artifactfs.pid\` of the mount root), the CLI's from /usr/bin/time; page cache not dropped. ${info:+Per size: $info.}"
}

# =========================================================================================
# 5: one-file commits, and catalog growth
# =========================================================================================
catalog_bytes() { # STORE -> bytes of catalog.db + catalog.db-wal after a TRUNCATE checkpoint
    local db=$1/catalog.db out i
    for i in 1 2 3 4 5 6 7 8 9 10; do
        out=$(sqlite3 "$db" 'PRAGMA wal_checkpoint(TRUNCATE);' 2>&1 || true)
        [[ $out == 0\|* ]] && break
        sleep 0.2
    done
    [[ $out == 0\|* ]] || say "checkpoint of $db stayed busy: $out"
    local used
    used=$(sqlite3 "$db" 'SELECT (SELECT page_count FROM pragma_page_count) - (SELECT freelist_count FROM pragma_freelist_count), (SELECT page_size FROM pragma_page_size);' |
        awk -F'|' '{print $1 * $2}')
    echo "$(($(stat -c %s "$db") + $(stat -c %s "$db-wal" 2>/dev/null || echo 0))) $used"
}
node_rows() { sqlite3 "$1/catalog.db" 'SELECT (SELECT count(*) FROM nodes), (SELECT count(*) FROM chunk_entries);' 2>/dev/null | tr '|' ' ' || echo "0 0"; }

section_commit() {
    local mid i b0 b1 u0 u1 n0 e0 n1 e1 t0 want v f
    mid=$(printf 'd%04d/f%06d.bin' $((TREE_DIRS / 2)) 500)
    unmount_one "$MNT"
    say "(5) CLI: $((COMMIT_RUNS + 1)) commits of 1 changed file in $TREE_N files (the first a warm-up)"
    for ((i = 0; i <= COMMIT_RUNS; i++)); do
        printf 'changed by the CLI, commit %s, %s\n' "$i" "$RANDOM" >"$W/onefile"
        read -r b0 u0 < <(catalog_bytes "$STORE")
        read -r n0 e0 < <(node_rows "$STORE")
        timed cli_new 0 "$BIN" --store "$STORE" draft new tree
        timed cli_add 0 "$BIN" --store "$STORE" draft add tree "$W/onefile" --as "$mid"
        timed cli_commit 0 "$BIN" --store "$STORE" draft commit tree
        read -r b1 u1 < <(catalog_bytes "$STORE")
        read -r n1 e1 < <(node_rows "$STORE")
        read -r v f < <(latest_of "$STORE" tree)
        [[ $v == "v$((i + 1))" && $f == "$TREE_COUNT" ]] ||
            { echo "CLI commit $i made $v with $f files, expected v$((i + 1))" >"$W/fail.txt"; exit 1; }
        if ((i == 0)); then # the warm-up: kept apart
            mv "$W/t/cli_commit" "$W/t/cli_commit_warm"; rm -f "$W/t/cli_new" "$W/t/cli_add"
            record cli_grow_warm $((b1 - b0))
            continue
        fi
        record cli_grow $((b1 - b0))
        record cli_used $((u1 - u0))
        record cli_nodes $((n1 - n0))
        record cli_entries $((e1 - e0))
    done
    say "CLI commit: $(samples cli_commit) s; growth $(samples cli_grow) B, in use $(samples cli_used) B; new nodes $(samples cli_nodes), entries $(samples cli_entries)"

    say "(5) mount: $((COMMIT_RUNS + 1)) commits of 1 changed file in $TREE_N files (the first a warm-up)"
    mount_store "$STORE"
    local d="$MNT/drafts/tree" next=$((COMMIT_RUNS + 2))
    for ((i = 0; i <= COMMIT_RUNS; i++)); do
        read -r b0 u0 < <(catalog_bytes "$STORE")
        read -r n0 e0 < <(node_rows "$STORE")
        timed mnt_mkdir 0 mkdir "$d"
        timed mnt_write 0 sh -c "echo 'changed through the mount $i $RANDOM' > '$d/$mid'"
        timed mnt_commit 0 sh -c "echo commit > '$d/.commit'"
        read -r b1 u1 < <(catalog_bytes "$STORE")
        read -r n1 e1 < <(node_rows "$STORE")
        read -r v f < <(latest_of "$STORE" tree)
        [[ $v == "v$next" && $f == "$TREE_COUNT" ]] ||
            { echo "mount commit $i made $v with $f files, expected v$next" >"$W/fail.txt"; exit 1; }
        next=$((next + 1))
        # The draft's directory may linger for up to the entry TTL in the kernel's cache.
        for _ in $(seq 40); do [[ -e $d ]] || break; sleep 0.05; done
        if ((i == 0)); then
            mv "$W/t/mnt_commit" "$W/t/mnt_commit_warm"; rm -f "$W/t/mnt_mkdir" "$W/t/mnt_write"
            record mnt_grow_warm $((b1 - b0))
            continue
        fi
        record mnt_grow $((b1 - b0))
        record mnt_used $((u1 - u0))
        record mnt_nodes $((n1 - n0))
        record mnt_entries $((e1 - e0))
    done
    say "mount commit: $(samples mnt_commit) s; growth $(samples mnt_grow) B, in use $(samples mnt_used) B; new nodes $(samples mnt_nodes), entries $(samples mnt_entries)"
    unmount_one "$MNT"
}
section 5.00 "one-file commits in $TREE_N files" section_commit

report_5() {
    local t g
    if has cli_commit; then
        t=$(med cli_commit)
        row 5.01 "commit of 1 changed file in $TREE_N files, CLI \`draft commit\` (time)" "$(fmt_ms "$t")" \
            "—" "—" "—" "—" "< 50 ms" "$(met "$t" "<" 0.05)"
        g=$(awk '{s += $1} END {print s / NR}' "$W/t/cli_grow")
        row 5.02 "catalog growth per 1-file commit, CLI (catalog.db + wal, checkpointed)" "$(fmt_kib "$g")" \
            "—" "—" "—" "—" "< 64 KiB" "$(met "$g" "<" 65536)"
        g=$(awk '{s += $1} END {print s / NR}' "$W/t/cli_used")
        row 5.021 "… pages in use (page_count − freelist_count), CLI" "$(fmt_kib "$g")" \
            "—" "—" "—" "—" "< 64 KiB" "$(met "$g" "<" 65536)"
    fi
    if has mnt_commit; then
        t=$(med mnt_commit)
        row 5.03 "commit of 1 changed file in $TREE_N files, \`echo commit > .commit\` (time)" "$(fmt_ms "$t")" \
            "—" "—" "—" "—" "< 50 ms" "$(met "$t" "<" 0.05)"
        g=$(awk '{s += $1} END {print s / NR}' "$W/t/mnt_grow")
        row 5.04 "catalog growth per 1-file commit, mount (catalog.db + wal, checkpointed)" "$(fmt_kib "$g")" \
            "—" "—" "—" "—" "< 64 KiB" "$(met "$g" "<" 65536)"
        g=$(awk '{s += $1} END {print s / NR}' "$W/t/mnt_used")
        row 5.041 "… pages in use (page_count − freelist_count), mount" "$(fmt_kib "$g")" \
            "—" "—" "—" "—" "< 64 KiB" "$(met "$g" "<" 65536)"
    fi
    if has cli_commit && has mnt_commit; then
        note "Figure 5: median of $COMMIT_RUNS commits after one warm-up (CLI unmounted, then through a mount); each changes d$(printf '%04d' $((TREE_DIRS / 2)))/f000500.bin (a directory of 1,000 entries, in a root of $TREE_DIRS directories). CLI: \`draft new\` $(fmt_ms "$(med cli_new)"), \`draft add\` $(fmt_ms "$(med cli_add)") (untimed in the row), warm-up commit $(fmt_ms "$(samples cli_commit_warm)"). Mount: \`mkdir drafts/tree\` $(fmt_ms "$(med mnt_mkdir)"), writing the file $(fmt_ms "$(med mnt_write)"), warm-up commit $(fmt_ms "$(samples mnt_commit_warm)"). Growth is the mean over the $COMMIT_RUNS commits; the file grows only once SQLite's free pages are used up, so the bytes in use are shown too (samples in use: CLI $(samples cli_used) B, mount $(samples mnt_used) B; file: CLI $(samples cli_grow) B, mount $(samples mnt_grow) B; warm-ups $(samples cli_grow_warm) / $(samples mnt_grow_warm) B); each commit added $(samples cli_nodes | awk '{print $1}') tree nodes and $(samples cli_entries | awk '{print $1}') chunk entries (CLI)."
    fi
}

# =========================================================================================
# 7: hashing
# =========================================================================================
section_hash() {
    local hk=100 hstore htree
    hstore=${RSS_STORE[$hk]:-} htree=${RSS_TREE[$hk]:-}
    [[ -n $hstore ]] || { echo "no 100,000-file store" >"$W/fail.txt"; exit 1; }
    local blob
    blob=$(find "$STORE/blobs" -type f -size +100M | head -n 1)
    [[ -n $blob ]] || { echo "the big blob was not found" >"$W/fail.txt"; exit 1; }
    # hrun KEY CMD...: wall, user+sys, in t/KEY and t/KEY_cpu
    hrun() {
        local key=$1
        shift
        /usr/bin/time -f '%e %U %S' -o "$W/time.out" "$@" >"$W/hash.out" 2>&1 ||
            { cat "$W/hash.out" >&2; echo "$* failed: $(head -n 1 "$W/hash.out")" >"$W/fail.txt"; exit 1; }
        local e u s
        read -r e u s < <(tail -n 1 "$W/time.out")
        record "$key" "$e"
        record "${key}_cpu" "$(awk -v u="$u" -v s="$s" 'BEGIN {print u + s}')"
    }
    say "(7) hashing: verify of the $BIG_LABEL blob vs sha256sum ($RUNS runs, after a warm-up)"
    cat "$blob" >/dev/null
    local r
    for ((r = 0; r < RUNS + 1; r++)); do
        hrun h_big_verify "$BIN" --store "$STORE" verify big:v0
        hrun h_big_sha sha256sum "$blob"
    done
    say "verify $(samples h_big_verify) s, sha256sum $(samples h_big_sha) s"
    say "(7) hashing: verify of 100,000 files vs sha256sum via xargs ($RUNS runs, after a warm-up)"
    for ((r = 0; r < RUNS + 1; r++)); do
        hrun h_small_verify "$BIN" --store "$hstore" verify tree:v0
        hrun h_small_sha sh -c "find '$htree' -type f -print0 | xargs -0 sha256sum"
    done
    say "verify $(samples h_small_verify) s, sha256sum $(samples h_small_sha) s"
    stat -c %s "$blob" >"$W/t/h_big_bytes"
}
section 7.00 "hashing" section_hash

report_7() {
    has h_big_verify || return 0
    local bytes sbytes=$((100 * TREE_FILES * TREE_FSIZE_B)) np
    np=$(nproc)
    bytes=$(cat "$W/t/h_big_bytes")
    # drop the warm-up (first) sample of each
    local k
    for k in h_big_verify h_big_sha h_small_verify h_small_sha; do
        tail -n +2 "$W/t/$k" >"$W/t/${k}_m"; tail -n +2 "$W/t/${k}_cpu" >"$W/t/${k}_cpu_m"
    done
    util() { awk -v c="$(med "$1_cpu_m")" -v e="$(med "$1_m")" -v n="$np" 'BEGIN {printf "%.2f", c / e / n}'; }
    local va sa vb sb
    va=$(awk -v b="$bytes" -v t="$(med h_big_verify_m)" 'BEGIN {print b / t}')
    sa=$(awk -v b="$bytes" -v t="$(med h_big_sha_m)" 'BEGIN {print b / t}')
    row 7.01 "hash one $BIG_LABEL blob: \`verify\` vs \`sha256sum\` (throughput)" \
        "$(fmt_mbs "$va") (CPU $(util h_big_verify))" "$(fmt_mbs "$sa") (CPU $(util h_big_sha))" "—" \
        "$(ratio "$va" "$sa")" "—" "≥ 3× (SHA extensions)" "$(met "$(ratio "$va" "$sa")" ">=" 3)"
    vb=$(awk -v b="$sbytes" -v t="$(med h_small_verify_m)" 'BEGIN {print b / t}')
    sb=$(awk -v b="$sbytes" -v t="$(med h_small_sha_m)" 'BEGIN {print b / t}')
    row 7.02 "hash 100,000 × 1 KiB files: \`verify\` vs \`sha256sum\` via xargs (throughput)" \
        "$(fmt_mbs "$vb") (CPU $(util h_small_verify))" "$(fmt_mbs "$sb") (CPU $(util h_small_sha))" "—" \
        "$(ratio "$vb" "$sb")" "—" "info (per-file syscalls dominate)" "—"
    row 7.03 "CPU utilisation of \`verify\`, 100,000 files ((user + sys) ÷ wall ÷ $np cores)" \
        "$(util h_small_verify)" "$(util h_small_sha) (\`sha256sum\`)" "—" "—" "—" "≥ 0.8 (all cores)" \
        "$(met "$(util h_small_verify)" ">=" 0.8)"
    local shani
    shani=$(grep -q -o -m1 sha_ni /proc/cpuinfo && echo "yes (sha_ni)" || echo "no")
    note "Figure 7: median of $RUNS runs after one warm-up, page cache warm; \`verify big:v0\` and \`verify tree:v0\` (of a store holding the 100,000 files) vs \`sha256sum FILE\` and \`find DIR -type f -print0 | xargs -0 sha256sum\` (one process at a time); CPU = (user + sys) ÷ wall ÷ nproc from /usr/bin/time. CPU has SHA extensions: $shani. The issue sets no target here: the ≥ 3× for one blob is bench_core.sh's (SHA extensions against coreutils' portable SHA-256), the utilisation one is SPEC §6's \"all cores\" (one blob is one sequential hash, so only the many-file figure can use them). For 1 KiB files opening and reading each file costs more than hashing it, so their throughput ratio is shown for information."
}

# =========================================================================================
# Report
# =========================================================================================
# (|| disables errexit inside: a report that trips over a missing figure still writes the rest)
for rep in report_1_2 report_3 report_4 report_5 report_6 report_7; do
    "$rep" || say "$rep failed"
done
stamp
RUN_TIME=$(elapsed "$T_START" "$_T")
CPU=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)
SHANI=$(grep -q -m1 sha_ni /proc/cpuinfo && echo "SHA extensions (sha_ni)" || echo "no SHA extensions")
PASSTHROUGH=$(cat "$W/passthrough" 2>/dev/null || echo unknown)
N_MISS=$(cut -f2- "$W/rows.tsv" | grep -c '| ✗ |$' || true)
N_MET=$(cut -f2- "$W/rows.tsv" | grep -c '| ✓ |$' || true)
{
    echo "| # | benchmark | artifactfs | native | bindfs | vs native | vs bindfs | target | met |"
    echo "|---|---|---|---|---|---|---|---|---|"
    sort -t$'\t' -k1,1 -s "$W/rows.tsv" | while IFS=$'\t' read -r key rest; do
        echo "| ${key%%.*} | ${rest#| }"
    done
} >"$W/table.md"
{
    echo "# Benchmarks"
    echo
    echo "Written by \`scripts/bench.sh\` (see its header for what each figure measures). Every"
    echo "figure is measured against baselines taken in the same run on the same data: the native"
    echo "filesystem and bindfs (a plain FUSE filesystem). \"vs\" columns are ratios"
    echo "artifactfs ÷ baseline: for throughput higher is better, for time lower is better."
    echo
    echo "- command: \`$CMDLINE\`$([[ $QUICK == 1 ]] && echo " (QUICK: reduced sizes and run counts)")"
    echo "- date: $(date -u +%Y-%m-%dT%H:%MZ); run time $(awk -v t="$RUN_TIME" 'BEGIN {printf "%.1f min", t / 60}')"
    echo "- machine: $(nproc) cores, $CPU ($SHANI), $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo) RAM, kernel $(uname -r); BENCH_DIR $BASE_DIR on $FS"
    echo "- artifactfs $REV; kernel passthrough: $PASSTHROUGH; $(fio --version 2>/dev/null); $(bindfs --version 2>&1 | head -n 1)"
    echo "- targets: $N_MET met, $N_MISS missed"
    echo
    cat "$W/table.md"
    echo
    sed 's/^/- /' "$W/notes.md"
} >"$W/report.md"
echo
cat "$W/table.md"
echo
echo "$N_MET targets met, $N_MISS missed; run time $(awk -v t="$RUN_TIME" 'BEGIN {printf "%.1f min", t / 60}')."
mkdir -p "$(dirname "$OUT")"
cp "$W/report.md" "$OUT"
say "wrote $OUT"
"$ROOT/scripts/bench_loading.sh" --no-build --out "$OUT" $([[ $QUICK == 1 ]] && echo --quick) || FAILED=1
[[ $FAILED == 0 ]]
