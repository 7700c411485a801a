#!/usr/bin/env bash
# Shared-store benchmark (issue 18): a store whose catalog is PostgreSQL and whose blobs are
# in an S3-compatible object store, against the tools people use on such a bucket and against
# the embedded store, every figure a ratio against a baseline measured in the same run.
#
#   scripts/bench.sh shared [--quick] [--keep] [--out FILE] [--runs N] [--commit-runs N]
#                           [--committers N] [--commits N] [--cap SECONDS] [--small-files N]
#                           [--no-build]
#
#   1. Cold read (empty cache, `sync; echo 3 > /proc/sys/vm/drop_caches` before each) of one
#      1 GiB file and of 10,000 files of 4 KiB (read by 8 readers at once, as loader workers
#      do): through an artifactfs mount of a fresh host directory (its cache empty), vs
#      `rclone mount` and `s3fs` of a plain copy of the same files on the same server, vs
#      downloading that copy with `rclone copy` (and `aws s3 cp` for the 1 GiB file).
#   2. Warm read, the blobs in the host's cache: page cache warm, and page cache dropped;
#      against the same files in an embedded (SQLite + local blobs) store's mount.
#   3. A 1-file commit (`draft new`, `draft add`, timed `draft commit`) into the 10,000-file
#      version: shared store vs embedded store, interleaved.
#   4. 8 concurrent committers (`log` of one new file each, --commits times) into one artifact
#      of the shared store, each from a host directory of its own: commits per second, and
#      whether every version came out with gapless numbers; against the same on an embedded
#      store, and against 1 committer on the shared store.
#
# The servers are started here and stopped on exit: a throwaway PostgreSQL cluster
# (initdb/pg_ctl from Debian's packages, default durability: fsync on) and s3s-fs (installed
# by scripts/setup.sh) on 127.0.0.1, their data under the work directory. The object store is
# the same for every tool; the plain copy for rclone and s3fs sits in buckets of its own with
# the files at the bucket's root, because s3s-fs answers a HEAD of a "directory" key with an
# error (real S3 answers 404), which rclone and s3fs retry for minutes.
#
# Benchmark hygiene: each repeat writes to a fresh path (a new host directory, download
# directory or mount), nothing is deleted until the end (this machine's ext4 has no journal;
# creating files soon after deleting many is several times slower), caches are dropped before
# each timed cold read, and each figure is the median of --runs (default 3) repeats. The
# load average (`uptime`) is printed at the start of each part and in the table's notes.
#
# Defaults: --runs 3, --commit-runs 5, --committers 8, --commits 5 (per committer). A read
# through `rclone mount` or `s3fs` longer than --cap (default 150 s, quick 60 s) is stopped
# (its server killed) and shown as "> CAP"; its later repeats are skipped, and say so.
# --small-files N reads N small files instead of 10,000. --quick: 256 MiB and 1,000 files, a
# smoke run of about 4 minutes. A full run took 22 minutes on 2 cores shared with other builds
# (load average 6-10), more than half of it in the small-file cold reads (s3s-fs answers
# about 150 small GETs a second here); it needs about 6 GiB of disk under $BENCH_DIR
# (default /var/tmp).
#
# Needs root (drop_caches), /dev/fuse, fuse3, PostgreSQL (apt-get install postgresql), s3s-fs
# (scripts/setup.sh), python3, cargo; installs rclone and s3fs with apt-get if missing, and
# leaves out (saying so in the table) a tool that cannot be had; uses `aws` if installed.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bench_lib.sh"

QUICK=0 KEEP=0 OUT="" RUNS=3 COMMIT_RUNS=5 COMMITTERS=8 COMMITS=5 BUILD=1 CAP="" SMALL_FILES=""
CMDLINE="scripts/bench.sh shared${*:+ $*}"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --keep) KEEP=1 ;;
        --out) OUT=${2:?--out needs a FILE}; shift ;;
        --out=*) OUT=${1#--out=} ;;
        --runs) RUNS=${2:?--runs needs N}; shift ;;
        --commit-runs) COMMIT_RUNS=${2:?--commit-runs needs N}; shift ;;
        --committers) COMMITTERS=${2:?--committers needs N}; shift ;;
        --commits) COMMITS=${2:?--commits needs N}; shift ;;
        --cap) CAP=${2:?--cap needs SECONDS}; shift ;;
        --small-files) SMALL_FILES=${2:?--small-files needs N}; shift ;;
        --no-build) BUILD=0 ;;
        -h|--help) usage 0 ;;
        *) echo "bench_shared.sh: unknown argument $1" >&2; usage 2 >&2 ;;
    esac
    shift
