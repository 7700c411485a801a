#!/usr/bin/env bash
# Builds the release binary and installs it for the whole machine: the command, the helper
# that `mount -t fuse.artifactfs` and /etc/fstab use, bash completion and man pages.
# PREFIX (default /usr/local) chooses where the command and man pages go.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
prefix=${PREFIX:-/usr/local}
sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo

cargo build --release --quiet
# -s strips the installed copy: the release profile keeps line tables (debug = 1) for
# benchmarks and profiling in target/, which the installed command does not need.
$sudo install -D -s -m 0755 target/release/artifactfs "$prefix/bin/artifactfs"
# mount(8) looks for the helper of type fuse.artifactfs as /sbin/mount.fuse.artifactfs.
$sudo ln -sfn "$prefix/bin/artifactfs" /sbin/mount.fuse.artifactfs
completions=/usr/share/bash-completion/completions
$sudo mkdir -p "$completions"
"$prefix/bin/artifactfs" completions bash | $sudo tee "$completions/artifactfs" >/dev/null
$sudo "$prefix/bin/artifactfs" man "$prefix/share/man/man1"
echo "installed $prefix/bin/artifactfs, /sbin/mount.fuse.artifactfs, bash completion and man pages"
