#!/usr/bin/env bash
# Runs artifactfs end to end on the bundled example dataset: log a version, change a file,
# log again, then list, show, diff and get. Everything happens in a temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

cargo build --release --quiet
bin=$PWD/target/release/artifactfs
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
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