done
if [[ -n $OUT && $OUT != /* ]]; then OUT="$PWD/$OUT"; fi
if [[ $QUICK == 1 ]]; then
    BIG_SIZE=256M BIG_LABEL="256 MiB" SMALL_N=1000
    : "${CAP:=60}"
else
    BIG_SIZE=1G BIG_LABEL="1 GiB" SMALL_N=10000
    : "${CAP:=150}"
fi
[[ -z $SMALL_FILES ]] || SMALL_N=$SMALL_FILES
SMALL_LABEL="$(commas "$SMALL_N") × 4 KiB files"
READERS=8 # parallel readers of the small files, as a data loader's workers
export LC_ALL=C
unset ARTIFACTFS_STORE ARTIFACTFS_RUN

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
say() { printf '[bench shared %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { say "$*"; exit 1; }
load() { uptime | sed 's/.*load average: *//'; }

# --- prerequisites -----------------------------------------------------------------------
[[ $(id -u) == 0 ]] || die "needs root (drop_caches; PostgreSQL runs as the postgres user)"
[[ -c /dev/fuse ]] || die "/dev/fuse is missing"
[[ -w /proc/sys/vm/drop_caches ]] || die "/proc/sys/vm/drop_caches is not writable"
for tool in fusermount3 python3 timeout; do
    command -v "$tool" >/dev/null || die "$tool is missing (scripts/setup.sh installs it)"
done
PG_BIN=$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -name initdb -path '*/bin/*' 2>/dev/null |
    sort -V | tail -n 1)
[[ -n $PG_BIN ]] || die "PostgreSQL's initdb is missing: apt-get install postgresql (scripts/setup.sh)"
PG_BIN=${PG_BIN%/initdb}
id postgres >/dev/null 2>&1 || die "no postgres user to run PostgreSQL as (apt-get install postgresql)"
S3S=$(command -v s3s-fs || echo "${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs")
[[ -x $S3S ]] || die "s3s-fs is missing: scripts/setup.sh installs it (cargo install s3s-fs --version 0.14.1 --locked --features binary)"

# rclone and s3fs from Debian; a tool that cannot be installed is left out, and said so.
missing=()
command -v rclone >/dev/null || missing+=(rclone)
command -v s3fs >/dev/null || missing+=(s3fs)
if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    for pkg in "${missing[@]}"; do
        apt-get install -y -qq "$pkg" >/dev/null 2>&1 ||
            { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq "$pkg" >/dev/null 2>&1; } ||
            say "could not install $pkg; its rows are left out"
    done
fi
HAVE_RCLONE=0 HAVE_S3FS=0 HAVE_AWS=0
command -v rclone >/dev/null && HAVE_RCLONE=1
command -v s3fs >/dev/null && HAVE_S3FS=1
command -v aws >/dev/null && aws --version >/dev/null 2>&1 && HAVE_AWS=1

# --- build -------------------------------------------------------------------------------
if [[ $BUILD == 1 ]]; then
    say "building the release binary"
    build_release "$ROOT" 3
fi
[[ -x $ROOT/target/release/artifactfs ]] || die "no target/release/artifactfs"
REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')

# --- work dir, services, cleanup ---------------------------------------------------------
BASE_DIR=${BENCH_DIR:-/var/tmp}
mkdir -p "$BASE_DIR"
W=$(mktemp -d "$BASE_DIR/bench_shared.XXXXXX")
chmod 755 "$W"
BIN="$W/artifactfs" # a copy: a rebuild by someone else during the run changes nothing here
cp "$ROOT/target/release/artifactfs" "$BIN"
mkdir -p "$W/mnt" "$W/hosts" "$W/dl" "$W/s3/data" "$W/pg"
chown postgres: "$W/pg"
S3_PID="" PG_UP=0 BG_PIDS=()

unmount() { # MOUNTPOINT: unmounts it whatever mounted it
    local mp=$1
    mountpoint -q "$mp" 2>/dev/null || return 0
    fusermount3 -u "$mp" 2>/dev/null || timeout 60 "$BIN" umount "$mp" >/dev/null 2>&1 || true
    local i
    for ((i = 0; i < 50; i++)); do mountpoint -q "$mp" 2>/dev/null || return 0; sleep 0.1; done
    umount -l "$mp" 2>/dev/null || fusermount3 -uz "$mp" 2>/dev/null || true
}

cleanup() {
    local rc=$? mp pid
    trap - EXIT INT TERM
    for mp in $(findmnt -rno TARGET | grep -F "$W/" | sort -r); do unmount "$mp"; done
    for pid in "${BG_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    [[ -z $S3_PID ]] || { kill "$S3_PID" 2>/dev/null; wait "$S3_PID" 2>/dev/null || true; }
    if [[ $PG_UP == 1 ]]; then
        su postgres -s /bin/sh -c "'$PG_BIN/pg_ctl' -D '$W/pg/data' -m fast -w stop" >/dev/null 2>&1 || true
    fi
    if [[ $KEEP == 1 ]]; then
        say "kept $W"
    elif findmnt -rno TARGET | grep -qF "$W/"; then
        say "a mount under $W is still there; not removing $W"
    else
        say "removing $W"
        chmod -R u+w "$W" 2>/dev/null || true
        rm -rf "$W"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

say "work dir $W ($(findmnt -no FSTYPE -T "$W" 2>/dev/null || echo '?')); load average $(load)"

say "starting PostgreSQL ($PG_BIN)"
su postgres -s /bin/sh -c "'$PG_BIN/initdb' -D '$W/pg/data' -U postgres -A trust -E UTF8 --locale=C" \
    >"$W/pg/initdb.log" 2>&1 || { cat "$W/pg/initdb.log" >&2; die "initdb failed"; }
for attempt in 1 2 3; do
    PG_PORT=$(free_port)
    if su postgres -s /bin/sh -c "'$PG_BIN/pg_ctl' -D '$W/pg/data' -l '$W/pg/log' -w -t 60 \
        -o '-p $PG_PORT -k $W/pg -c listen_addresses=127.0.0.1' start" >/dev/null 2>&1; then
        PG_UP=1
        break
    fi
done
[[ $PG_UP == 1 ]] || { tail -n 20 "$W/pg/log" >&2; die "PostgreSQL did not start"; }
su postgres -s /bin/sh -c "'$PG_BIN/psql' -q -h 127.0.0.1 -p $PG_PORT -U postgres -c 'CREATE DATABASE bench'" \
    >/dev/null 2>&1 || psql -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -c 'CREATE DATABASE bench' >/dev/null ||
    die "could not create the database"
CATALOG="postgres://postgres@127.0.0.1:$PG_PORT/bench"

say "starting s3s-fs ($S3S)"
S3_KEY=bench-access S3_SECRET=bench-secret-key
for attempt in 1 2 3; do
    S3_PORT=$(free_port)
    RUST_LOG=error "$S3S" --host 127.0.0.1 --port "$S3_PORT" --access-key "$S3_KEY" \
        --secret-key "$S3_SECRET" "$W/s3/data" >>"$W/s3/log" 2>&1 &
    S3_PID=$!
    for ((i = 0; i < 100; i++)); do answers "$S3_PORT" && break; sleep 0.1; done
    answers "$S3_PORT" && break
    kill "$S3_PID" 2>/dev/null || true
    S3_PID=""
done
[[ -n $S3_PID ]] || { tail -n 20 "$W/s3/log" >&2; die "s3s-fs did not start"; }
ENDPOINT="http://127.0.0.1:$S3_PORT"
mkdir -p "$W/s3/data/afs" "$W/s3/data/plain-big" "$W/s3/data/plain-small"
export AWS_ENDPOINT_URL=$ENDPOINT AWS_ACCESS_KEY_ID=$S3_KEY AWS_SECRET_ACCESS_KEY=$S3_SECRET AWS_REGION=us-east-1
# rclone 1.60 refuses any AWS_CA_BUNDLE with a plain-http transport; nothing here is TLS.
unset AWS_CA_BUNDLE
export RCLONE_CONFIG_BS_TYPE=s3 RCLONE_CONFIG_BS_PROVIDER=Other RCLONE_CONFIG_BS_ENDPOINT=$ENDPOINT \
    RCLONE_CONFIG_BS_ACCESS_KEY_ID=$S3_KEY RCLONE_CONFIG_BS_SECRET_ACCESS_KEY=$S3_SECRET \
    RCLONE_CONFIG_BS_FORCE_PATH_STYLE=true RCLONE_CONFIG_BS_REGION=us-east-1
RCLONE=(rclone --config /dev/null)
printf '%s:%s\n' "$S3_KEY" "$S3_SECRET" >"$W/s3/passwd"
chmod 600 "$W/s3/passwd"
S3FS_OPTS="ro,url=$ENDPOINT,use_path_request_style,endpoint=us-east-1,passwd_file=$W/s3/passwd"

# --- timing helpers ----------------------------------------------------------------------
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.4f", b - a}'; }

# run CMD...: its output to $W/last.out, shown (and the script stopped) if it fails.
run() { "$@" >"$W/last.out" 2>&1 || { say "FAILED: $*"; tail -n 20 "$W/last.out" >&2; exit 1; }; }

# measure LABEL COLD TOOL WORKLOAD: $RUNS repeats of TOOL_prep WORKLOAD I (untimed), caches
# dropped if COLD is 1, TOOL_read WORKLOAD I (timed), TOOL_post WORKLOAD I (untimed). Sets
# MEDIAN (seconds), or leaves it empty and returns 1 if a step failed. A tool with a
# TOOL_abort (a FUSE server it started) is stopped after $CAP seconds: CAPPED=1, MEDIAN empty.
measure() {
    local label=$1 cold=$2 tool=$3 work=$4 i t0 dog="" samples=()
    MEDIAN="" CAPPED=0
    for ((i = 1; i <= RUNS; i++)); do
        if ! "${tool}_prep" "$work" "$i" >"$W/step.out" 2>&1; then
            say "$label: setup FAILED: $(tail -n 3 "$W/step.out" | tr '\n' ' ')"
            return 1
        fi
        [[ $cold == 0 ]] || drop_caches
        rm -f "$W/capped"
        if declare -F "${tool}_abort" >/dev/null; then
            (sleep "$CAP" && touch "$W/capped" && "${tool}_abort" "$work" "$i") >/dev/null 2>&1 &
            dog=$!
        fi
        stamp; t0=$_T
        if ! "${tool}_read" "$work" "$i" >"$W/step.out" 2>&1 || [[ -e $W/capped ]]; then
            [[ -z $dog ]] || kill "$dog" 2>/dev/null || true
            "${tool}_post" "$work" "$i" >/dev/null 2>&1 || true
            if [[ -e $W/capped ]]; then
                CAPPED=1
                say "$label: stopped after $CAP s in repeat $i ($((i - 1)) done before); the rest skipped"
            else
                say "$label: FAILED: $(tail -n 3 "$W/step.out" | tr '\n' ' ')"
            fi
            return 1
        fi
        stamp
        [[ -z $dog ]] || kill "$dog" 2>/dev/null || true
        samples+=("$(elapsed "$t0" "$_T")")
        "${tool}_post" "$work" "$i" >/dev/null 2>&1 || true
    done
    MEDIAN=$(printf '%s\n' "${samples[@]}" | median)
    say "$(printf '%-44s %s  -> median %.3f s' "$label" "${samples[*]}" "$MEDIAN")"
}

# The readers: the 1 GiB file in one sequential pass; the small files by $READERS readers at
# once. Both fail if a read fails, or if fewer files than expected were read.
read_big() { dd if="$1/big.bin" of=/dev/null bs=1M status=none; }
read_small() {
    local n
    (cd "$1" && find . -type f -print0) >"$W/files.list" || return 1
    (cd "$1" && xargs -0 -n 100 -P "$READERS" cat <"$W/files.list" >/dev/null) || return 1
    n=$(tr -cd '\0' <"$W/files.list" | wc -c)
    [[ $n == "$SMALL_N" ]] || { echo "read $n files, expected $SMALL_N"; return 1; }
}
read_work() { if [[ $1 == big ]]; then read_big "$2"; else read_small "$2"; fi; }

ROWS=()
row() { ROWS+=("$(printf '| %s | %s | %s | %s |' "$@")"); }
NOTES=()
fmt_s() { awk -v t="$1" 'BEGIN {printf (t < 10 ? "%.2f s" : "%.1f s"), t}'; }
fmt_ms() { awk -v t="$1" 'BEGIN {printf "%.1f ms", t * 1000}'; }
fmt_mbs() { awk -v b="$1" -v t="$2" 'BEGIN {printf "%.0f MB/s", b / 1e6 / t}'; }
# Time ratio artifactfs ÷ baseline: below 1 is faster.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f×", a / b}'; }

# --- data --------------------------------------------------------------------------------
say "making one $BIG_LABEL file and $SMALL_LABEL of random bytes"
mkdir -p "$W/src/big" "$W/src/small"
head -c "$BIG_SIZE" /dev/urandom >"$W/src/big/big.bin"
BIG_BYTES=$(stat -c %s "$W/src/big/big.bin")
python3 - "$W/src/small" "$SMALL_N" <<'EOF'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    with open(f"{root}/f{i:06}.bin", "wb") as out:
        out.write(os.urandom(4096))
EOF
sync

# A host's side of the shared store: a fresh directory, so its cache is empty.
new_host() { "$BIN" init "$1" --catalog "$CATALOG" --objects s3://afs/store -q >/dev/null; }
say "loading the shared store (PostgreSQL + s3s-fs), an embedded store, and the plain copy"
new_host "$W/hosts/load"
run "$BIN" --store "$W/hosts/load" log big "$W/src/big"
run "$BIN" --store "$W/hosts/load" log small "$W/src/small"
run "$BIN" --store "$W/local" log big "$W/src/big"
run "$BIN" --store "$W/local" log small "$W/src/small"
if [[ $HAVE_RCLONE == 1 ]]; then
    run "${RCLONE[@]}" copy --transfers 8 "$W/src/big" bs:plain-big
    run "${RCLONE[@]}" copy --transfers 8 "$W/src/small" bs:plain-small
elif [[ $HAVE_AWS == 1 ]]; then
    run aws s3 cp --quiet --recursive "$W/src/big" s3://plain-big/
    run aws s3 cp --quiet --recursive "$W/src/small" s3://plain-small/
else
    # No client to upload with: the server keeps objects as plain files, so copy them in.
    cp "$W/src/big/big.bin" "$W/s3/data/plain-big/"
    cp "$W/src/small/"* "$W/s3/data/plain-small/"
fi
sync

# --- 1. cold reads -----------------------------------------------------------------------
say "cold reads; load average $(load)"
LOAD_COLD=$(load)
MNT="$W/mnt"
# artifactfs: a fresh host directory (empty cache) and a read-only mount of it per repeat.
afs_prep() {
    new_host "$W/hosts/cold-$1-$2"
    mkdir -p "$MNT/afs-$1-$2"
    "$BIN" --store "$W/hosts/cold-$1-$2" mount --read-only "$MNT/afs-$1-$2"
}
afs_read() { read_work "$1" "$MNT/afs-$1-$2/$1/v0"; }
afs_post() { "$BIN" umount "$MNT/afs-$1-$2"; }
# rclone mount: no disk cache (its default), a fresh mount per repeat.
rcm_prep() {
    local mp="$MNT/rclone-$1-$2" i
    mkdir -p "$mp"
    "${RCLONE[@]}" mount "bs:plain-$1" "$mp" --read-only --log-file "$W/rclone-mount.log" &
    FUSE_PID=$!
    BG_PIDS+=("$FUSE_PID")
    for ((i = 0; i < 200; i++)); do mountpoint -q "$mp" && return 0; sleep 0.05; done
    return 1
}
rcm_read() { read_work "$1" "$MNT/rclone-$1-$2"; }
rcm_post() { unmount "$MNT/rclone-$1-$2"; }
rcm_abort() { kill -9 "$FUSE_PID"; fusermount3 -uz "$MNT/rclone-$1-$2"; }
# s3fs: no disk cache (its default), a fresh mount per repeat.
s3fs_prep() {
    local mp="$MNT/s3fs-$1-$2" i
    mkdir -p "$mp"
    s3fs "plain-$1" "$mp" -f -o "$S3FS_OPTS" >>"$W/s3fs.log" 2>&1 &
    FUSE_PID=$!
    BG_PIDS+=("$FUSE_PID")
    for ((i = 0; i < 200; i++)); do mountpoint -q "$mp" && return 0; sleep 0.05; done
    return 1
}
s3fs_read() { read_work "$1" "$MNT/s3fs-$1-$2"; }
s3fs_post() { unmount "$MNT/s3fs-$1-$2"; }
s3fs_abort() { kill -9 "$FUSE_PID"; fusermount3 -uz "$MNT/s3fs-$1-$2"; }
# rclone copy and aws s3 cp: a download into a fresh directory, $READERS transfers at once.
rcc_prep() { :; }
rcc_read() { "${RCLONE[@]}" copy --transfers "$READERS" --checkers "$READERS" "bs:plain-$1" "$W/dl/rclone-$1-$2"; }
rcc_post() { :; }
aws_prep() { :; }
aws_read() { aws s3 cp --quiet --recursive "s3://plain-$1/" "$W/dl/aws-$1-$2/"; }
aws_post() { :; }

# SECONDS COUNT_OR_BYTES: "1.23 s (456 MB/s)" for the big file, "(789 files/s)" for the small.
speed() {
    if [[ $CUR == big ]]; then echo "$(fmt_s "$1") ($(fmt_mbs "$BIG_BYTES" "$1"))"
    else echo "$(fmt_s "$1") ($(awk -v n="$SMALL_N" -v t="$1" 'BEGIN {printf "%.0f files/s", n / t}'))"; fi
}
cold_rows() { # WORKLOAD LABEL
    local work=$1 label=$2 t_afs tool name t
    CUR=$work
    if ! measure "cold $work: artifactfs mount" 1 afs "$work"; then
        row "cold read, $label: artifactfs mount" "FAILED" "—" "—"
        return
    fi
    t_afs=$MEDIAN
    for tool in rcm s3fs rcc aws; do
        case $tool in
            rcm) name="\`rclone mount\`"; [[ $HAVE_RCLONE == 1 ]] || { NOTES+=("rclone could not be installed: no rclone rows."); continue; } ;;
            s3fs) name="\`s3fs\`"; [[ $HAVE_S3FS == 1 ]] || { NOTES+=("s3fs could not be installed: no s3fs rows."); continue; } ;;
            rcc) name="\`rclone copy\` (download)"; [[ $HAVE_RCLONE == 1 ]] || continue ;;
            aws) name="\`aws s3 cp\` (download)"
                 [[ $HAVE_AWS == 1 && $work == big ]] || continue ;;
        esac
        if measure "cold $work: $tool" 1 "$tool" "$work"; then
            t=$MEDIAN
            row "cold read, $label, vs $name" "$(speed "$t_afs")" "$(speed "$t")" "$(ratio "$t_afs" "$t")"
        elif [[ $CAPPED == 1 ]]; then
            row "cold read, $label, vs $name" "$(speed "$t_afs")" "> $CAP s (stopped)" "< $(ratio "$t_afs" "$CAP")"
        else
            row "cold read, $label, vs $name" "$(fmt_s "$t_afs")" "FAILED" "—"
        fi
    done
}
cold_rows big "$BIG_LABEL file"
cold_rows small "$SMALL_LABEL, $READERS readers"

