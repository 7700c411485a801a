#!/usr/bin/env bash
# Runs the test suite (as root: the tests mount real FUSE filesystems). Finds a cargo that
# scripts/setup.sh installed through rustup even when this shell's PATH does not have it yet.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
exec cargo test "$@"
