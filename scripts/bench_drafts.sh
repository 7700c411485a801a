#!/usr/bin/env bash
# Drafts benchmark for artifactfs: writing into drafts through the mount and committing them,
# every figure against a baseline measured in the same run on the same filesystem, because the
# machines this runs on are shared and noisy.
#
#   scripts/bench_drafts.sh [--quick] [--keep] [--out FILE] [--runs N] [--commit-runs N]
#                           [--timeout SECONDS] [--only 1,2,3] [--no-drop]
#
#   (1) `cp -r` of 20,000 x 4 KiB random files (100 dirs x 200 files) into a fresh draft
#       (`mkdir MOUNT/drafts/NAME`, then `cp -r SRC MOUNT/drafts/NAME/data`)   vs  `cp -r` of
#       the same tree into a directory on the store's filesystem. The ratio is a throughput
#       ratio, native time / draft time (higher is better; target >= 0.5).
#       Then the commit of those files (`echo commit > MOUNT/drafts/NAME/.commit`, which
#       returns once the version is durable)   vs  `sync` right after the native `cp -r`; and
#       `cp -r` + commit   vs  `cp -r && sync` (both durable at the end).
#   (2) the same with 4 x 256 MiB random files (target >= 0.8 of native throughput for the
#       copy; the commit of the 1 GiB just copied in < 1 s).
#   (3) a commit that changes one file of a 100,000-file version (100 dirs x 1,000 small
#       files, built once with `artifactfs log`): `mkdir MOUNT/drafts/NAME`,
#       `echo ... > MOUNT/drafts/NAME/d0050/f000500.bin`, then the timed
#       `echo commit > .commit` (target < 50 ms)   vs  the same in a 1,000-file version (one
#       dir of 1,000 files: the changed directory has 1,000 entries in both, so only the size
#       of the whole version differs). Every commit makes a new version; big and small
#       alternate. The untimed mkdir and overwrite are logged too.
#
# Every commit is checked: the draft directory is gone and `artifactfs --json list NAME`
# (the CLI has no `versions` command) shows a new latest version with the expected number of
# files (and bytes, for (1) and (2)); one copied file is compared with its source through the
# mount.
#
# Each figure of (1) and (2) is the median of --runs (default 5) runs; every run starts from a
# new store and mount (or a new native directory) and the same state: `sync`, the page cache
# dropped (`echo 3 > /proc/sys/vm/drop_caches`, so that what earlier runs wrote need not be
# reclaimed during this one; --no-drop skips it), the source read back in (warm page cache),
# `sync` again. Draft and native alternate which goes first. Commits of (3) are the median of
# --commit-runs (default 9) after one untimed warm-up each, all on one mount. Nothing here is
# a cold-cache figure: the source is always in the page cache.
#
# Inode allocation: on ext4 without a journal, creating a file in a block group where many
# inodes were freed in the last minutes makes the allocator check (and skip) those inodes one
# by one; on a shared machine whose /var/tmp sees many deletions this made every `cp -r` of
# small files 10-15x slower, native and draft alike. So the work directory gets ext4's
# top-directory flag (`chattr +T`), which places each directory made in it (stores, native
# copy targets) in a group of its own choosing, and nothing is deleted before the end; a full
# run needs about 13 GiB.
#
# --quick shrinks everything (2,000 files, 2 x 64 MiB, a 10,000-file version; 2 runs, 3
# commits) for a smoke run; --only runs just the listed sections.
#
# A section that fails records FAILED in its rows (with the error, and the tail of the mount
# log in the output) and the next section still runs; the exit status is then 1. `cp -r` and
# the commits of (1) and (2) run under `timeout` (--timeout SECONDS, default 600).
#
# Data, stores, mount point and native copies live in a fresh directory under $BENCH_DIR
# (default /var/tmp; not tmpfs), removed at the end unless --keep; the mount is unmounted on
# exit, also on failure or interrupt. The mount logs of every store used are collected in
# WORKDIR/mount.all.log. Needs root-free FUSE or root, /dev/fuse, python3, coreutils, cargo.
set -euo pipefail
# Helpers every benchmark script shares: usage, commas, stamp.
source "$(dirname "${BASH_SOURCE[0]}")/bench_lib.sh"


