#!/usr/bin/env bash
# Opening a repository whose index is spread over many small index objects (a fleet's years of
# backups): OBJECTS objects of BLOBS/OBJECTS entries, written by benches/src/bin/index_spread.rs.
# Measures the time and peak memory of opening (`drvault snapshots`) with an empty state
# directory (every object fetched) and with a warm catalog, then one `prune --grace 0s`, which
# merges the small objects (docs/FORMAT.md section 10), then the same openings again: a fresh
# host, and the host whose catalog predates the merge (it keeps its cache, fetching only the
# new objects). One release build.
#
#   benches/index.sh [--objects 10000] [--blobs 10000000] [--workdir DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/common.sh
OBJECTS=10000
BLOBS=10000000
ARGS=()
while [ $# -gt 0 ]; do
  case $1 in
    --objects) OBJECTS=$2; shift 2 ;;
    --blobs) BLOBS=$2; shift 2 ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
bench_setup index --size-mib 1 "${ARGS[@]}"
cargo build --release -q -p drvault-benches --bin index_spread
export DRVAULT_PASSWORD=bench
BIN=$PWD/target/release/drvault
REPO=$WORKDIR/repo
"$BIN" --repo "$REPO" --state-dir "$WORKDIR/state-init" init --kdf-memory-kib 1024 >/dev/null
timed spread target/release/index_spread "$REPO" "$OBJECTS" $((BLOBS / OBJECTS))
echo "index objects: $(find "$REPO/index" -type f | wc -l), $(du -sm "$REPO/index" | cut -f1) MiB"
timed open-fresh-host "$BIN" --repo "$REPO" --state-dir "$WORKDIR/state-a" snapshots
timed open-warm-catalog "$BIN" --repo "$REPO" --state-dir "$WORKDIR/state-a" snapshots
timed prune "$BIN" --repo "$REPO" --state-dir "$WORKDIR/state-a" --json prune --grace 0s
echo "index objects after prune: $(find "$REPO/index" -type f | wc -l)"
timed open-fresh-host-after "$BIN" --repo "$REPO" --state-dir "$WORKDIR/state-b" snapshots
timed open-old-catalog-after "$BIN" --repo "$REPO" --state-dir "$WORKDIR/state-a" snapshots
timed open-warm-catalog-after "$BIN" --repo "$REPO" --state-dir "$WORKDIR/state-b" snapshots
