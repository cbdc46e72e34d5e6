# Shared by the benchmark scripts (sourced, not run): their options, the release build, the
# corpus of real files and a timer. `bench_setup NAME "$@"` sets SIZE_MIB, WORKDIR (emptied),
# SRC (about SIZE_MIB of files from SOURCES, default /usr/lib and /usr/share; --sources "DIRS") and
# BYTES (its size).

bench_setup() {
  local name=$1; shift
  SIZE_MIB=1024
  SOURCES="/usr/lib /usr/share"
  WORKDIR=${TMPDIR:-/tmp}/drvault-bench-$name
  while [ $# -gt 0 ]; do
    case $1 in
      --size-mib) SIZE_MIB=$2; shift 2 ;;
      --workdir) WORKDIR=$2; shift 2 ;;
      --sources) SOURCES=$2; shift 2 ;;
      *) echo "unknown option $1" >&2; exit 2 ;;
    esac
  done
  cargo build --release -q -p drvault
  rm -rf "$WORKDIR"; mkdir -p "$WORKDIR"
  SRC=$WORKDIR/corpus; mkdir -p "$SRC"
  # awk stops reading at the budget, so the pipeline's status is not the copy's.
  # In the order SOURCES gives, each sorted by path.
  { for d in $SOURCES; do find "$d" -xdev -type f -size +0 -printf '%s %p\n' 2>/dev/null | sort -k2; done |
    awk -v budget=$((SIZE_MIB * 1048576)) '{ if (sum + $1 > budget) exit; sum += $1; print $2 }' |
    tar -C / --no-recursion --hard-dereference -T - -cf - 2>/dev/null | tar -C "$SRC" -xf -; } || true
  BYTES=$(du -sb "$SRC" | cut -f1)
}

# timed LABEL CMD...: runs CMD with GNU time; prints "LABEL wall_seconds peak_rss_kib".
timed() {
  local label=$1; shift
  /usr/bin/time -f "%e %M" -o "$WORKDIR/time" "$@" >"$WORKDIR/$label.out" 2>"$WORKDIR/$label.err" || {
    echo "$label failed:"; tail -5 "$WORKDIR/$label.err"; exit 1; }
  echo "$label $(cat "$WORKDIR/time")"
}