QUICK=0 KEEP=0 OUT="" RUNS="" COMMIT_RUNS="" TIMEOUT=600 ONLY=1,2,3 DROP=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --keep) KEEP=1 ;;
        --out) OUT=${2:?--out needs a FILE}; shift ;;
        --out=*) OUT=${1#--out=} ;;
        --runs) RUNS=${2:?--runs needs N}; shift ;;
        --commit-runs) COMMIT_RUNS=${2:?--commit-runs needs N}; shift ;;
        --timeout) TIMEOUT=${2:?--timeout needs SECONDS}; shift ;;
        --only) ONLY=${2:?--only needs a list such as 1,3}; shift ;;
        --no-drop) DROP=0 ;;
        -h|--help) usage 0 ;;
        *) echo "bench_drafts.sh: unknown argument $1" >&2; usage 2 >&2 ;;
    esac
    shift
done
if [[ -n $OUT && $OUT != /* ]]; then OUT="$PWD/$OUT"; fi

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
GEN=(python3 "$ROOT/scripts/bench_gen.py")
export LC_ALL=C
unset ARTIFACTFS_STORE

if [[ $QUICK == 1 ]]; then
    SMALL_DIRS=10 SMALL_FILES=200 SMALL_SIZE=4K SMALL_SIZE_B=4096
    BIG_COUNT=2 BIG_SIZE=64M BIG_SIZE_B=$((64 << 20)) BIG_LABEL="64 MiB"
    CB_DIRS=10 CB_FILES=1000
    : "${RUNS:=2}" "${COMMIT_RUNS:=3}"
else
    SMALL_DIRS=100 SMALL_FILES=200 SMALL_SIZE=4K SMALL_SIZE_B=4096
    BIG_COUNT=4 BIG_SIZE=256M BIG_SIZE_B=$((256 << 20)) BIG_LABEL="256 MiB"
    CB_DIRS=100 CB_FILES=1000
    : "${RUNS:=5}" "${COMMIT_RUNS:=9}"
fi
CS_DIRS=1 CS_FILES=1000
# 20000 -> 20,000
SMALL_COUNT=$((SMALL_DIRS * SMALL_FILES))
SMALL_N=$(commas $SMALL_COUNT)
SMALL_BYTES=$((SMALL_COUNT * SMALL_SIZE_B))
BIG_BYTES=$((BIG_COUNT * BIG_SIZE_B))
CB_COUNT=$((CB_DIRS * CB_FILES)) CS_COUNT=$((CS_DIRS * CS_FILES))
CB_N=$(commas $CB_COUNT) CS_N=$(commas $CS_COUNT)

say() { printf '[bench] %s\n' "$*" >&2; }
die() { say "$*"; [[ -z ${W:-} ]] || echo "$*" >"$W/fail.txt"; exit 1; }

# --- prerequisites -----------------------------------------------------------------------
[[ -c /dev/fuse ]] || die "/dev/fuse is missing"
if [[ $DROP == 1 && ! -w /proc/sys/vm/drop_caches ]]; then
    say "/proc/sys/vm/drop_caches is not writable (not root?): running as with --no-drop"
    DROP=0
fi
command -v python3 >/dev/null || die "python3 is missing"
command -v timeout >/dev/null || die "timeout (coreutils) is missing"

# --- build -------------------------------------------------------------------------------
say "building the release binary"
(cd "$ROOT" && cargo build --release --quiet)
BIN="$ROOT/target/release/artifactfs"
REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')
if [[ -n $(git -C "$ROOT" status --porcelain --untracked-files=no -- src Cargo.toml Cargo.lock 2>/dev/null) ]]; then
    REV+=" with uncommitted changes in src/"
fi

# --- work dir, mount, cleanup ------------------------------------------------------------
BASE_DIR=${BENCH_DIR:-/var/tmp}
mkdir -p "$BASE_DIR"
W=$(mktemp -d "$BASE_DIR/bench_drafts.XXXXXX")
STORE=""           # a new one for every run of (1) and (2), and one for (3)
MNT="$W/mnt"
DONE=""            # when the last commit returned (for the check that its draft is gone)
TOPDIR=0           # 1 once the work dir has ext4's top-directory flag
mkdir -p "$MNT" "$W/t"
: >"$W/rows.md"
: >"$W/notes.md"
: >"$W/mount.all.log"
: >"$W/draft_gone.txt"

is_mounted() { mountpoint -q "$MNT" 2>/dev/null; }

unmount_store() {
    if is_mounted; then
        "$BIN" umount "$MNT" >"$W/umount.out" 2>&1 || {
            say "artifactfs umount $MNT failed: $(cat "$W/umount.out")"
            umount -l "$MNT" 2>/dev/null || fusermount3 -uz "$MNT" 2>/dev/null || true
        }
    fi
    if [[ -n $STORE && -f $STORE/mount.log ]]; then
        { echo "=== $STORE/mount.log, $(date -u +%H:%M:%S)"; cat "$STORE/mount.log"; } >>"$W/mount.all.log"
        : >"$STORE/mount.log"
    fi
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    unmount_store
    if [[ $KEEP == 1 || $rc != 0 ]] && [[ -s $W/mount.all.log ]]; then
        say "mount logs: $W/mount.all.log"
    fi
    if [[ $KEEP == 1 ]]; then
        say "kept work dir $W"
    elif is_mounted; then
        say "$MNT is still mounted; not removing $W"
    else
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
if [[ $FS == ext* ]] && command -v chattr >/dev/null; then
    chattr +T "$W" 2>/dev/null && TOPDIR=1 || say "chattr +T $W failed; inode allocation may be slow (see --help)"
fi
NEED_KB=$(((RUNS * 2 * (SMALL_BYTES + BIG_BYTES) + SMALL_BYTES + BIG_BYTES) / 1024 + 1048576))
AVAIL_KB=$(df -Pk "$W" | awk 'NR == 2 {print $4}')
((AVAIL_KB > NEED_KB)) || die "$W has $((AVAIL_KB >> 20)) GiB free; this run needs about $((NEED_KB >> 20)) GiB"

mount_log_tail() { tail -n "${1:-20}" "$STORE/mount.log" 2>/dev/null | sed 's/^/    mount.log: /' >&2 || true; }

# mount_store: mounts $STORE at $MNT and checks that it answers.
mount_store() {
    unmount_store
    env -u RUST_LOG "$BIN" --store "$STORE" mount "$MNT" >"$W/mount.out" 2>&1 ||
        { cat "$W/mount.out" >&2; mount_log_tail; die "mount of $STORE at $MNT failed"; }
    is_mounted || { mount_log_tail; die "mount returned, but $MNT is not a mount point"; }
    [[ -d $MNT/drafts ]] || { mount_log_tail; die "the mount answers, but $MNT/drafts is missing"; }
}

# new_store DIR: an empty store at DIR (which must not exist), made with `init`, mounted.
new_store() {
    unmount_store
    STORE=$1
    "$BIN" init "$STORE" >/dev/null
    mount_store
}

# prepare SRC: the state every timed copy starts from: nothing dirty, the page cache emptied
# of what earlier runs wrote (unless --no-drop), SRC read back in (warm), nothing dirty.
prepare() {
    sync
    if [[ $DROP == 1 ]]; then echo 3 >/proc/sys/vm/drop_caches; fi
    find "$1" -type f -exec cat {} + >/dev/null
    sync
}

# --- timing ------------------------------------------------------------------------------
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.5f", b - a}'; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
med() { median <"$W/t/$1"; }
samples() { awk '{printf "%s%.4f", (NR > 1 ? " " : ""), $1}' "$W/t/$1"; }
record() { echo "$2" >>"$W/t/$1"; } # KEY SECONDS

# timed KEY CMD...: runs CMD (stdout to /dev/null, stderr to $W/last.err), appends its wall
# time to $W/t/KEY and sets LAST. Exits (the section's subshell) if CMD fails.
timed() {
    local key=$1 t0
    shift
    local rc=0 why
    stamp; t0=$_T
    "$@" >/dev/null 2>"$W/last.err" || rc=$?
    stamp
    if [[ $rc != 0 ]]; then
        why="exit $rc"
        [[ $rc != 124 ]] || why="timed out after $TIMEOUT s"
        say "FAILED ($why, after $(elapsed "$t0" "$_T") s): $*"
        head -c 2000 "$W/last.err" >&2
        local err
        err=$(head -n 1 "$W/last.err" | cut -c 1-150)
        echo "${*//$W/WORKDIR} -> $why${err:+: $err}" >"$W/fail.txt"
        mount_log_tail
        exit 1
    fi
    LAST=$(elapsed "$t0" "$_T") DONE=$_T
    record "$key" "$LAST"
}

