#!/usr/bin/env bash
# Randomized soak of the concurrency protocols (not in CI): each iteration runs two backups
# from two hosts, a prune, and a forget or a key rotation with re-encryption, all at once,
# against one repository on two targets (a local directory and a SeaweedFS bucket, write
# quorum 1). At random moments one of them is killed with SIGKILL and the S3 server is stopped
# (SIGSTOP) and resumed. After each iteration the targets are synced, `check --all-targets
# --read-data` must be clean, and every snapshot a backup reported as committed (and no forget
# removed) must restore byte for byte. Prints one line per iteration and a summary; exits 1 on
# the first violation, leaving the work directory for inspection.
#
#   benches/soak.sh [--iterations 20] [--seed N] [--workdir DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
ITER=20
SEED=$RANDOM
WORKDIR=${TMPDIR:-/tmp}/drvault-soak
while [ $# -gt 0 ]; do
  case $1 in
    --iterations) ITER=$2; shift 2 ;;
    --seed) SEED=$2; shift 2 ;;
    --workdir) WORKDIR=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
RANDOM=$SEED
echo "soak: $ITER iterations, seed $SEED"
cargo build --release -q -p drvault
BIN=$PWD/target/release/drvault
WEED=${DRVAULT_TEST_WEED:-$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/weed}
rm -rf "$WORKDIR"; mkdir -p "$WORKDIR/weed" "$WORKDIR/src" "$WORKDIR/logs"
base=28300
ports=(s3.port master.port master.port.grpc volume.port volume.port.grpc filer.port filer.port.grpc
       s3.port.grpc s3.port.iceberg s3.port.lance admin.port admin.port.grpc webdav.port)
flags=(); i=0
for p in "${ports[@]}"; do flags+=("-$p=$((base + i))"); i=$((i + 1)); done
export AWS_ACCESS_KEY_ID=soak AWS_SECRET_ACCESS_KEY=soak-secret DRVAULT_PASSWORD=soak
"$WEED" mini -dir="$WORKDIR/weed" -ip=127.0.0.1 -ip.bind=127.0.0.1 -admin.ui=false -webdav=false \
  -bucket=soak "${flags[@]}" >"$WORKDIR/weed.log" 2>&1 &
WEED_PID=$!
trap 'kill -CONT $WEED_PID 2>/dev/null; kill $WEED_PID 2>/dev/null || true' EXIT
cat >"$WORKDIR/drvault.toml" <<TOML
[repository]
write_quorum = 1
[[targets]]
name = "local"
url = "file://$WORKDIR/local"
[[targets]]
name = "s3"
url = "s3://soak/repo"
options = { aws_endpoint = "http://127.0.0.1:$base", aws_allow_http = "true", aws_region = "us-east-1" }
TOML
dv() { local host=$1; shift; "$BIN" --config "$WORKDIR/drvault.toml" --state-dir "$WORKDIR/state-$host" "$@"; }
# The bucket exists a few seconds after the server answers: wait until both targets hold the
# repository before the first iteration.
for _ in $(seq 1 60); do dv admin targets >/dev/null 2>&1 && break; sleep 1; done
dv admin init --kdf-memory-kib 64 >/dev/null
dv admin targets >/dev/null

# A source tree per host and iteration: the previous one hard-linked, some files replaced.
make_source() {
  local dir=$1 prev=$2 seed=$3
  if [ -d "$prev" ]; then cp -rl "$prev" "$dir"; else mkdir -p "$dir"; fi
  python3 - "$dir" "$seed" <<'PY'
import os, random, sys
d, seed = sys.argv[1], int(sys.argv[2])
r = random.Random(seed)
for _ in range(r.randint(3, 12)):
    p = os.path.join(d, "f%03d" % r.randint(0, 40))
    if os.path.exists(p):
        os.unlink(p)  # a hard link to the previous tree: replace, do not rewrite
    with open(p, "wb") as f:
        f.write(r.randbytes(r.randint(1, 3 << 20)))
PY
}

