#!/usr/bin/env bash
# The RTO of a restore drill over the benchmark corpus: a repository on two local targets, the
# primary counted as lost, restore + verify + a validation command. One release build, one run.
#
#   benches/drill.sh [--size-mib N] [--workdir DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/common.sh
bench_setup drill "$@"
export DRVAULT_PASSWORD=bench
BIN=$PWD/target/release
REL=${SRC#/}
cat >"$WORKDIR/drvault.toml" <<TOML
[[targets]]
name = "primary"
url = "file://$WORKDIR/primary"
[[targets]]
name = "secondary"
url = "file://$WORKDIR/secondary"
[[drills]]
name = "corpus"
paths = ["$SRC"]
exclude_targets = ["primary"]
rto_objective = "15m"
rpo_objective = "24h"
validate = ["diff -r -q {restore_dir}/$REL $SRC"]
validate_timeout = "10m"
TOML
export DRVAULT_CONFIG=$WORKDIR/drvault.toml
S=(--state-dir "$WORKDIR/state")
"$BIN/drvault" "${S[@]}" init --kdf-memory-kib 65536 >/dev/null
"$BIN/drvault" "${S[@]}" backup "$SRC" >/dev/null
sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true   # the DR site starts cold
"$BIN/drtest" "${S[@]}" --json run --plan corpus >"$WORKDIR/drill.json" || true
python3 - "$WORKDIR/drill.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
p = d["phases"]
print(f"drill {d['drill_id']}: passed={d['passed']} {d['reason']}")
print(f"{d['files']} files, {d['bytes']/1e6:.0f} MB restored from {d['targets_used']} (excluded {d['targets_excluded']})")
print(f"RTO {d['rto_seconds']:.1f} s (objective {d['rto_objective_seconds']:.0f} s); RPO {d['rpo_seconds']:.1f} s")
print(f"phases: open {p['open_seconds']:.2f} s, select {p['select_seconds']:.2f} s, restore+verify {p['restore_seconds']:.1f} s, validate {p['validate_seconds']:.1f} s; restore {d['throughput_mb_s']:.0f} MB/s")
PY