# check CONDITION-DESCRIPTION: for failed checks, as `... || fail "what"`.
fail() {
    say "CHECK FAILED: $*"
    echo "$*" >"$W/fail.txt"
    mount_log_tail
    exit 1
}

# latest_of NAME: "VERSION FILES SIZE" of NAME's latest version, from `list --json`.
latest_of() {
    "$BIN" --store "$STORE" --json list "$1" 2>"$W/list.err" | python3 -c '
import json, sys
vs = [v for v in json.load(sys.stdin) if "latest" in v["aliases"]]
print(vs[0]["version"], vs[0]["files"], vs[0]["size"]) if vs else print("none 0 0")
' || { cat "$W/list.err" >&2; echo "error 0 0"; }
}

# check_version NAME VERSION FILES [SIZE]: the commit made that version, and the draft is gone.
check_version() {
    local name=$1 want_v=$2 want_f=$3 want_s=${4:-} v f s
    read -r v f s < <(latest_of "$name")
    [[ $v == "$want_v" ]] || fail "commit of draft $name: latest is $v, expected $want_v ($(head -c 300 "$W/list.err"))"
    [[ $f == "$want_f" ]] || fail "commit of draft $name: $v has $f files, expected $want_f"
    [[ -z $want_s || $s == "$want_s" ]] || fail "commit of draft $name: $v has $s bytes, expected $want_s"
    # The draft directory must go. Its dentry may outlive the commit in the kernel's cache for
    # up to the entry TTL (0.5 s); that is counted and reported, and only longer is a failure.
    local waited=0
    while [[ -e $MNT/drafts/$name ]]; do
        ((waited < 40)) || fail "commit of draft $name: $MNT/drafts/$name still exists 2 s after the commit"
        sleep 0.05
        waited=$((waited + 1))
    done
    stamp
    if [[ -n $DONE ]]; then echo "$waited $(elapsed "$DONE" "$_T")" >>"$W/draft_gone.txt"; fi
    DONE=""
}