# --- 2. warm reads: the shared store's cache vs an embedded store --------------------------
say "warm reads; load average $(load)"
mkdir -p "$MNT/warm-shared" "$MNT/warm-local"
# The host directory of the first cold artifactfs run holds every blob by now.
run "$BIN" --store "$W/hosts/cold-big-1" mount --read-only "$MNT/warm-shared"
run "$BIN" --store "$W/local" mount --read-only "$MNT/warm-local"
sh_read() { read_work "$1" "$MNT/warm-shared/$1/v0"; }
loc_read() { read_work "$1" "$MNT/warm-local/$1/v0"; }
sh_prep() { :; }
sh_post() { :; }
loc_prep() { :; }
loc_post() { :; }
# Fill the cache with the small files too (the big one is there), and warm the page cache.
for work in big small; do
    read_work "$work" "$MNT/warm-shared/$work/v0" || die "warm-up read of $work failed"
    read_work "$work" "$MNT/warm-local/$work/v0" || die "warm-up read of $work failed"
done
for work in big small; do
    CUR=$work
    if [[ $work == big ]]; then label="$BIG_LABEL file"; else label="$SMALL_LABEL, $READERS readers"; fi
    for cold in 0 1; do
        if [[ $cold == 0 ]]; then how="warm page cache"; else how="page cache dropped"; fi
        t_sh="" t_loc=""
        measure "cached $work ($how): shared" "$cold" sh "$work" && t_sh=$MEDIAN
        measure "cached $work ($how): embedded" "$cold" loc "$work" && t_loc=$MEDIAN
        if [[ -n $t_sh && -n $t_loc ]]; then
            row "cached read ($how), $label, vs embedded store" "$(speed "$t_sh")" "$(speed "$t_loc")" \
                "$(ratio "$t_sh" "$t_loc")"
        else
            row "cached read ($how), $label, vs embedded store" "${t_sh:-FAILED}" "${t_loc:-FAILED}" "—"
        fi
    done
