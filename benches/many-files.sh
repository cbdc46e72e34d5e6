#!/usr/bin/env bash
# drvault against restic (and borg, rustic when installed) on many small files: the shared
# metadata-heavy benchmark (../shared/bench/many-files.sh: 1,000,000 files of ~100 bytes in
# 100,000 directories by default), first and unchanged backups with peak memory, one run.
# Arguments are passed on, e.g. `bash benches/many-files.sh --files 200000 --tools restic,drvault`.
# What it guards: the walk's queue of directories waiting for their readers (backup/src/walk/
# defer.rs) and the per-file cost of the readers and seal workers.
set -euo pipefail
cd "$(dirname "$0")/.."
MANY=${MANY:-../shared/bench/many-files.sh}
[ -f "$MANY" ] || { echo "no $MANY: set MANY=path/to/many-files.sh" >&2; exit 2; }
cargo build --release -q -p drvault --bins
export DRVAULT=$PWD/target/release/drvault
exec bash "$MANY" "$@"
