#!/usr/bin/env bash
# Host key benchmark: backup throughput on a local repository with the full keys and with a host's
# put-only key (everything it writes sealed to the epoch's X25519 public key; no parent snapshot
# readable, so every file is read and chunked again), each a first backup into an empty repository
# and then an unchanged re-backup. One release build, one run; quote the ratios, not the times.
#
#   benches/host-keys.sh [--size-mib N] [--workdir DIR] [--sources "DIRS"]
#
# Needs GNU time.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/common.sh
bench_setup host-keys --size-mib 1024 "$@"
BIN=$PWD/target/release/drvault
printf 'host key of bench\n' >"$WORKDIR/host.key"
chmod 600 "$WORKDIR/host.key"
FILES=$(find "$SRC" -type f | wc -l)
echo "corpus: $FILES files, $((BYTES / 1048576)) MiB"
for label in full host; do
  export DRVAULT_PASSWORD=bench
  repo=$WORKDIR/repo-$label
  "$BIN" --repo "$repo" --state-dir "$WORKDIR/state-init-$label" init --kdf-memory-kib 65536 >/dev/null 2>&1
  if [ $label = host ]; then
    "$BIN" --repo "$repo" --state-dir "$WORKDIR/state-init-$label" key add --kind host --host bench \
      --new-password-file "$WORKDIR/host.key" >/dev/null 2>&1
    export DRVAULT_PASSWORD="host key of bench"
  fi
  find "$SRC" -type f -exec cat {} + >/dev/null
  timed "first-$label" "$BIN" --repo "$repo" --state-dir "$WORKDIR/state-$label" backup "$SRC"
  timed "again-$label" "$BIN" --repo "$repo" --state-dir "$WORKDIR/state-$label" backup "$SRC"
done | tee "$WORKDIR/results"
awk '/^first-full/ {f=$2} /^first-host/ {h=$2} /^again-full/ {af=$2} /^again-host/ {ah=$2}
     END {printf "host/full first backup wall time: %.2fx\nhost/full unchanged re-backup wall time: %.2fx\n", h/f, ah/af}' \
  "$WORKDIR/results"
