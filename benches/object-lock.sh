#!/usr/bin/env bash
# Object lock benchmark: first-backup throughput to an S3 bucket without and with object lock
# (compliance, 30 days: every object carries the retention headers and a SHA-256 checksum), both
# on one moto server on loopback, then `targets` (one HEAD per object on the locked target). One
# release build, one run; quote the ratio, not the times (moto, a Python server, is the bottleneck).
#
#   benches/object-lock.sh [--size-mib N] [--workdir DIR]
#
# Needs moto_server and boto3 (pip install 'moto[server]'; scripts/test installs it) and GNU time.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/common.sh
bench_setup object-lock --size-mib 256 "$@"
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret DRVAULT_PASSWORD=bench
BIN=$PWD/target/release/drvault
PORT=33123
moto_server -H 127.0.0.1 -p $PORT >"$WORKDIR/moto.log" 2>&1 &
MOTO=$!
trap 'kill $MOTO 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do (echo >/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.2; done
python3 - "$PORT" <<'PY'
import sys, boto3
s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{sys.argv[1]}", region_name="us-east-1",
                  aws_access_key_id="bench", aws_secret_access_key="bench-secret")
s3.create_bucket(Bucket="plain")
s3.create_bucket(Bucket="locked", ObjectLockEnabledForBucket=True)
PY
config() { # file bucket extra-lines
  printf '[[targets]]\nname = "s3"\nurl = "s3://%s/repo"\n%boptions = { aws_endpoint = "http://127.0.0.1:%s", aws_allow_http = "true", aws_region = "us-east-1" }\n' \
    "$2" "$3" "$PORT" >"$1"
}
config "$WORKDIR/plain.toml" plain ""
config "$WORKDIR/locked.toml" locked 'object_lock_mode = "compliance"\nobject_lock_retention = "30d"\n'
FILES=$(find "$SRC" -type f | wc -l)
echo "corpus: $FILES files, $((BYTES / 1048576)) MiB"
for label in plain locked; do
  "$BIN" --config "$WORKDIR/$label.toml" --state-dir "$WORKDIR/state-$label" init --kdf-memory-kib 65536 >/dev/null 2>&1
  find "$SRC" -type f -exec cat {} + >/dev/null
  timed "backup-$label" "$BIN" --config "$WORKDIR/$label.toml" --state-dir "$WORKDIR/state-$label" backup "$SRC"
done | tee "$WORKDIR/results"
timed "targets-locked" "$BIN" --config "$WORKDIR/locked.toml" --state-dir "$WORKDIR/state-locked" targets | tee -a "$WORKDIR/results"
awk '/^backup-plain/ {p=$2} /^backup-locked/ {l=$2} END {printf "locked/plain first backup wall time: %.2fx\n", l/p}' "$WORKDIR/results"
