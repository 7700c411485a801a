#!/usr/bin/env bash
# Big-file benchmark for artifactfs: saving model checkpoints. Every figure is a ratio against
# a baseline measured in the same run on the same filesystem, because the machines this runs
# on are shared and noisy.
#
#   scripts/bench_bigwrites.sh [--quick] [--keep] [--out FILE] [--runs N] [--only 1,2,3,4,5]
#   (or scripts/bench.sh bigwrites [OPTIONS])
#
#   (1) `artifactfs log` of 4 x 256 MiB random files into a new store   vs  `cp -r && sync`
#       of them to a new directory on the same filesystem (target: log <= 1.2 x).
#   (2) the same with one 4 GiB file.
#   (3) `cp -r` of the 4 x 256 MiB files into a new draft through the mount   vs  native
#       `cp -r` (throughput ratio, native time / draft time; target >= 0.8); then the commit
#       (`echo commit > .commit`, durable when it returns: target <= 0.3 s per GiB), and
#       `cp -r` + commit   vs  `cp -r && sync`.
#   (4) reflink: (1) on an XFS loop image (made here with mkfs.xfs, reflink on; installed
#       with apt-get if missing), source and store on it: `log` (which clones, then hashes)
#       vs  `cp -r --reflink=never && sync`; and `cp -r && sync` (coreutils clones too, and
#       hashes nothing) for reference.
#   (5) wandb (if `pip install wandb` works; offline, no account): `Artifact.add_dir` +
#       `run.log_artifact` + `run.finish` of the 4 x 256 MiB files, with the default policy
#       (copies into wandb's cache) and with policy="immutable", vs `cp -r && sync`.
#
# Hygiene: this machine's ext4 has no journal, so every repeat writes to a fresh path and
# nothing is deleted while a section runs (except in (2) when the disk would not hold every
# repeat: it then says so and removes each repeat's copies after timing it); each section's
# copies go when it ends, so the disk needs about 14 GiB at most (--quick: 2 GiB). Before each timed tool:
# `sync`, the page cache dropped, the source read back in (warm), `sync`. Each figure is the
# median of --runs (default 3; --quick 3 with 64 MiB files and a 512 MiB big file).
#
# Data lives in a fresh directory under $BENCH_DIR (default /var/tmp), removed at the end
# unless --keep; mounts and the loop image are undone on exit. Needs root (drop_caches,
# mount -o loop), /dev/fuse, python3, coreutils, cargo.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bench_lib.sh"

QUICK=0 KEEP=0 OUT="" RUNS="" ONLY=1,2,3,4,5
while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --keep) KEEP=1 ;;
        --out) OUT=${2:?--out needs a FILE}; shift ;;
        --out=*) OUT=${1#--out=} ;;
        --runs) RUNS=${2:?--runs needs N}; shift ;;
        --only) ONLY=${2:?--only needs a list such as 1,3}; shift ;;
        -h|--help) usage 0 ;;
        *) echo "bench_bigwrites.sh: unknown argument $1" >&2; usage 2 >&2 ;;
    esac
    shift
