#!/usr/bin/env bash
# Installs what building and testing artifactfs needs on a fresh Debian machine.
# Safe to run again: it only installs what is missing.
set -euo pipefail

need=()
for pkg in build-essential pkg-config python3 rsync fuse3 sqlite3 git fio bindfs man-db bsdextrautils \
    graphviz postgresql xfsprogs; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if ((${#need[@]})); then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

# Regular users mount through fusermount3, which opens /dev/fuse as the user: Debian's udev
# rule makes it 0666, but some virtual machines and containers leave it root-only.
if [ -c /dev/fuse ] && [ "$(stat -c %a /dev/fuse)" != 666 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo chmod 0666 /dev/fuse
fi

# NumPy, from PyPI, for examples/train.py and its test. Debian's own Python refuses pip
# installs outside a virtual environment unless told otherwise.
if ! python3 -c 'import numpy' 2>/dev/null; then
    python3 -m pip --version >/dev/null 2>&1 || {
        DEBIAN_FRONTEND=noninteractive ${sudo:-} apt-get install -y -qq python3-pip >/dev/null
    }
    python3 -m pip install --quiet numpy 2>/dev/null ||
        python3 -m pip install --quiet --break-system-packages numpy
fi

if ! command -v cargo >/dev/null 2>&1; then
    [ -x "$HOME/.cargo/bin/cargo" ] || {
        DEBIAN_FRONTEND=noninteractive ${sudo:-} apt-get install -y -qq curl >/dev/null
        curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    }
    export PATH="$HOME/.cargo/bin:$PATH"
fi
cargo --version >/dev/null

# s3s-fs, the S3-compatible server the shared-store tests start on 127.0.0.1 (PostgreSQL, the
# other server they start, comes from Debian above). Pinned: 0.17 needs a newer Rust (1.96)
# than this machine has. The binary lands in ~/.cargo/bin, where the tests look for it.
s3s_fs="${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs"
if [ "$("$s3s_fs" --version 2>/dev/null)" != "s3s-fs 0.14.1" ]; then
    cargo install --quiet s3s-fs --version 0.14.1 --locked --features binary
fi