commit_draft() { echo commit >"$1"; } # the commit itself; run under timeout in (1) and (2)
export -f commit_draft

# --- table helpers (rows go to $W/rows.md so that sections can run in subshells) ----------
row() { printf '| %s | %s | %s | %s | %s | %s |\n' "$@" >>"$W/rows.md"; }
note() { echo "$*" >>"$W/notes.md"; }
fmt_s() { awk -v t="$1" 'BEGIN {printf (t < 10 ? "%.3f s" : "%.2f s"), t}'; }
fmt_ms() { awk -v t="$1" 'BEGIN {printf "%.1f ms", t * 1000}'; }
fmt_mbs() { awk -v b="$1" -v t="$2" 'BEGIN {printf "%.0f MB/s", b / 1e6 / t}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f×", a / b}'; }
# met VALUE OP LIMIT -> ✓ / ✗
met() {
    if awk -v v="$1" -v l="$3" -v op="$2" \
        'BEGIN {exit !((op == ">=") ? v >= l : (op == ">") ? v > l : (op == "<=") ? v <= l : v < l)}'; then
        echo "✓"
    else
        echo "✗"
    fi
}
sum_keys() { paste -d' ' "$W/t/$1" "$W/t/$2" | awk '{printf "%.5f\n", $1 + $2}' >"$W/t/$3"; }