done
unmount "$MNT/warm-shared"
unmount "$MNT/warm-local"

# --- 3. a 1-file commit: PostgreSQL + S3 vs SQLite + local blobs -------------------------
say "1-file commits; load average $(load)"
new_host "$W/hosts/commit"
commit_once() { # STORE FILE: one changed file into small, only the commit timed
    local store=$1 t0
    printf 'changed %s %s\n' "$RANDOM" "$EPOCHREALTIME" >"$W/onefile"
    run "$BIN" --store "$store" draft new small
    run "$BIN" --store "$store" draft add small "$W/onefile" --as f000500.bin
    stamp; t0=$_T
    run "$BIN" --store "$store" draft commit small
    stamp
    grep -q unchanged "$W/last.out" && die "the commit made no new version: $(cat "$W/last.out")"
    elapsed "$t0" "$_T" >>"$2"
    echo >>"$2"
}
: >"$W/commit-pg.times"
: >"$W/commit-sqlite.times"
commit_once "$W/hosts/commit" /dev/null # warm-up, both
commit_once "$W/local" /dev/null
for ((i = 0; i < COMMIT_RUNS; i++)); do
    commit_once "$W/hosts/commit" "$W/commit-pg.times"
    commit_once "$W/local" "$W/commit-sqlite.times"
