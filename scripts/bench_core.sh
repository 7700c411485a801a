#!/usr/bin/env bash
# Core benchmark for artifactfs: every figure is a ratio against a baseline measured in the
# same run on the same filesystem, because the machines this runs on are shared and noisy.
#
#   scripts/bench_core.sh [--quick] [--keep] [--out FILE] [--runs N] [--commit-runs N]
#
#   (1) `log` of 20,000 x 4 KiB random files        vs  `cp -r` of the same tree
#   (2) `log` of 4 x 256 MiB random files           vs  `cp -r` of them
#       (plus `cp -r && sync` as a second, informational baseline: `log` is durable, cp is not)
#   (3) hashing: `verify` of a store holding one 1 GiB blob   vs  `sha256sum` of that file;
#                `verify` of the 20,000-file store            vs  `sha256sum` of those files
#                (one process, through xargs)
#   (4) `draft commit` changing one file of a 100,000-file artifact (100 dirs x 1000 files)
#       vs one of a 1,000-file artifact (1 dir x 1000 files: the changed directory has 1,000
#       entries in both, so only the size of the whole artifact differs)
#
# Data lives in a fresh directory under $BENCH_DIR (default /var/tmp), removed at the end
# unless --keep. The page cache is not dropped: all figures are warm-cache. Each figure is the
# median of --runs (default 3) runs, each with a fresh store or copy target; commits are the
# median of --commit-runs (default 5), big and small interleaved. --quick shrinks everything
# (2,000 files, 2 x 64 MiB, a 128 MiB hash file, a 10,000-file artifact) for a smoke run.
#
# If `log` fails (for instance with EMFILE, too many open files), its row says so, and the same
# version is built and timed as one empty draft with a `draft add` per top-level directory, so
# the rest of the benchmark still runs; that substitute is labelled as such in the table.
#
# Needs bash, python3 (the data generator scripts/bench_gen.py), coreutils, cargo.
set -euo pipefail
# Helpers every benchmark script shares: usage, commas, stamp.
source "$(dirname "${BASH_SOURCE[0]}")/bench_lib.sh"


QUICK=0 KEEP=0 OUT="" RUNS=3 COMMIT_RUNS=5
while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --keep) KEEP=1 ;;
        --out) OUT=${2:?--out needs a FILE}; shift ;;
        --out=*) OUT=${1#--out=} ;;
        --runs) RUNS=${2:?--runs needs N}; shift ;;
        --commit-runs) COMMIT_RUNS=${2:?--commit-runs needs N}; shift ;;
        -h|--help) usage 0 ;;
        *) echo "bench_core.sh: unknown argument $1" >&2; usage 2 >&2 ;;
    esac
    shift