# --- data --------------------------------------------------------------------------------
say "generating data: $SMALL_N x $SMALL_SIZE, $BIG_COUNT x $BIG_SIZE, versions of $CB_N and $CS_N files"
wanted() { [[ ,$ONLY, == *,$1,* ]]; }
if wanted 1; then "${GEN[@]}" random-tree "$W/small" "$SMALL_DIRS" "$SMALL_FILES" "$SMALL_SIZE"; fi
if wanted 2; then "${GEN[@]}" big-files "$W/large" "$BIG_COUNT" "$BIG_SIZE"; fi
if wanted 3; then
    "${GEN[@]}" small-tree "$W/cbig" "$CB_DIRS" "$CB_FILES"
    "${GEN[@]}" small-tree "$W/csmall" "$CS_DIRS" "$CS_FILES"
fi
sync

# --- (1) and (2): cp -r into a draft, then commit ------------------------------------------
# copy_bench TAG SRC COUNT BYTES: $RUNS runs of draft and native, alternating which goes first.
copy_bench() {
    local tag=$1 src=$2 count=$3 bytes=$4 r c name probe native
    probe=$(cd "$src" && find . -type f | sort | head -n 1)
    for ((r = 0; r < RUNS; r++)); do
        for c in $( ((r % 2 == 0)) && echo "draft native" || echo "native draft"); do
            if [[ $c == draft ]]; then
                new_store "$W/store_${tag}_r$r"
                name="${tag}r$r"
                mkdir "$MNT/drafts/$name" || fail "mkdir $MNT/drafts/$name"
                [[ -d $MNT/drafts/$name ]] || fail "$MNT/drafts/$name missing after mkdir"
                prepare "$src"
                timed "${tag}_cp_draft" timeout "$TIMEOUT" cp -r "$src" "$MNT/drafts/$name/data"
                timed "${tag}_commit" timeout "$TIMEOUT" bash -c 'commit_draft "$1"' _ \
                    "$MNT/drafts/$name/.commit"
                check_version "$name" v0 "$count" "$bytes"
                cmp -s "$src/$probe" "$MNT/$name/v0/data/$probe" ||
                    fail "$MNT/$name/v0/data/$probe differs from $src/$probe"
                say "$(printf '%-9s run %d  draft:  cp -r %8.3f s   commit %8.3f s' \
                    "$tag" "$r" "$(tail -n 1 "$W/t/${tag}_cp_draft")" "$LAST")"
            else
                native="$W/native_${tag}_r$r"
                mkdir "$native"
                prepare "$src"
                timed "${tag}_cp_native" timeout "$TIMEOUT" cp -r "$src" "$native/data"
                timed "${tag}_sync" sync
                say "$(printf '%-9s run %d  native: cp -r %8.3f s   sync   %8.3f s' \
                    "$tag" "$r" "$(tail -n 1 "$W/t/${tag}_cp_native")" "$LAST")"
            fi
        done
    done
    unmount_store
    sum_keys "${tag}_cp_draft" "${tag}_commit" "${tag}_total_draft"
    sum_keys "${tag}_cp_native" "${tag}_sync" "${tag}_total_native"
    for k in cp_draft commit total_draft cp_native sync total_native; do
        say "$(printf '%-9s %-13s %s -> median %.3f s' "$tag" "$k" "$(samples "${tag}_$k")" "$(med "${tag}_$k")")"
    done
}

