#!/usr/bin/env bash
# Runs artifactfs end to end on the bundled example dataset: log a version, change a file,
# log again, list, show, diff and get, then mount the store and read a version through the
# mount. Everything happens in a temporary directory (DEMO_DIR=DIR: in DIR, kept afterwards).
# Each command is printed as it can be pasted into a shell, once artifactfs is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

# ARTIFACTFS_BIN: a binary to run instead of building the release one.
bin=${ARTIFACTFS_BIN:-}
if [ -z "$bin" ]; then
    cargo build --release --quiet
    bin=$PWD/target/release/artifactfs
fi
if [ -n "${DEMO_DIR:-}" ]; then
    mkdir -p "$DEMO_DIR"
    work=$(cd "$DEMO_DIR" && pwd)
    trap '"$bin" umount "$work/mnt" 2>/dev/null || true' EXIT
else
    work=$(mktemp -d)
    trap '"$bin" umount "$work/mnt" 2>/dev/null || true; rm -rf "$work"' EXIT
fi
mnt=$work/mnt
export ARTIFACTFS_STORE=$work/store
cp -r examples/mnist-mini "$work/data"

# A word as a shell reads it back: as it is when that is safe, else in single quotes.
quote() {
    if [[ $1 =~ ^[A-Za-z0-9_./:=@,+-]+$ ]]; then
        printf '%s' "$1"
    else
        printf "'%s'" "${1//\'/\'\\\'\'}"
    fi
}
# Prints a command as it can be pasted (artifactfs for the binary), then runs it.
step() {
    local first=$1
    [ "$first" = "$bin" ] && first=artifactfs
    printf '\n$ %s' "$(quote "$first")"
    shift
    for word in "$@"; do printf ' %s' "$(quote "$word")"; done
    printf '\n'
    if [ "$first" = artifactfs ]; then "$bin" "$@"; else "$first" "$@"; fi
}

printf '$ export ARTIFACTFS_STORE=%s\n' "$(quote "$ARTIFACTFS_STORE")"
step "$bin" init
step "$bin" log mnist "$work/data" --type dataset --description "first cut" --metadata '{"source": "bundled example"}'
echo "test/00001.pgm,7" >>"$work/data/test/labels.csv"
step "$bin" log mnist "$work/data" --type dataset --alias best
step "$bin" list
step "$bin" list mnist
step "$bin" show mnist:latest
step "$bin" diff mnist:v0 mnist:v1
step "$bin" get mnist:best "$work/out"
step ls -R "$work/out"
step "$bin" verify

step mkdir -p "$mnt"
step "$bin" mount "$mnt"
step ls -l "$mnt" "$mnt/mnist"
step ls -lR "$mnt/mnist/latest/"
step cat "$mnt/mnist/latest/test/labels.csv"
step sha256sum "$mnt/mnist/v0/test/labels.csv" "$mnt/mnist/v1/test/labels.csv"
step "$bin" umount "$mnt"
