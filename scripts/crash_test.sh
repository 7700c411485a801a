#!/usr/bin/env bash
# Crash trials (tests/crash.rs): SIGKILL the mount server or the CLI at random moments of a
# large copy into a draft, a commit (.commit and `draft commit`), gc, delete, log and
# draft add, then check that the store lost nothing and reclaims what the crash left over.
#
#   scripts/crash_test.sh N     # N trials (release build), as root, with /dev/fuse
#
# Scenarios rotate, so N >= 8 covers each at least once. The environment passes through:
# CRASH_SEED=S replays the contents and delays of an earlier run, CRASH_SCENARIOS=a,b runs
# only those, CRASH_KEEP=1 keeps the store of a failed trial. The full output is kept in a
# log file whose path is printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

n="${1:-}"
if ! [[ "$n" =~ ^[0-9]+$ ]] || ((n < 1)); then
    echo "usage: $0 N   (N = number of crash trials, at least 1)" >&2
    exit 2
fi

log="$(mktemp -t artifactfs-crash.XXXXXX)"
start=$(date +%s)
status=0
CRASH_TRIALS="$n" cargo test --release --test crash -- --nocapture --test-threads=1 2>&1 |
    tee "$log" || status=$?
elapsed=$(($(date +%s) - start))

echo
echo "=================== crash trials: $n requested, ${elapsed}s in all (build included) ==================="
if grep -q '^CRASH SUMMARY' "$log"; then
    # The summary block: its header line and the indented per-scenario lines after it.
    awk '/^CRASH SUMMARY/ {on = 1; print; next} on && /^  / {print; next} on {exit}' "$log"
else
    echo "no summary: the test did not run to its end (build failure or crash of the harness?)"
fi
failed=$(grep -c '^crash: FAILED' "$log" || true)
if ((failed > 0)); then
    echo
    echo "$failed trial(s) FAILED — something was lost, damaged or left over:"
    grep '^crash: FAILED' "$log" | cut -c1-400
else
    echo "nothing lost: every trial passed its checks"
fi
echo "full output: $log"
exit "$status"