# copy_rows TAG LABEL BYTES CP_TARGET CP_LIMIT COMMIT_TARGET COMMIT_LIMIT
copy_rows() {
    local tag=$1 label=$2 bytes=$3 d n cm sy td tn tput
    d=$(med "${tag}_cp_draft") n=$(med "${tag}_cp_native") cm=$(med "${tag}_commit")
    sy=$(med "${tag}_sync") td=$(med "${tag}_total_draft") tn=$(med "${tag}_total_native")
    tput=$(awk -v a="$n" -v b="$d" 'BEGIN {printf "%.2f", a / b}')
    row "\`cp -r\` $label into a draft (throughput vs native)" \
        "$(fmt_s "$d") ($(fmt_mbs "$bytes" "$d"))" "$(fmt_s "$n") ($(fmt_mbs "$bytes" "$n")) (\`cp -r\` native)" \
        "${tput}×" "$4" "$(met "$tput" ">=" "$5")"
    if [[ -n $6 ]]; then
        row "commit of those $label (\`echo commit > .commit\`)" "$(fmt_s "$cm")" \
            "$(fmt_s "$sy") (\`sync\` after native \`cp -r\`)" "$(ratio "$cm" "$sy") time" \
            "$6" "$(met "$cm" "<" "$7")"
    else
        row "commit of those $label (\`echo commit > .commit\`)" "$(fmt_s "$cm")" \
            "$(fmt_s "$sy") (\`sync\` after native \`cp -r\`)" "$(ratio "$cm" "$sy") time" \
            "none set (info)" "—"
    fi
    row "\`cp -r\` + commit, $label (durable)" "$(fmt_s "$td")" "$(fmt_s "$tn") (\`cp -r && sync\`)" \
        "$(awk -v a="$tn" -v b="$td" 'BEGIN {printf "%.2f", a / b}')× throughput" "none set (info)" "—"
}

