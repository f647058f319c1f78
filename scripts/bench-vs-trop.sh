#!/usr/bin/env bash
# Whole-process `reserve` against trop's, with interleaved `perf stat -r N`
# runs so that machine noise hits both commands alike; prints ratios.
# Builds nothing: give it the binaries.
#
# Usage: scripts/bench-vs-trop.sh [TROP_BIN] [PORTHOLD_BIN] [ROUNDS]
#   TROP_BIN      a trop binary (e.g. from `cargo install trop-cli --version 0.2.0
#                 --locked --root /tmp/trop`); without one, the trop comparisons are
#                 skipped with a message and only porthold's own ratios are reported
#   PORTHOLD_BIN  default target/release/porthold (cargo build --release -p porthold-cli)
#   ROUNDS        interleaved rounds (default 10; each idempotent round is REPS=20 runs)
#
# Measured (medians over rounds of perf stat's mean elapsed time):
#   1. idempotent reserve (existing key, occupancy check on), and `porthold --version`
#   2. new-key reserve on a registry of 2,000 rows, and on an (almost) empty one
# Keys are the working directory (both tools infer the key from it).
set -euo pipefail
trop=${1:-}
porthold=${2:-$(cd "$(dirname "$0")/.." && pwd)/target/release/porthold}
rounds=${3:-10}
reps=${REPS:-20}
rows=${ROWS:-2000}
if ! command -v perf >/dev/null; then
  echo "bench-vs-trop: skipped: perf is not installed" >&2
  exit 0
fi
if [ ! -x "$porthold" ]; then
  echo "bench-vs-trop: $porthold is missing; build it: cargo build --release -p porthold-cli" >&2
  exit 2
fi
if [ -z "$trop" ] || [ ! -x "$trop" ]; then
  echo "bench-vs-trop: no trop binary given${trop:+ ($trop is not executable)}: skipping the trop comparisons" >&2
  trop=
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export PORTHOLD_DATA_DIR=$work/porthold-data TROP_DATA_DIR=$work/trop-data
# The same pool for both: porthold's default, below the ephemeral range.
export PORTHOLD_POOL=10000-29999 TROP_PORT_MIN=10000 TROP_PORT_MAX=29999

# Mean elapsed seconds of `perf stat -r N CMD...`, run in the current directory.
elapsed() {
  local n=$1
  shift
  perf stat -r "$n" -- "$@" 2>&1 >/dev/null | awk '/seconds time elapsed/ { print $1 }'
}
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ms() { awk '{ printf "%.3f", $1 * 1000 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

echo "# porthold $("$porthold" --version) vs ${trop:-no trop}; $rounds rounds"
echo

# 1. Idempotent reserve.
mkdir -p "$work/existing"
cd "$work/existing"
"$porthold" reserve >/dev/null
[ -n "$trop" ] && "$trop" reserve >/dev/null
: >"$work/p1" ; : >"$work/v1" ; : >"$work/t1"
for _ in $(seq "$rounds"); do
  [ -n "$trop" ] && elapsed "$reps" "$trop" reserve >>"$work/t1"
  elapsed "$reps" "$porthold" reserve >>"$work/p1"
  elapsed "$reps" "$porthold" --version >>"$work/v1"
done
p1=$(median <"$work/p1"); v1=$(median <"$work/v1")
echo "## idempotent reserve (existing key, occupancy check on), $rounds x perf stat -r $reps"
echo "| command | median elapsed |"
echo "|---|---:|"
echo "| porthold --version | $(echo "$v1" | ms) ms |"
echo "| porthold reserve | $(echo "$p1" | ms) ms |"
if [ -n "$trop" ]; then
  t1=$(median <"$work/t1")
  echo "| trop reserve | $(echo "$t1" | ms) ms |"
  echo
  echo "porthold / trop: $(ratio "$p1" "$t1") (goal <= 0.5)"
fi
echo "porthold reserve / porthold --version: $(ratio "$p1" "$v1") (goal <= 1.6)"
echo

# 2. New keys: a registry of $rows rows, and an almost empty one (it holds
# only the keys of this measurement, at most $rounds x 5).
for i in $(seq "$rows"); do
  mkdir -p "$work/fill/$i"
  (cd "$work/fill/$i" && "$porthold" reserve --skip-occupancy-check >/dev/null &&
    { [ -z "$trop" ] || "$trop" reserve >/dev/null; })
done
: >"$work/p2" ; : >"$work/e2" ; : >"$work/t2"
empty=$work/empty-data
"$porthold" --data-dir "$empty" init >/dev/null 2>&1
runs=$((rounds * 5))
for i in $(seq "$runs"); do
  mkdir -p "$work/new/$i" "$work/new-empty/$i"
  cd "$work/new/$i"
  [ -n "$trop" ] && elapsed 1 "$trop" reserve >>"$work/t2"
  elapsed 1 "$porthold" reserve >>"$work/p2"
  cd "$work/new-empty/$i"
  PORTHOLD_DATA_DIR=$empty elapsed 1 "$porthold" reserve >>"$work/e2"
done
p2=$(median <"$work/p2"); e2=$(median <"$work/e2")
echo "## new-key reserve, median of $runs interleaved single runs"
echo "| command | median elapsed |"
echo "|---|---:|"
echo "| porthold reserve, empty registry | $(echo "$e2" | ms) ms |"
echo "| porthold reserve, $rows rows | $(echo "$p2" | ms) ms |"
if [ -n "$trop" ]; then
  t2=$(median <"$work/t2")
  echo "| trop reserve, $rows rows | $(echo "$t2" | ms) ms |"
  echo
  echo "porthold / trop ($rows rows): $(ratio "$p2" "$t2") (goal <= 0.5)"
fi
echo "porthold $rows rows / empty: $(ratio "$p2" "$e2") (goal <= 1.25)"
