#!/usr/bin/env bash
# Runs artifactfs end to end on the bundled example dataset: log a version, change a file,
# log again, list, show, diff and get, then mount the store and read a version through the
# mount. Everything happens in a temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

cargo build --release --quiet
bin=$PWD/target/release/artifactfs
work=$(mktemp -d)
mnt=$work/mnt
trap '"$bin" umount "$mnt" 2>/dev/null || true; rm -rf "$work"' EXIT
export ARTIFACTFS_STORE=$work/store
cp -r examples/mnist-mini "$work/data"

step() { printf '\n$ %s\n' "$*"; "$@"; }

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

mkdir -p "$mnt"
step "$bin" mount "$mnt"
step ls -l "$mnt" "$mnt/mnist"
step ls -lR "$mnt/mnist/latest/"
step cat "$mnt/mnist/latest/test/labels.csv"
step sha256sum "$mnt/mnist/v0/test/labels.csv" "$mnt/mnist/v1/test/labels.csv"
step "$bin" umount "$mnt"
