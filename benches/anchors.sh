#!/usr/bin/env bash
# drvault against restic, borg and rustic on the same corpus, in one run of the shared anchor
# benchmark (../shared/bench/anchors.sh; its README says how to install the other tools).
# Arguments are passed on, e.g. `bash benches/anchors.sh --tools restic,borg-zstd3,project
# --skip-ceilings`. One release build, then one run; quote ratios from one run only.
set -euo pipefail
cd "$(dirname "$0")/.."
ANCHORS=${ANCHORS:-../shared/bench/anchors.sh}
[ -f "$ANCHORS" ] || { echo "no $ANCHORS: set ANCHORS=path/to/anchors.sh" >&2; exit 2; }
cargo build --release -q -p drvault --bins
D=$PWD/target/release/drvault
run="DRVAULT_PASSWORD=\$BENCH_PASSWORD $D --repo \"\$REPO\" --state-dir \"\$REPO.state\""
export PROJECT_NAME=drvault PROJECT_VERSION="$($D --version)"
export PROJECT_INIT="$run init"
export PROJECT_BACKUP="$run backup \"\$SRC\""
export PROJECT_RESTORE="$run restore latest --target \"\$DST\""
export PROJECT_CHECK="$run check --read-data"
exec bash "$ANCHORS" "$@"
