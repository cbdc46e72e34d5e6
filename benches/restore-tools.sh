#!/usr/bin/env bash
# The restore tools against a plain restore, on one corpus in one run (issue "Application-consistent
# backups and restore tools"): a fresh full restore; `dump --archive tar` of the whole tree; `cp -a`
# of the tree out of `drvault mount`; a restore killed half way and resumed with `--overwrite
# if-changed`, and a rerun over a complete target; `find` over N snapshots of the tree.
#   bash benches/restore-tools.sh [--size-mib 1024] [--sources "DIRS"] [--snapshots 100] [--workdir DIR]
# Prints "label wall_seconds peak_rss_kib" per step. Needs root or fuse3 for the mount step.
set -euo pipefail
cd "$(dirname "$0")/.."
SNAPSHOTS=100
args=()
while [ $# -gt 0 ]; do
  case $1 in
    --snapshots) SNAPSHOTS=$2; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
# shellcheck source=benches/common.sh
source benches/common.sh
bench_setup restore-tools "${args[@]}"
D=$PWD/target/release/drvault
# Restores, tar files and copies go to memory (tmpfs): this VM's disk throttles writes after the
# first GiB or so, which would time the disk, not the tools.
OUT=${OUT:-/dev/shm/drvault-restore-tools}; rm -rf "$OUT"; mkdir -p "$OUT"
export DRVAULT_PASSWORD=bench-password DRVAULT_REPO=$WORKDIR/repo DRVAULT_STATE_DIR=$WORKDIR/state
files=$(find "$SRC" -type f | wc -l)
echo "corpus: $BYTES bytes, $files files; $SNAPSHOTS snapshots for find"
"$D" init >/dev/null 2>&1
timed backup "$D" backup "$SRC"
sync

timed restore "$D" restore latest --target "$OUT/restored"
fresh=$(cut -d' ' -f1 "$WORKDIR/time")
rm -rf "$OUT/restored"; sync
timed dump-tar sh -c "'$D' dump latest '$SRC' > '$OUT/corpus.tar'"
rm -f "$OUT/corpus.tar"; sync

mkdir -p "$WORKDIR/mnt"
"$D" mount "$WORKDIR/mnt" 2>"$WORKDIR/mount.log" &
mount_pid=$!
for _ in $(seq 100); do [ -d "$WORKDIR/mnt/snapshots" ] && break; sleep 0.1; done
snap=$(ls "$WORKDIR/mnt/snapshots" | head -1)
timed mount-cp-a cp -a "$WORKDIR/mnt/snapshots/$snap$SRC" "$OUT/copied"
echo "mount peak RSS KiB: $(awk '/VmHWM/{print $2}' /proc/$mount_pid/status)"
kill -TERM "$mount_pid"; wait "$mount_pid" || true
diff -r "$SRC" "$OUT/copied" >/dev/null && echo "mount-cp-a: identical to the source"
rm -rf "$OUT/copied"; sync

# A restore killed half way through (by the fresh restore's time), then resumed.
"$D" restore latest --target "$OUT/resumed" >/dev/null 2>&1 &
pid=$!
sleep "$(awk -v t="$fresh" 'BEGIN{print t / 2}')"
kill -KILL "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
present=$(find "$OUT/resumed" -type f 2>/dev/null | wc -l)
echo "killed restore left $present files (complete ones and temporaries) for $files"
timed resume-if-changed "$D" restore latest --target "$OUT/resumed" --overwrite if-changed
timed rerun-complete-if-changed "$D" restore latest --target "$OUT/resumed" --overwrite if-changed
rm -rf "$OUT/resumed"

# Each later snapshot changes one file somewhere, so trees differ along one path and share the rest.
mapfile -t some < <(find "$SRC" -type f | sort | awk 'NR % 97 == 1')
for i in $(seq 2 "$SNAPSHOTS"); do
  echo "$i" >> "${some[$(( i % ${#some[@]} ))]}"
  "$D" -q backup "$SRC" >/dev/null
done
timed find-all-snapshots "$D" find '*.so'
echo "find matches: $(grep -c '' "$WORKDIR/find-all-snapshots.out")"
rm -rf "$OUT"