# section NAME FUNCTION...: runs FUNCTION in a subshell with errexit; on failure, records a
# FAILED row and carries on.
FAILED=0
section() {
    local label=$1 rc=0
    shift
    rm -f "$W/fail.txt"
    set +e
    ("$@")
    rc=$?
    set -e
    if [[ $rc != 0 ]]; then
        FAILED=1
        local why
        why=$(cat "$W/fail.txt" 2>/dev/null || echo "exit status $rc")
        why=${why//|/\\|}
        row "$label" "FAILED: ${why//$'\n'/ }" "—" "—" "—" "✗"
        say "section '$label' FAILED; carrying on"
        unmount_store
    fi
}

section_small() {
    say "(1) cp -r of $SMALL_N x 4 KiB files into a draft vs native, then commit ($RUNS runs)"
    copy_bench small "$W/small" "$SMALL_COUNT" "$SMALL_BYTES"
    copy_rows small "$SMALL_N × 4 KiB files" "$SMALL_BYTES" "≥ 0.5× native" 0.5 "" ""
}
section_large() {
    say "(2) cp -r of $BIG_COUNT x $BIG_LABEL files into a draft vs native, then commit ($RUNS runs)"
    copy_bench large "$W/large" "$BIG_COUNT" "$BIG_BYTES"
    copy_rows large "$BIG_COUNT × $BIG_LABEL files" "$BIG_BYTES" "≥ 0.8× native" 0.8 "< 1 s" 1
}
if wanted 1; then section "\`cp -r\` $SMALL_N × 4 KiB files into a draft, and commit" section_small; fi
if wanted 2; then section "\`cp -r\` $BIG_COUNT × $BIG_LABEL files into a draft, and commit" section_large; fi

# --- (3) commit of one changed file in a big vs a small version ---------------------------
# commit_once TAG DIRS ITERATION KEY: a draft of TAG, one file overwritten, the commit timed.
declare -A NEXT_V FILES_OF
commit_once() {
    local tag=$1 dirs=$2 i=$3 key=$4 d t0 t1 t2 t3 t4 f want
    d="$MNT/drafts/$tag"
    f=$(printf '%s/d%04d/f%06d.bin' "$d" $((dirs / 2)) 500)
    stamp; t0=$_T
    mkdir "$d" || fail "mkdir $d"
    stamp; t1=$_T
    [[ -f $f ]] || fail "$f is missing in the fresh draft"
    stamp; t2=$_T
    echo "x $tag $i $RANDOM" >"$f" || fail "echo x > $f"
    stamp; t3=$_T
    echo commit >"$d/.commit" || fail "echo commit > $d/.commit"
    stamp; t4=$_T DONE=$_T
    want="v${NEXT_V[$tag]}"
    check_version "$tag" "$want" "${FILES_OF[$tag]}"
    NEXT_V[$tag]=$((NEXT_V[$tag] + 1))
    record "${key}" "$(elapsed "$t3" "$t4")"
    record "${key}_mkdir" "$(elapsed "$t0" "$t1")"
    record "${key}_write" "$(elapsed "$t2" "$t3")"
}

section_commit() {
    say "(3) commit of 1 changed file in a $CB_N-file vs a $CS_N-file version ($COMMIT_RUNS commits each)"
    unmount_store
    STORE="$W/store_commit"
    local t0 i
    stamp; t0=$_T
    "$BIN" --store "$STORE" log cbig "$W/cbig" --type dataset >"$W/log.out" 2>&1 ||
        fail "artifactfs log of the $CB_N-file version: $(tail -n 3 "$W/log.out")"
    stamp
    note "Setup of (3): \`artifactfs log\` of the $CB_N-file version took $(fmt_s "$(elapsed "$t0" "$_T")")."
    "$BIN" --store "$STORE" log csmall "$W/csmall" --type dataset >"$W/log.out" 2>&1 ||
        fail "artifactfs log of the $CS_N-file version: $(tail -n 3 "$W/log.out")"
    NEXT_V=([cbig]=1 [csmall]=1)
    FILES_OF=([cbig]=$CB_COUNT [csmall]=$CS_COUNT)
    check_version cbig v0 "$CB_COUNT"
    check_version csmall v0 "$CS_COUNT"
    mount_store
    commit_once cbig "$CB_DIRS" warmup warm_cbig
    commit_once csmall "$CS_DIRS" warmup warm_csmall
    for ((i = 0; i < COMMIT_RUNS; i++)); do
        if ((i % 2 == 0)); then
            commit_once cbig "$CB_DIRS" "$i" cbig
            commit_once csmall "$CS_DIRS" "$i" csmall
        else
            commit_once csmall "$CS_DIRS" "$i" csmall
            commit_once cbig "$CB_DIRS" "$i" cbig
        fi
    done
    local k
    for k in warm_cbig warm_csmall cbig csmall cbig_mkdir csmall_mkdir cbig_write csmall_write; do
        say "$(printf '%-13s %s -> median %.2f ms' "$k" "$(samples "$k")" "$(awk -v t="$(med "$k")" 'BEGIN {print t * 1000}')")"
    done
    local b s
    b=$(med cbig) s=$(med csmall)
    row "commit of 1 changed file in a $CB_N-file version (\`echo commit > .commit\`)" "$(fmt_ms "$b")" \
        "$(fmt_ms "$s") (same in a $CS_N-file version)" "$(ratio "$b" "$s") time" "< 50 ms (≈ 1× baseline)" \
        "$(met "$b" "<" 0.05)"
    note "Untimed steps of (3), medians: \`mkdir drafts/NAME\` $(fmt_ms "$(med cbig_mkdir)") ($CB_N files) /" \
        "$(fmt_ms "$(med csmall_mkdir)") ($CS_N); \`echo x > FILE\` (stages the file) $(fmt_ms "$(med cbig_write)") /" \
        "$(fmt_ms "$(med csmall_write)"); first (warm-up) commits $(fmt_ms "$(samples warm_cbig)") /" \
        "$(fmt_ms "$(samples warm_csmall)")."
    unmount_store
}
if wanted 3; then section "commit of 1 changed file in a $CB_N-file version" section_commit; fi

# --- report ------------------------------------------------------------------------------
# fuser warns "Failed to umount filesystem: Invalid argument" when its session ends after
# `artifactfs umount` has already unmounted; that one is counted apart.
UMOUNT_WARNS=$(grep -c 'Failed to umount filesystem' "$W/mount.all.log" || true)
WARNS=$(grep -E ' (WARN|ERROR) ' "$W/mount.all.log" | grep -vc 'Failed to umount filesystem' || true)
STALE=$(awk '$1 > 0 {n++; if ($2 > m) m = $2} END {printf "%d %d %.0f", n, NR, m * 1000}' "$W/draft_gone.txt" 2>/dev/null || echo "0 0 0")
CPU=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)
PASSTHROUGH=$(grep -o 'kernel passthrough [a-z]*' "$W/mount.all.log" | tail -n 1 | awk '{print $3}' || true)
{
    echo "| benchmark | artifactfs | baseline | ratio | target | met? |"
    echo "|---|---|---|---|---|---|"
    cat "$W/rows.md"
    echo
    echo "$(date -u +%Y-%m-%dT%H:%MZ), artifactfs $REV; $(nproc) cores ($CPU), kernel $(uname -r), $FS;"
    echo "artifactfs kernel passthrough: ${PASSTHROUGH:-unknown}; source in the page cache for every copy$([[ $DROP == 1 ]] && echo " (caches dropped, then the source re-read, before each)");"
    echo "work dir $([[ $TOPDIR == 1 ]] && echo "with ext4's top-directory flag (\`chattr +T\`)" || echo "without \`chattr +T\`")."
    echo "Copies and their commits: median of $RUNS runs, each into a fresh store and draft (or an empty"
    echo "native directory on the same filesystem), draft and native alternating; copy ratios are"
    echo "throughput ratios (native time ÷ draft time, higher is better); commit ratios are time ratios"
    echo "(commit ÷ \`sync\`). One-file commits: median of $COMMIT_RUNS per version, alternating, after one"
    echo "warm-up each; the ratio is big ÷ small."
    cat "$W/notes.md"
    read -r n_stale n_commits max_stale <<<"$STALE"
    if [[ $n_stale != 0 ]]; then
        echo "After $n_stale of $n_commits commits, \`drafts/NAME\` still answered stat for up to ${max_stale} ms"
        echo "(a cached dentry; listings no longer showed it)."
    fi
    echo "Mount logs: $WARNS WARN/ERROR lines ($UMOUNT_WARNS more of fuser's benign \"Failed to umount filesystem\")."
    if [[ $WARNS != 0 ]]; then
        grep -E ' (WARN|ERROR) ' "$W/mount.all.log" | grep -v 'Failed to umount filesystem' |
            sed -E 's/^\[[^ ]* ([A-Z]+) +([^]]*)\] ?/\1 \2: /' | sort | uniq -c | sort -rn | head -n 5 |
            sed 's/^/    /'
        echo "(in WORKDIR/mount.all.log; keep it with --keep)"
    fi
    if [[ $QUICK == 1 ]]; then echo "QUICK run: reduced sizes and run counts."; fi
} >"$W/table.md"
cat "$W/table.md"
if [[ -n $OUT ]]; then cp "$W/table.md" "$OUT"; say "wrote $OUT"; fi
[[ $FAILED == 0 ]]