done
if [[ -n $OUT && $OUT != /* ]]; then OUT="$PWD/$OUT"; fi
: "${RUNS:=3}"
if [[ $QUICK == 1 ]]; then PART_MIB=64 BIG_MIB=512; else PART_MIB=256 BIG_MIB=4096; fi
PARTS=4

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export LC_ALL=C
unset ARTIFACTFS_STORE
say() { printf '[bench] %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }
want() { [[ ,$ONLY, == *,$1,* ]]; }

[[ -w /proc/sys/vm/drop_caches ]] || die "needs root: /proc/sys/vm/drop_caches is not writable"
[[ -c /dev/fuse ]] || die "/dev/fuse is missing"

say "building the release binary"
(cd "$ROOT" && cargo build --release --quiet)
BIN="$ROOT/target/release/artifactfs"
REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')
if [[ -n $(git -C "$ROOT" status --porcelain --untracked-files=no -- src Cargo.toml Cargo.lock 2>/dev/null) ]]; then
    REV+=" with uncommitted changes in src/"
fi

W=$(mktemp -d "${BENCH_DIR:-/var/tmp}/bench_bigwrites.XXXXXX")
MNT="$W/mnt" IMG_MNT="$W/xfs"
mkdir -p "$MNT" "$W/t"
: >"$W/rows.md"
: >"$W/reused.txt"
cleanup() {
    mountpoint -q "$MNT" && { "$BIN" umount "$MNT" 2>/dev/null || umount -l "$MNT"; }
    mountpoint -q "$IMG_MNT" 2>/dev/null && umount "$IMG_MNT"
    if [[ $KEEP == 1 ]]; then say "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT

drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
# Drops the page cache, reads SRC back in, syncs: the state before every timed tool.
prepare() { drop; cat "$1"/* >/dev/null; sync; }
# Runs the command, recording its wall time (s) under KEY.
timed() {
    local key=$1 a b
    shift
    stamp; a=$_T
    "$@"
    stamp; b=$_T
    elapsed "$a" "$b" >>"$W/t/$key"
}
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.4f\n", b - a}'; }
med() { sort -g "$W/t/$1" | awk '{a[NR]=$1} END {if (NR) print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
samples() { paste -sd' ' "$W/t/$1"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
row() { echo "| $1 | $2 | $3 | $4 |" >>"$W/rows.md"; }
cp_sync() { cp -r "$1" "$2" && sync; }
cp_sync_copy() { cp -r --reflink=never "$1" "$2" && sync; }
log_to() { "$BIN" --store "$1" log ckpt "$2" --type model >/dev/null; }

make_data() { # DIR COUNT MIB
    mkdir -p "$1"
    for i in $(seq 1 "$2"); do head -c "$(($3 << 20))" /dev/urandom >"$1/part-$i.bin"; done
}

# log vs cp -r && sync, RUNS times each, alternating; every repeat to fresh paths.
log_vs_cp() { # TAG SRC DIR [tidy]
    local tag=$1 src=$2 dir=$3 tidy=${4:-} r
    for r in $(seq 1 "$RUNS"); do
        prepare "$src"; timed "$tag.cp" cp_sync "$src" "$dir/cp.$r"
        prepare "$src"; timed "$tag.log" log_to "$dir/store.$r" "$src"
        "$BIN" --store "$dir/store.$r" verify >/dev/null || die "verify of $dir/store.$r failed"
        [[ -z $tidy ]] || rm -rf "$dir/cp.$r" "$dir/store.$r"
    done
}

GIB_PARTS=$(awk -v m=$((PARTS * PART_MIB)) 'BEGIN {printf "%.3f", m / 1024}')
say "writing $PARTS x $PART_MIB MiB of random data"
make_data "$W/parts" $PARTS $PART_MIB
LABEL="$PARTS x $PART_MIB MiB"

if want 1; then
    say "(1) log of $LABEL vs cp -r && sync"
    mkdir -p "$W/s1"
    log_vs_cp parts "$W/parts" "$W/s1"
    rm -rf "$W/s1"
    row "log of $LABEL" "$(med parts.log) s ($(samples parts.log))" \
        "cp -r && sync: $(med parts.cp) s" "$(ratio "$(med parts.log)" "$(med parts.cp)") x"
fi

if want 2; then
    say "(2) log of one $BIG_MIB MiB file vs cp && sync"
    make_data "$W/big" 1 $BIG_MIB
    free_mib=$(df -m --output=avail "$W" | tail -1)
    tidy=""
    if ((free_mib < (2 * RUNS + 4) * BIG_MIB)); then
        tidy=1
        say "only $free_mib MiB free: each repeat of (2) is removed once timed"
    fi
    mkdir -p "$W/bigruns"
    log_vs_cp big "$W/big" "$W/bigruns" $tidy
    row "log of one $BIG_MIB MiB file" "$(med big.log) s ($(samples big.log))" \
        "cp && sync: $(med big.cp) s" "$(ratio "$(med big.log)" "$(med big.cp)") x"
    rm -rf "$W/big" "$W/bigruns"
fi

if want 3; then
    say "(3) cp -r into a draft through the mount, then commit, vs native cp -r"
    for r in $(seq 1 "$RUNS"); do
        prepare "$W/parts"; timed native.cp cp -r "$W/parts" "$W/native.$r"
        timed native.sync sync
        store="$W/dstore.$r"
        "$BIN" --store "$store" init >/dev/null
        "$BIN" --store "$store" mount "$MNT"
        mkdir "$MNT/drafts/ckpt"
        prepare "$W/parts"; timed draft.cp cp -r "$W/parts" "$MNT/drafts/ckpt/parts"
        timed draft.commit sh -c "echo commit > '$MNT/drafts/ckpt/.commit'"
        cmp "$W/parts/part-1.bin" "$MNT/ckpt/v0/parts/part-1.bin" || die "draft copy differs"
        "$BIN" umount "$MNT"
        grep -h "stored by the digests" "$store/mount.log" | sed 's/.*\] //' >>"$W/reused.txt" || true
        "$BIN" --store "$store" verify >/dev/null || die "verify of $store failed"
    done
    rm -rf "$W"/native.* "$W"/dstore.*
    for r in $(seq 1 "$RUNS"); do
        awk -v a="$(sed -n "${r}p" "$W/t/draft.cp")" -v b="$(sed -n "${r}p" "$W/t/draft.commit")" \
            'BEGIN {printf "%.4f\n", a + b}' >>"$W/t/draft.both"
        awk -v a="$(sed -n "${r}p" "$W/t/native.cp")" -v b="$(sed -n "${r}p" "$W/t/native.sync")" \
            'BEGIN {printf "%.4f\n", a + b}' >>"$W/t/native.both"
    done
    row "cp -r of $LABEL into a draft (throughput vs native)" \
        "$(med draft.cp) s ($(samples draft.cp))" "native cp -r: $(med native.cp) s" \
        "$(ratio "$(med native.cp)" "$(med draft.cp)")"
    row "then the commit" "$(med draft.commit) s ($(samples draft.commit))" \
        "$(awk -v t="$(med draft.commit)" -v g="$GIB_PARTS" 'BEGIN {printf "%.2f s per GiB", t / g}')" "-"
    say "commits that linked files by their background digests: $(wc -l <"$W/reused.txt") of $RUNS"
    row "cp -r into a draft + commit" "$(med draft.both) s" \
        "cp -r && sync: $(med native.both) s" "$(ratio "$(med draft.both)" "$(med native.both)") x"
fi

if want 4; then
    say "(4) reflink on an XFS loop image"
    command -v mkfs.xfs >/dev/null || apt-get install -y -qq xfsprogs >/dev/null 2>&1 || true
    if command -v mkfs.xfs >/dev/null; then
        img_mib=$(((RUNS * 2 + 2) * PARTS * PART_MIB + 1024))
        truncate -s "${img_mib}M" "$W/xfs.img"
        mkfs.xfs -q -m reflink=1 "$W/xfs.img"
        mkdir -p "$IMG_MNT"
        mount -o loop "$W/xfs.img" "$IMG_MNT"
        cp -r "$W/parts" "$IMG_MNT/parts"
        for r in $(seq 1 "$RUNS"); do
            prepare "$IMG_MNT/parts"; timed xfs.cp cp_sync_copy "$IMG_MNT/parts" "$IMG_MNT/cp.$r"
            prepare "$IMG_MNT/parts"; timed xfs.clone cp_sync "$IMG_MNT/parts" "$IMG_MNT/clone.$r"
            prepare "$IMG_MNT/parts"; timed xfs.log log_to "$IMG_MNT/store.$r" "$IMG_MNT/parts"
            "$BIN" --store "$IMG_MNT/store.$r" verify >/dev/null || die "verify on XFS failed"
        done
        row "XFS (reflink): log of $LABEL (clones, hashes)" "$(med xfs.log) s ($(samples xfs.log))" \
            "cp -r --reflink=never && sync: $(med xfs.cp) s; cp -r (clones) && sync: $(med xfs.clone) s" \
            "$(ratio "$(med xfs.log)" "$(med xfs.cp)") x"
        umount "$IMG_MNT"
        rm -f "$W/xfs.img"
    else
        row "XFS (reflink)" "skipped: mkfs.xfs not installable" "-" "-"
    fi
fi

if want 5; then
    say "(5) wandb add_dir + offline log_artifact"
    if python3 -c 'import wandb' 2>/dev/null || pip install -q wandb >/dev/null 2>&1; then
        for policy in mutable immutable; do
            for r in $(seq 1 "$RUNS"); do
                prepare "$W/parts"
                python3 - "$W/parts" "$W/wandb.$policy.$r" "$policy" >>"$W/t/wandb.$policy" <<'EOF'
import os, sys, time
src, home, policy = sys.argv[1:]
os.makedirs(home)
os.environ.update(WANDB_MODE="offline", WANDB_DIR=home, WANDB_CACHE_DIR=home + "/cache",
                  WANDB_DATA_DIR=home + "/data", WANDB_SILENT="true")
import wandb
run = wandb.init(project="bench", dir=home)
t = time.time()
art = wandb.Artifact("ckpt", type="model")
art.add_dir(src, policy=policy)
run.log_artifact(art)
run.finish()
os.sync()
print(f"{time.time() - t:.4f}")
EOF
            done
        done
        row "wandb add_dir + log_artifact, default (copying) policy" \
            "$(med wandb.mutable) s ($(samples wandb.mutable))" "log: $(med parts.log 2>/dev/null || echo -) s" \
            "log / wandb: $(ratio "$(med parts.log)" "$(med wandb.mutable)")"
        row "wandb add_dir + log_artifact, immutable policy" \
            "$(med wandb.immutable) s ($(samples wandb.immutable))" "log: $(med parts.log) s" \
            "log / wandb: $(ratio "$(med parts.log)" "$(med wandb.immutable)")"
    else
        row "wandb" "skipped: pip install wandb failed" "-" "-"
    fi
fi

{
    echo "Big-file benchmark: \`scripts/bench.sh bigwrites$([[ $QUICK == 1 ]] && echo " --quick")\`,"
    echo "$(date -u +%Y-%m-%d), $(nproc) cores, $(uname -r), revision $REV; median of $RUNS."
    echo
    echo "| operation | artifactfs | baseline (same run) | ratio |"
    echo "|---|---|---|---|"
    cat "$W/rows.md"
} | tee ${OUT:+"$OUT"}