done
t_pg=$(grep . "$W/commit-pg.times" | median)
t_sq=$(grep . "$W/commit-sqlite.times" | median)
say "commit, shared:   $(grep . "$W/commit-pg.times" | tr '\n' ' ') -> median $t_pg s"
say "commit, embedded: $(grep . "$W/commit-sqlite.times" | tr '\n' ' ') -> median $t_sq s"
row "1-file \`draft commit\` into the $(commas "$SMALL_N")-file version, vs embedded store (SQLite)" \
    "$(fmt_ms "$t_pg")" "$(fmt_ms "$t_sq")" "$(ratio "$t_pg" "$t_sq")"

# --- 4. concurrent committers ------------------------------------------------------------
say "$COMMITTERS concurrent committers; load average $(load)"
LOAD_CONC=$(load)
# committers STORE_OF ARTIFACT N: N committers at once, each `log`ging $COMMITS versions of
# ARTIFACT (one new file each) from the store STORE_OF(committer index). Sets T_WALL.
committers() {
    local store_of=$1 name=$2 n=$3 c pids=() t0 ok=1
    for ((c = 0; c < n; c++)); do
        mkdir -p "$W/conc/$name/c$c"
        for ((k = 0; k < COMMITS; k++)); do
            printf '%s %s %s\n' "$name" "$c" "$k" >"$W/conc/$name/c$c/k$k.txt"
        done
    done
    sync
    stamp; t0=$_T
    for ((c = 0; c < n; c++)); do
        (
            for ((k = 0; k < COMMITS; k++)); do
                "$BIN" --store "$("$store_of" "$c")" log "$name" "$W/conc/$name/c$c/k$k.txt" -q >/dev/null || exit 1
            done
        ) 2>>"$W/conc.err" &
        pids+=($!)
    done
    for c in "${pids[@]}"; do wait "$c" || ok=0; done
    stamp
    T_WALL=$(elapsed "$t0" "$_T")
    [[ $ok == 1 ]]
}
# gapless STORE NAME COUNT: every version v0..v(COUNT-1) is there, and no other.
gapless() {
    "$BIN" --store "$1" --json list "$2" | python3 -c '
import json, sys
want = int(sys.argv[1])
got = sorted(int(v["version"][1:]) for v in json.load(sys.stdin))
sys.exit(0 if got == list(range(want)) else 1)' "$3"
}
pg_host() { echo "$W/hosts/committer-$1"; }
sqlite_store() { echo "$W/local"; }
for ((c = 0; c < COMMITTERS; c++)); do new_host "$(pg_host "$c")"; done
: >"$W/conc-pg.rates" ; : >"$W/conc-sq.rates"; : >"$W/conc-one.rates"
CONC_OK=1 total=$((COMMITTERS * COMMITS))
for ((i = 1; i <= RUNS; i++)); do
    if committers pg_host "conc-pg-$i" "$COMMITTERS" && gapless "$(pg_host 0)" "conc-pg-$i" "$total"; then
        awk -v n="$total" -v t="$T_WALL" 'BEGIN {print n / t}' >>"$W/conc-pg.rates"
    else
        CONC_OK=0
        say "shared store, $COMMITTERS committers, run $i: FAILED or not gapless: $(tail -n 3 "$W/conc.err")"
    fi
    if committers sqlite_store "conc-sq-$i" "$COMMITTERS" && gapless "$W/local" "conc-sq-$i" "$total"; then
        awk -v n="$total" -v t="$T_WALL" 'BEGIN {print n / t}' >>"$W/conc-sq.rates"
    else
        say "embedded store, $COMMITTERS committers, run $i: FAILED or not gapless"
    fi
    if committers pg_host "conc-one-$i" 1 && gapless "$(pg_host 0)" "conc-one-$i" "$COMMITS"; then
        awk -v n="$COMMITS" -v t="$T_WALL" 'BEGIN {print n / t}' >>"$W/conc-one.rates"
    else
        say "shared store, 1 committer, run $i: FAILED"
    fi
