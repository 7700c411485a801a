# shellcheck shell=bash
# Helpers shared by scripts/bench.sh and the suites it runs (bench_core.sh, bench_mount.sh,
# bench_drafts.sh, bench_shared.sh, bench_bigwrites.sh); sourced, not run.

# Prints the calling script's header comment (its usage) and exits with status $1 (default 0).
usage() { awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"; exit "${1:-0}"; }

# 1234567 -> 1,234,567
commas() { echo "$1" | sed -e ':a' -e 's/\([0-9]\)\([0-9]\{3\}\)\($\|,\)/\1,\2\3/' -e 'ta'; }

# Sets _T to the time now, in seconds with a fraction. $EPOCHREALTIME (bash 5) costs no fork,
# which matters for millisecond commits.
stamp() {
    if [[ -n ${EPOCHREALTIME:-} ]]; then _T=${EPOCHREALTIME/,/.}; else _T=$(date +%s.%N); fi
}

# build_release ROOT ATTEMPTS: builds ROOT's release binary, trying again every 30 s (others
# may be editing src/ right now); uses the caller's `say` and `die`.
build_release() {
    local log attempt
    log=$(mktemp)
    for ((attempt = 1; ; attempt++)); do
        if (cd "$1" && cargo build --release --quiet) 2>"$log"; then break; fi
        ((attempt < $2)) || { cat "$log" >&2; rm -f "$log"; die "cargo build failed $2 times"; }
        say "build failed (attempt $attempt); retrying in 30 s"
        sleep 30
    done
    rm -f "$log"
}
