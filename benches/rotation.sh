#!/usr/bin/env bash
# Re-encryption throughput against a full backup's, on a local repository: one release build,
# one run. `key reencrypt` rewrites every pack, index and snapshot under the new epoch.
#
#   benches/rotation.sh [--size-mib N] [--workdir DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/common.sh
bench_setup rotation "$@"
export DRVAULT_PASSWORD=bench
BIN=$PWD/target/release/drvault
R=(--repo "$WORKDIR/repo" --state-dir "$WORKDIR/state")
"$BIN" "${R[@]}" init --kdf-memory-kib 65536 >/dev/null
find "$SRC" -type f -exec cat {} + >/dev/null

B=$(timed backup "$BIN" "${R[@]}" backup "$SRC")
REPO_BYTES=$(du -sb "$WORKDIR/repo" | cut -f1)
"$BIN" "${R[@]}" key rotate >/dev/null
sync; find "$WORKDIR/repo" -type f -exec cat {} + >/dev/null
E=$(timed reencrypt "$BIN" "${R[@]}" --json key reencrypt)
"$BIN" "${R[@]}" check --read-data >/dev/null
echo "$B"; echo "$E"; cat "$WORKDIR/reencrypt.out"
awk -v cb="$BYTES" -v rb="$REPO_BYTES" -v b="$B" -v e="$E" 'BEGIN {
  split(b, x, " "); split(e, y, " ");
  printf "\n| step | wall s | MB/s of source data | MB/s of repository | peak RSS MiB |\n|---|---|---|---|---|\n";
  printf "| full backup | %.1f | %.0f | %.0f | %.0f |\n", x[2], cb / x[2] / 1e6, rb / x[2] / 1e6, x[3] / 1024;
  printf "| key reencrypt | %.1f | %.0f | %.0f | %.0f |\n", y[2], cb / y[2] / 1e6, rb / y[2] / 1e6, y[3] / 1024;
  printf "\nre-encryption / full backup: time %.2fx\n", y[2] / x[2];
}'