committed=()   # "snapshot-id source-dir"
kills=0
for it in $(seq 1 "$ITER"); do
  pids=(); names=()
  for h in A B; do
    # Each host backs up the same path every time (so forget's groups have many snapshots);
    # src/<host>-<iteration> keeps what it held, for the comparison.
    src=$WORKDIR/src/$h
    rm -rf "$src"
    make_source "$src" "$WORKDIR/src/$h-$((it - 1))" $((SEED * 1000 + it * 2 + ${#h}))
    cp -rl "$src" "$WORKDIR/src/$h-$it"
    dv "$h" --json backup --host "$h" --tag "soak-$it" "$src" >"$WORKDIR/logs/$it-backup-$h.json" 2>"$WORKDIR/logs/$it-backup-$h.err" &
    pids+=($!); names+=("backup-$h")
  done
  dv M prune --grace 0s >"$WORKDIR/logs/$it-prune.out" 2>&1 &
  pids+=($!); names+=(prune)
  if [ $((RANDOM % 2)) = 0 ]; then
    dv N forget --keep-last 3 >"$WORKDIR/logs/$it-forget.out" 2>&1 &
    pids+=($!); names+=(forget)
  else
    { dv N key rotate && dv N key reencrypt; } >"$WORKDIR/logs/$it-rotate.out" 2>&1 &
    pids+=($!); names+=(rotate)
  fi
  # Chaos: the S3 server stops for a moment, and one process may be killed outright.
  sleep "0.$((RANDOM % 10))"
  if [ $((RANDOM % 2)) = 0 ]; then kill -STOP $WEED_PID; sleep "0.$((RANDOM % 10))"; kill -CONT $WEED_PID; fi
  victim=""
  if [ $((RANDOM % 3)) != 0 ]; then
    sleep "0.$((RANDOM % 10))"
    k=$((RANDOM % ${#pids[@]}))
    if kill -9 "${pids[$k]}" 2>/dev/null; then victim=${names[$k]}; kills=$((kills + 1)); fi
    # A rotate is a subshell: kill what it runs too.
    pkill -9 -P "${pids[$k]}" 2>/dev/null || true
  fi
  results=()
  for k in "${!pids[@]}"; do
    if wait "${pids[$k]}"; then results+=("${names[$k]}:ok"); else results+=("${names[$k]}:$?"); fi
  done
  for h in A B; do
    f=$WORKDIR/logs/$it-backup-$h.json
    id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$f" 2>/dev/null || true)
    [ -n "$id" ] && committed+=("$h soak-$it")
  done
  # Heal, then verify: the check must be clean and every committed snapshot that is still
  # listed must restore byte for byte (a forget may have removed some; re-encryption renames
  # snapshots, so they are found by host and paths).
  dv admin sync >/dev/null 2>&1 || dv admin sync >"$WORKDIR/logs/$it-sync.out" 2>&1
  if ! dv admin check --all-targets --read-data >"$WORKDIR/logs/$it-check.out" 2>&1; then
    echo "iteration $it: CHECK FAILED (${results[*]}; killed: ${victim:-none})"; cat "$WORKDIR/logs/$it-check.out"; exit 1
  fi
  dv admin --json snapshots >"$WORKDIR/logs/$it-snapshots.json"
  restored=0
  for entry in "${committed[@]}"; do
    host=${entry% *}; tag=${entry#* }
    id=$(python3 - "$WORKDIR/logs/$it-snapshots.json" "$host" "$tag" <<'PY'
import json, sys
for s in json.load(open(sys.argv[1])):
    if s["host"] == sys.argv[2] and sys.argv[3] in s["tags"]:
        print(s["id"]); break
PY
)
    [ -z "$id" ] && continue  # forgotten by the retention policy
    src=$WORKDIR/src/$host-${tag#soak-}
    rm -rf "$WORKDIR/restore"
    if ! dv admin restore "$id" --verify --target "$WORKDIR/restore" >/dev/null 2>"$WORKDIR/logs/$it-restore.err" ||
       ! diff -r "$src" "$WORKDIR/restore$WORKDIR/src/$host" >/dev/null; then
      echo "iteration $it: RESTORE OF $id ($src) FAILED"; cat "$WORKDIR/logs/$it-restore.err"; exit 1
    fi
    restored=$((restored + 1))
  done
  echo "iteration $it: ${results[*]}; killed: ${victim:-none}; check clean; $restored committed snapshots restored"
done
echo "soak: $ITER iterations, $kills processes killed, ${#committed[@]} snapshots committed, no violation (seed $SEED)"