done
r_pg=$(median <"$W/conc-pg.rates") r_sq=$(median <"$W/conc-sq.rates") r_one=$(median <"$W/conc-one.rates")
say "commits/s: shared x$COMMITTERS $(tr '\n' ' ' <"$W/conc-pg.rates")| embedded x$COMMITTERS $(tr '\n' ' ' <"$W/conc-sq.rates")| shared x1 $(tr '\n' ' ' <"$W/conc-one.rates")"
if [[ $CONC_OK == 1 ]]; then verdict="all $total versions, v0-v$((total - 1)), in each of $RUNS runs"; else verdict="MISSING OR DUPLICATE VERSIONS"; fi
rate() { awk -v r="$1" 'BEGIN {printf "%.1f commits/s", r}'; }
tput_ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f× (throughput)", a / b}'; }
row "$COMMITTERS concurrent committers × $COMMITS \`log\`s, one artifact, vs embedded store ($verdict)" \
    "$(rate "$r_pg")" "$(rate "$r_sq")" "$(tput_ratio "$r_pg" "$r_sq")"
row "$COMMITTERS concurrent committers on the shared store vs 1 committer" \
    "$(rate "$r_pg")" "$(rate "$r_one")" "$(tput_ratio "$r_pg" "$r_one")"

# --- report ------------------------------------------------------------------------------
CPU=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)
{
    echo "| benchmark | artifactfs (shared store) | baseline | ratio |"
    echo "|---|---|---|---|"
    printf '%s\n' "${ROWS[@]}"
    echo
    echo "\`$CMDLINE\` at $REV, $(date -u +%Y-%m-%dT%H:%MZ); $(nproc) cores ($CPU),"
    echo "$(findmnt -no FSTYPE -T "$W" 2>/dev/null || echo '?'); PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}'),"
    echo "$("$S3S" --version 2>/dev/null || echo s3s-fs) on 127.0.0.1$([[ $HAVE_RCLONE == 1 ]] && echo ", $(rclone version | head -n 1)")$([[ $HAVE_S3FS == 1 ]] && echo ", s3fs $(s3fs --version 2>/dev/null | grep -o 'V[0-9.]*' | head -n 1)")."
    echo "Load average (1, 5, 15 min): $LOAD_COLD at the cold reads, $LOAD_CONC at the committers, $(load) at the end."
    echo "Medians of $RUNS repeats (commits: $COMMIT_RUNS, interleaved), each into a fresh host directory,"
    echo "mount or download directory. Read ratios are time ratios (artifactfs ÷ baseline, below 1 is"
    echo "faster); committer ratios are throughput ratios (above 1 is faster)."
    for note in "${NOTES[@]}"; do echo "$note"; done | sort -u
    [[ $QUICK == 0 ]] || echo "QUICK run: reduced sizes."
} >"$W/table.md"
echo
cat "$W/table.md"
if [[ -n $OUT ]]; then cp "$W/table.md" "$OUT"; say "wrote $OUT"; fi
[[ $CONC_OK == 1 ]]
