#!/usr/bin/env bash
# Installs what building and testing artifactfs needs on a fresh Debian machine.
# Safe to run again: it only installs what is missing.
set -euo pipefail

need=()
for pkg in build-essential pkg-config python3 rsync fuse3 sqlite3 git fio bindfs man-db bsdextrautils graphviz; do
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
