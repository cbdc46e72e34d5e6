#!/usr/bin/env bash
# `drvault find` over many snapshots of a tree of many small files (issue "Application-consistent
# backups ... and the restore tools": 100 snapshots of a 1,000,000-file tree in seconds). Each later
# snapshot changes one file, so the snapshots' trees differ along one path and share the rest, which
# `find` walks once.
#   bash benches/find-many.sh [--files 1000000] [--snapshots 100] [--workdir DIR]
# The tree is the one ../shared/bench/many-files.sh makes (same names, same layout) and is reused.
set -euo pipefail
cd "$(dirname "$0")/.."
N=1000000; SNAPSHOTS=100; W=${TMPDIR:-/tmp}/drvault-many
while [ $# -gt 0 ]; do case "$1" in
  --files) N=$2; shift;; --snapshots) SNAPSHOTS=$2; shift;; --workdir) W=$2; shift;;
  *) echo "unknown option $1" >&2; exit 2;; esac; shift; done
cargo build --release -q -p drvault --bins
D=$PWD/target/release/drvault
mkdir -p "$W"; SRC=$W/src
if [ "$(cat "$W/src.state" 2>/dev/null)" != "$N" ]; then
  rm -rf "$SRC"; echo "creating $N files" >&2
  python3 - "$SRC" "$N" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, "d%03d" % (i % 1000), "e%02d" % ((i // 1000) % 100))
    if i < 100000: os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%07d" % i), "wb") as f:
        f.write(("file %d " % i).encode() * 10)
PY
  echo "$N" > "$W/src.state"
fi
export DRVAULT_PASSWORD=bench DRVAULT_REPO=$W/find-repo DRVAULT_STATE_DIR=$W/find-state
rm -rf "$DRVAULT_REPO" "$DRVAULT_STATE_DIR"
"$D" init >/dev/null 2>&1
timed() {  # label command...
  local label=$1; shift
  /usr/bin/time -o "$W/time.out" -f '%e %M' "$@" > "$W/$label.out"
  echo "$label $(cat "$W/time.out") (wall seconds, peak RSS KiB)"
}
start=$(date +%s)
for i in $(seq 1 "$SNAPSHOTS"); do
  [ "$i" -gt 1 ] && echo "$i" >> "$SRC/d$(printf %03d $(( i % 1000 )))/e00/f$(printf %07d $(( i % 1000 )))"
  "$D" -q backup "$SRC" >/dev/null
done
echo "$SNAPSHOTS backups in $(( $(date +%s) - start )) s"
timed find-one-name "$D" find f0000500
echo "  matches: $(grep -c f0000500 "$W/find-one-name.out")"
timed find-one-name-newest-10 "$D" find --newest 10 f0000500
timed find-glob "$D" find 'f00001*'
echo "  matches: $(grep -c '' "$W/find-glob.out")"
