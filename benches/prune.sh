#!/usr/bin/env bash
# Prune time and peak memory against the number of blobs, on a local repository: one release
# build, one run per size. Each repository holds FILES small unique files (about 1 KiB each, so
# one data blob each) in directories of 1000; every other file is then deleted, backed up
# again, and the first snapshot forgotten, so half the blobs are unused and scattered over
# every pack: `prune --grace 0s` repacks every data pack, marks and deletes in one run.
# The same is done with FILES/4 files; the difference of the peaks over the difference of
# the blob counts is the memory per blob. The key slot uses a small Argon2 memory (1 MiB):
# the default 64 MiB would be the peak of every small run and hide the rest.
#
#   benches/prune.sh [--files N] [--workdir DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/common.sh
FILES=100000
ARGS=()
while [ $# -gt 0 ]; do
  case $1 in
    --files) FILES=$2; shift 2 ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
# No file corpus is needed: the smallest one.
bench_setup prune --size-mib 1 "${ARGS[@]}"
export DRVAULT_PASSWORD=bench
BIN=$PWD/target/release/drvault

# make_files DIR N: N files of 1 KiB of random bytes, 1000 per directory.
make_files() {
  python3 - "$1" "$2" <<'EOF'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, "d%04d" % (i // 1000))
    if i % 1000 == 0:
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%06d" % i), "wb") as f:
        f.write(os.urandom(1024))
EOF
}

# run_size N: prints "N prune_s prune_peak_kib bytes_before bytes_after again_s again_peak_kib
# dry_s dry_peak_kib mmap_s mmap_peak_kib".
run_size() {
  local n=$1 dir=$WORKDIR/n$1
  local R=(--repo "$dir/repo" --state-dir "$dir/state")
  mkdir -p "$dir"
  make_files "$dir/src" "$n"
  "$BIN" "${R[@]}" init --kdf-memory-kib 1024 >/dev/null 2>&1
  timed "backup-$n" "$BIN" "${R[@]}" backup "$dir/src" >&2
  find "$dir/src" -type f -name 'f*[13579]' -delete
  timed "backup2-$n" "$BIN" "${R[@]}" backup "$dir/src" >&2
  "$BIN" "${R[@]}" forget --keep-last 1 >/dev/null
  local before after
  before=$(du -sb "$dir/repo" | cut -f1)
  # The dry run reads the index and walks the snapshots, as the real run, without repacking.
  local D P M
  D=$(timed "dry-$n" "$BIN" "${R[@]}" --json prune --grace 0s --dry-run)
  # The same prune with glibc's mmap threshold fixed at 1 MiB (what agent/src/alloc.rs does for
  # backup, check and key commands), on a copy.
  cp -a "$dir/repo" "$dir/repo-m"; cp -a "$dir/state" "$dir/state-m"
  M=$(timed "prune-mmap-$n" env MALLOC_MMAP_THRESHOLD_=1048576 "$BIN" --repo "$dir/repo-m" \
    --state-dir "$dir/state-m" --json prune --grace 0s)
  rm -rf "$dir/repo-m" "$dir/state-m"
  P=$(timed "prune-$n" "$BIN" "${R[@]}" --json prune --grace 0s)
  after=$(du -sb "$dir/repo" | cut -f1)
  "$BIN" "${R[@]}" check --read-data >"$WORKDIR/check-$n.out" 2>&1 || {
    echo "check failed after prune:"; cat "$WORKDIR/check-$n.out"; exit 1; }
  # A second run finds nothing: the cost of a prune with nothing to do.
  local Q
  Q=$(timed "prune-again-$n" "$BIN" "${R[@]}" --json prune --grace 0s)
  echo "$P" | awk -v n="$n" -v b="$before" -v a="$after" -v q="$Q" -v d="$D" -v m="$M" \
    '{ split(q, x, " "); split(d, y, " "); split(m, z, " ");
       print n, $2, $3, b, a, x[2], x[3], y[2], y[3], z[2], z[3] }'
}

SMALL=$(run_size $((FILES / 4)))
LARGE=$(run_size "$FILES")
echo "prune report ($FILES files):"; cat "$WORKDIR/prune-$FILES.out"
awk -v s="$SMALL" -v l="$LARGE" 'BEGIN {
  split(s, a, " "); split(l, b, " ");
  printf "\n| files (data blobs) | dry run s / peak MiB | prune s / peak MiB | same, 1 MiB mmap threshold | repository MiB before -> after | prune again s / peak MiB |\n|---|---|---|---|---|---|\n";
  printf "| %d | %.1f / %.0f | %.1f / %.0f | %.1f / %.0f | %.0f -> %.0f | %.1f / %.0f |\n", a[1], a[8], a[9] / 1024, a[2], a[3] / 1024, a[10], a[11] / 1024, a[4] / 1048576, a[5] / 1048576, a[6], a[7] / 1024;
  printf "| %d | %.1f / %.0f | %.1f / %.0f | %.1f / %.0f | %.0f -> %.0f | %.1f / %.0f |\n", b[1], b[8], b[9] / 1024, b[2], b[3] / 1024, b[10], b[11] / 1024, b[4] / 1048576, b[5] / 1048576, b[6], b[7] / 1024;
  per = (b[3] - a[3]) * 1024 / (b[1] - a[1]);
  printf "\npeak RSS per blob (difference of the two runs): %.0f bytes = %.0f MiB per million blobs\n", per, per * 1e6 / 1048576;
  per = (b[11] - a[11]) * 1024 / (b[1] - a[1]);
  printf "with a 1 MiB mmap threshold: %.0f bytes = %.0f MiB per million blobs\n", per, per * 1e6 / 1048576;
  per = (b[9] - a[9]) * 1024 / (b[1] - a[1]);
  printf "dry run (index and walk): %.0f bytes = %.0f MiB per million blobs\n", per, per * 1e6 / 1048576;
}'