done
if [[ -n $OUT && $OUT != /* ]]; then OUT="$PWD/$OUT"; fi

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
GEN=(python3 "$ROOT/scripts/bench_gen.py")

if [[ $QUICK == 1 ]]; then
    SMALL_DIRS=2 SMALL_FILES=1000 SMALL_SIZE=4K SMALL_SIZE_B=4096
    BIG_COUNT=2 BIG_SIZE=64M BIG_LABEL="64 MiB"
    HASH_SIZE=128M HASH_LABEL="128 MiB"
    CB_DIRS=10 CB_FILES=1000
else
    SMALL_DIRS=20 SMALL_FILES=1000 SMALL_SIZE=4K SMALL_SIZE_B=4096
    BIG_COUNT=4 BIG_SIZE=256M BIG_LABEL="256 MiB"
    HASH_SIZE=1G HASH_LABEL="1 GiB"
    CB_DIRS=100 CB_FILES=1000
fi
# The small artifact has one directory of 1,000 files, so the changed directory is the same size
# (1,000 entries) in both artifacts: the comparison isolates the size of the whole artifact.
CS_DIRS=1 CS_FILES=1000
# 20000 -> 20,000
SMALL_N=$(commas $((SMALL_DIRS * SMALL_FILES)))
CB_N=$(commas $((CB_DIRS * CB_FILES)))
CS_N=$(commas $((CS_DIRS * CS_FILES)))

say() { printf '[bench] %s\n' "$*" >&2; }

# --- build -------------------------------------------------------------------------------
say "building the release binary"
(cd "$ROOT" && cargo build --release --quiet)
BIN="$ROOT/target/release/artifactfs"

# --- work dir ----------------------------------------------------------------------------
BASE_DIR=${BENCH_DIR:-/var/tmp}
mkdir -p "$BASE_DIR"
W=$(mktemp -d "$BASE_DIR/bench_core.XXXXXX")
cleanup() {
    if [[ $KEEP == 1 ]]; then
        say "kept work dir $W"
    else
        chmod -R u+w "$W" 2>/dev/null || true # blobs are read-only
        rm -rf "$W"
    fi
}
trap cleanup EXIT
say "work dir $W ($(findmnt -no FSTYPE -T "$W" 2>/dev/null || echo '?'))"

# --- timing ------------------------------------------------------------------------------

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

# run CMD...: runs it with output to $W/last.out, showing that output if it fails.
run() {
    if ! "$@" >"$W/last.out" 2>&1; then
        say "FAILED: $*"
        cat "$W/last.out" >&2
        exit 1
    fi
}

# try_run CMD...: like run, but returns 1 on failure (output kept in $W/fail.out).
try_run() {
    if ! "$@" >"$W/last.out" 2>&1; then
        cp "$W/last.out" "$W/fail.out"
        return 1
    fi
}

# time_median LABEL PREPARE COMMAND: runs PREPARE (untimed) then COMMAND (timed), $RUNS times;
# sets MEDIAN to the median wall time in seconds. Returns 1 (MEDIAN empty) if COMMAND fails.
time_median() {
    local label=$1 prep=$2 cmd=$3 i t0 samples=()
    MEDIAN=""
    for ((i = 0; i < RUNS; i++)); do
        eval "$prep"
        stamp; t0=$_T
        if ! eval "$cmd"; then
            say "$label: FAILED: $(head -c 400 "$W/fail.out" 2>/dev/null)"
            return 1
        fi
        stamp
        samples+=("$(awk -v a="$t0" -v b="$_T" 'BEGIN {printf "%.4f", b - a}')")
    done
    MEDIAN=$(printf '%s\n' "${samples[@]}" | median)
    say "$(printf '%-34s %s  -> median %.3f s' "$label" "${samples[*]}" "$MEDIAN")"
}

# A short cause for the last failure, for the table.
failure_note() {
    if grep -q 'Too many open files' "$W/fail.out" 2>/dev/null; then
        echo "FAILED: EMFILE at ulimit -n $(ulimit -n) (every staged blob stays open until the batch finishes)"
    else
        echo "FAILED: $(head -n 1 "$W/fail.out" | cut -c 1-120)"
    fi
}

# build_chunked STORE NAME SRC: the same version as `log NAME SRC`, built as one empty draft
# with one `draft add` per top-level directory of SRC. The fallback when `log` fails.
build_chunked() {
    local store=$1 name=$2 src=$3 d
    try_run "$BIN" --store "$store" draft new "$name" --type dataset --empty || return 1
    for d in "$src"/*/; do
        d=${d%/}
        try_run "$BIN" --store "$store" draft add "$name" "$d" --as "${d##*/}" || return 1
    done
    try_run "$BIN" --store "$store" draft commit "$name"
}

ROWS=()
row() { ROWS+=("$(printf '| %s | %s | %s | %s | %s |' "$@")"); }
fmt_s() { awk -v t="$1" 'BEGIN {printf (t < 10 ? "%.3f s" : "%.2f s"), t}'; }
fmt_ms() { awk -v t="$1" 'BEGIN {printf "%.1f ms", t * 1000}'; }
fmt_mbs() { awk -v b="$1" -v t="$2" 'BEGIN {printf "%.0f MB/s", b / 1e6 / t}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f×", a / b}'; }

# Fresh target, and nothing dirty left over from the previous run to flush during this one.
fresh() { chmod -R u+w "$@" 2>/dev/null || true; rm -rf "$@"; sync; }

# --- data --------------------------------------------------------------------------------
say "generating data: $SMALL_N x $SMALL_SIZE, $BIG_COUNT x $BIG_SIZE, one $HASH_SIZE file, artifacts of $CB_N and $CS_N files"
run "${GEN[@]}" random-tree "$W/small" "$SMALL_DIRS" "$SMALL_FILES" "$SMALL_SIZE"
run "${GEN[@]}" big-files "$W/large" "$BIG_COUNT" "$BIG_SIZE"
run "${GEN[@]}" big-files "$W/hash" 1 "$HASH_SIZE"
run "${GEN[@]}" small-tree "$W/cbig" "$CB_DIRS" "$CB_FILES"
run "${GEN[@]}" small-tree "$W/csmall" "$CS_DIRS" "$CS_FILES"
sync

# --- (1) and (2): log vs cp -r -----------------------------------------------------------
log_vs_cp() { # LABEL SRC TAG
    local label=$1 src=$2 tag=$3 t_log="" t_chunk="" t_cp t_cps note=""
    if time_median "log $label" "fresh '$W/store_$tag'" \
        "try_run '$BIN' --store '$W/store_$tag' log $tag '$src' --type dataset"; then
        t_log=$MEDIAN
    else
        note=$(failure_note)
        time_median "chunked draft add + commit $label" "fresh '$W/store_$tag'" \
            "build_chunked '$W/store_$tag' $tag '$src'" && t_chunk=$MEDIAN
    fi
    time_median "cp -r $label" "fresh '$W/cp_$tag'" "run cp -r '$src' '$W/cp_$tag'"
    t_cp=$MEDIAN
    time_median "cp -r + sync $label" "fresh '$W/cp_$tag'" \
        "run cp -r '$src' '$W/cp_$tag'; sync"
    t_cps=$MEDIAN
    fresh "$W/cp_$tag"
    if [[ -n $t_log ]]; then
        row "\`log\` $label" "$(fmt_s "$t_log")" "$(fmt_s "$t_cp") (\`cp -r\`)" \
            "$(ratio "$t_log" "$t_cp")" "none set (time ratio, lower is better)"
        row "\`log\` $label, durable baseline" "$(fmt_s "$t_log")" "$(fmt_s "$t_cps") (\`cp -r && sync\`)" \
            "$(ratio "$t_log" "$t_cps")" "info: \`log\` fsyncs, plain cp does not"
    else
        row "\`log\` $label" "$note" "$(fmt_s "$t_cp") (\`cp -r\`)" "—" \
            "none set (time ratio, lower is better)"
        if [[ -n $t_chunk ]]; then
            row "substitute: \`draft add\` per top-level dir + \`commit\`, $label" "$(fmt_s "$t_chunk")" \
                "$(fmt_s "$t_cp") (\`cp -r\`) / $(fmt_s "$t_cps") (\`cp -r && sync\`)" \
                "$(ratio "$t_chunk" "$t_cp") / $(ratio "$t_chunk" "$t_cps")" "info: same version, smaller batches"
        fi
    fi
}

log_vs_cp "$SMALL_N × 4 KiB files" "$W/small" small
log_vs_cp "$BIG_COUNT × $BIG_LABEL files" "$W/large" large
fresh "$W/store_large"

# --- (3) hashing: verify vs sha256sum ----------------------------------------------------
run "$BIN" --store "$W/store_hash" log hash "$W/hash" --type dataset
HASH_BYTES=$(stat -c %s "$W/hash/big00.bin")
time_median "verify $HASH_LABEL" "" "run '$BIN' --store '$W/store_hash' verify"
t_v=$MEDIAN
time_median "sha256sum $HASH_LABEL" "" "run sha256sum '$W/hash/big00.bin'"
t_s=$MEDIAN
row "hash one $HASH_LABEL file (\`verify\`)" "$(fmt_mbs "$HASH_BYTES" "$t_v")" \
    "$(fmt_mbs "$HASH_BYTES" "$t_s") (\`sha256sum\`)" "$(ratio "$t_s" "$t_v")" "≥ 3×"

SMALL_BYTES=$((SMALL_DIRS * SMALL_FILES * SMALL_SIZE_B))
time_median "verify $SMALL_N files" "" "run '$BIN' --store '$W/store_small' verify"
t_v=$MEDIAN
time_median "sha256sum $SMALL_N files (xargs)" "" \
    "find '$W/small' -type f -print0 | xargs -0 sha256sum >'$W/last.out'"
t_s=$MEDIAN
row "hash $SMALL_N × 4 KiB files (\`verify\`)" "$(fmt_mbs "$SMALL_BYTES" "$t_v")" \
    "$(fmt_mbs "$SMALL_BYTES" "$t_s") (\`sha256sum\` via xargs)" "$(ratio "$t_s" "$t_v")" "≥ 3×"
fresh "$W/store_hash" "$W/store_small"

# --- (4) commit cost: one changed file in a big vs a small artifact ------------------------
# build_artifact TAG: `log`, or the chunked fallback if `log` fails; sets SETUP_NOTE.
build_artifact() {
    local tag=$1 n=$2
    if time_median "log $n-file artifact (setup)" "" \
        "try_run '$BIN' --store '$W/store_$tag' log $tag '$W/$tag' --type dataset"; then
        SETUP_NOTE="\`log\` of the $n-file artifact took $(fmt_s "$MEDIAN")"
    else
        SETUP_NOTE="\`log\` of the $n-file artifact $(failure_note); built with \`draft add\` per directory instead"
        fresh "$W/store_$tag"
        time_median "chunked build of $n-file artifact" "" \
            "build_chunked '$W/store_$tag' $tag '$W/$tag'" || { say "setup failed"; exit 1; }
        SETUP_NOTE+=" ($(fmt_s "$MEDIAN"))"
    fi
}
RUNS_SAVED=$RUNS RUNS=1
build_artifact csmall "$CS_N"
build_artifact cbig "$CB_N"
RUNS=$RUNS_SAVED

# commit_once TAG DIRS N: changes the middle file of the artifact and times only the commit.
commit_once() {
    local tag=$1 dirs=$2 n=$3 store="$W/store_$1" dest
    dest=$(printf 'd%04d/f%06d.bin' $((dirs / 2)) 500)
    printf 'changed %s %s %s\n' "$tag" "$n" "$RANDOM" >"$W/onefile"
    run "$BIN" --store "$store" draft new "$tag"
    run "$BIN" --store "$store" draft add "$tag" "$W/onefile" --as "$dest"
    stamp; local t0=$_T
    run "$BIN" --store "$store" draft commit "$tag"
    stamp
    if grep -q unchanged "$W/last.out"; then
        say "commit of $tag made no new version: $(cat "$W/last.out")"
        exit 1
    fi
    awk -v a="$t0" -v b="$_T" 'BEGIN {printf "%.5f\n", b - a}' >>"$W/commit_$tag.times"
}
commit_once cbig "$CB_DIRS" warmup
commit_once csmall "$CS_DIRS" warmup
: >"$W/commit_cbig.times"
: >"$W/commit_csmall.times"
for ((i = 0; i < COMMIT_RUNS; i++)); do
    commit_once cbig "$CB_DIRS" "$i"
    commit_once csmall "$CS_DIRS" "$i"
done
t_cb=$(median <"$W/commit_cbig.times")
t_cs=$(median <"$W/commit_csmall.times")
say "$(printf '%-34s %s -> median %.4f s' "commit in $CB_N files" "$(tr '\n' ' ' <"$W/commit_cbig.times")" "$t_cb")"
say "$(printf '%-34s %s -> median %.4f s' "commit in $CS_N files" "$(tr '\n' ' ' <"$W/commit_csmall.times")" "$t_cs")"
row "\`draft commit\` of 1 changed file in a $CB_N-file artifact" "$(fmt_ms "$t_cb")" \
    "$(fmt_ms "$t_cs") (same in a $CS_N-file artifact)" "$(ratio "$t_cb" "$t_cs")" \
    "≈ 1× (within noise), both < 50 ms"

# --- report ------------------------------------------------------------------------------
CPU=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)
FS=$(findmnt -no FSTYPE -T "$W" 2>/dev/null || echo '?')
{
    echo "| benchmark | artifactfs | baseline | ratio | target |"
    echo "|---|---|---|---|---|"
    printf '%s\n' "${ROWS[@]}"
    echo
    echo "$(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores ($CPU), $FS; warm page cache (not dropped)."
    echo "Median of $RUNS runs (commits: $COMMIT_RUNS, interleaved), each into a fresh store or copy;"
    echo "log/cp ratios are time ratios (artifactfs ÷ baseline), hashing ratios are throughput"
    echo "ratios (artifactfs ÷ sha256sum), the commit ratio is big ÷ small."
    echo "Setup: $SETUP_NOTE.$([[ $QUICK == 1 ]] && echo ' QUICK run: reduced sizes.')"
} >"$W/table.md"
cat "$W/table.md"
if [[ -n $OUT ]]; then cp "$W/table.md" "$OUT"; say "wrote $OUT"; fi
