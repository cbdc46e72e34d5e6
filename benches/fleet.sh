#!/usr/bin/env bash
# A fleet backing up into one bucket at once: HOSTS hosts (each its own state directory and
# --host) share SHARED_MIB of identical files and own UNIQUE_KIB each. Round one starts every
# backup at the same moment (duplicates of the shared data are expected: no coordinator),
# round two adds one new file per host (the shared data must not be stored again), then one
# `prune --grace 0s` keeps one copy of every blob. Prints the wall time of each round, the
# peak memory per host (median and max), the bytes stored against the ideal (shared once plus
# every unique file), and the requests per backup (drvault's own count, DRVAULT_REQUEST_STATS).
# One release build; SeaweedFS from PyPI (`scripts/test` installs it) on loopback.
#
#   benches/fleet.sh [--hosts 100] [--shared-mib 32] [--unique-kib 512] [--workdir DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
HOSTS=100
SHARED_MIB=32
UNIQUE_KIB=512
WORKDIR=${TMPDIR:-/tmp}/drvault-bench-fleet
while [ $# -gt 0 ]; do
  case $1 in
    --hosts) HOSTS=$2; shift 2 ;;
    --shared-mib) SHARED_MIB=$2; shift 2 ;;
    --unique-kib) UNIQUE_KIB=$2; shift 2 ;;
    --workdir) WORKDIR=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
cargo build --release -q -p drvault
BIN=$PWD/target/release/drvault
WEED=${DRVAULT_TEST_WEED:-$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/weed}
rm -rf "$WORKDIR"; mkdir -p "$WORKDIR/weed"
base=28100
ports=(s3.port master.port master.port.grpc volume.port volume.port.grpc filer.port filer.port.grpc
       s3.port.grpc s3.port.iceberg s3.port.lance admin.port admin.port.grpc webdav.port)
flags=(); i=0
for p in "${ports[@]}"; do flags+=("-$p=$((base + i))"); i=$((i + 1)); done
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret DRVAULT_PASSWORD=bench
(cd "$WORKDIR/weed" && exec "$WEED" mini -dir="$WORKDIR/weed/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
   -admin.ui=false -webdav=false -bucket=fleet "${flags[@]}" >"$WORKDIR/weed.log" 2>&1) &
WEED_PID=$!
trap 'kill $WEED_PID 2>/dev/null || true' EXIT
cat >"$WORKDIR/drvault.toml" <<TOML
[repository]
[[targets]]
name = "s3"
url = "s3://fleet/repo"
options = { aws_endpoint = "http://127.0.0.1:$base", aws_allow_http = "true", aws_region = "us-east-1" }
TOML
dv() { local host=$1; shift; "$BIN" --config "$WORKDIR/drvault.toml" --state-dir "$WORKDIR/state-$host" "$@"; }
for _ in $(seq 1 60); do dv admin init --kdf-memory-kib 64 >/dev/null 2>&1 && break; sleep 1; done
dv admin snapshots >/dev/null

# Sources: the shared files once, hard-linked into every host's tree, and one unique file each.
python3 - "$WORKDIR/shared" "$SHARED_MIB" <<'PY'
import os, sys
root, mib = sys.argv[1], int(sys.argv[2])
os.makedirs(root, exist_ok=True)
for i in range(max(1, mib // 4)):
    with open(os.path.join(root, "lib%03d" % i), "wb") as f:
        f.write(os.urandom(4 << 20))
PY
for h in $(seq 1 "$HOSTS"); do
  mkdir -p "$WORKDIR/src/h$h"; cp -rl "$WORKDIR/shared" "$WORKDIR/src/h$h/shared"
  head -c $((UNIQUE_KIB * 1024)) /dev/urandom >"$WORKDIR/src/h$h/own-1"
done

round() {
  local r=$1 start end
  start=$(date +%s.%N)
  for h in $(seq 1 "$HOSTS"); do
    DRVAULT_REQUEST_STATS=1 /usr/bin/time -f "%e %M" -o "$WORKDIR/time-$r-$h" \
      "$BIN" --config "$WORKDIR/drvault.toml" --state-dir "$WORKDIR/state-h$h" --json \
      backup --host "h$h" "$WORKDIR/src/h$h" >"$WORKDIR/out-$r-$h" 2>"$WORKDIR/err-$r-$h" &
  done
  local failed=0
  for job in $(jobs -p); do [ "$job" = "$WEED_PID" ] && continue; wait "$job" || failed=$((failed + 1)); done
  end=$(date +%s.%N)
  python3 - "$WORKDIR" "$r" "$HOSTS" "$start" "$end" "$failed" <<'PY'
import json, re, statistics, sys
w, r, n, start, end, failed = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
peaks, added, reqs = [], 0, []
for h in range(1, n + 1):
    peaks.append(int(open(f"{w}/time-{r}-{h}").read().split()[1]) / 1024)
    try:
        added += json.load(open(f"{w}/out-{r}-{h}"))["bytes_added"]
    except Exception:
        pass
    m = re.findall(r"requests: (\d+)", open(f"{w}/err-{r}-{h}").read())
    if m:
        reqs.append(int(m[-1]))
print(f"round {r}: {n} hosts, {failed} failed, wall {end - start:.1f} s, peak per host median "
      f"{statistics.median(peaks):.0f} MiB max {max(peaks):.0f} MiB, added {added / 2**20:.1f} MiB, "
      f"requests per backup {statistics.mean(reqs):.0f}" if reqs else "requests per backup n/a")
PY
}
round 1
for h in $(seq 1 "$HOSTS"); do head -c $((UNIQUE_KIB * 1024)) /dev/urandom >"$WORKDIR/src/h$h/own-2"; done
round 2
stored() { dv admin --json targets | python3 -c 'import json,sys; print(sum(t["bytes"] for t in json.load(sys.stdin)))'; }
before=$(stored)
/usr/bin/time -f "%e %M" -o "$WORKDIR/time-prune" "$BIN" --config "$WORKDIR/drvault.toml" \
  --state-dir "$WORKDIR/state-admin" --json prune --grace 0s >"$WORKDIR/prune.json"
after=$(stored)
ideal=$(( (SHARED_MIB / 4 * 4) * 1048576 + 2 * HOSTS * UNIQUE_KIB * 1024 ))
echo "prune: $(cat "$WORKDIR/time-prune") (s, KiB peak)"
python3 - "$before" "$after" "$ideal" <<'PY'
import sys
b, a, i = map(int, sys.argv[1:])
print(f"stored before prune {b / 2**20:.1f} MiB ({b / i:.2f}x ideal), after {a / 2**20:.1f} MiB "
      f"({a / i:.2f}x ideal), ideal {i / 2**20:.1f} MiB")
PY
dv admin check --read-data-subset 10 >/dev/null && echo "check --read-data-subset 10: clean"
