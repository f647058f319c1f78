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
[ -n "$trop" ] && [ -x "$trop" ] && trop=$(realpath "$trop")
porthold=$(realpath "${2:-$(dirname "$0")/../target/release/porthold}")
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

# `perf stat -r N CMD...` in the current directory: mean elapsed seconds and
# mean CPU seconds (task-clock), on one line. CPU time is reported too because
# a shared machine's load inflates elapsed time more than CPU time.
elapsed() {
  local n=$1
  shift
  perf stat -r "$n" -e task-clock -- "$@" 2>&1 >/dev/null |
    awk '/task-clock/ { c = $1; gsub(",", "", c) } /seconds time elapsed/ { e = $1 } END { print e, c / 1000 }'
}
# median FILE COLUMN
median() { cut -d' ' -f"$2" <"$1" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ms() { awk -v v="$1" 'BEGIN { printf "%.3f", v * 1000 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
# row LABEL FILE: a table row with median elapsed and median CPU time.
row() { echo "| $1 | $(ms "$(median "$2" 1)") ms | $(ms "$(median "$2" 2)") ms |"; }
# ratios LABEL FILE_A FILE_B GOAL
ratios() {
  echo "$1: $(ratio "$(median "$2" 1)" "$(median "$3" 1)") elapsed, $(ratio "$(median "$2" 2)" "$(median "$3" 2)") CPU (goal <= $4)"
}

echo "# porthold $("$porthold" --version) vs ${trop:-no trop}; $rounds rounds"
echo

# 1. Idempotent reserve.
mkdir -p "$work/existing"
cd "$work/existing"
"$porthold" reserve >/dev/null
[ -n "$trop" ] && "$trop" reserve >/dev/null
: >"$work/p1" ; : >"$work/v1" ; : >"$work/t1"
# The order rotates every round: trop's reserve fsyncs, and whichever command
# always ran right after it would pay for the writeback it leaves behind.
for round in $(seq "$rounds"); do
  for step in 0 1 2; do
    case $(((round + step) % 3)) in
      0) [ -z "$trop" ] || elapsed "$reps" "$trop" reserve >>"$work/t1" ;;
      1) elapsed "$reps" "$porthold" reserve >>"$work/p1" ;;
      2) elapsed "$reps" "$porthold" --version >>"$work/v1" ;;
    esac
  done
done
echo "## idempotent reserve (existing key, occupancy check on), $rounds x perf stat -r $reps"
echo "| command | median elapsed | median CPU |"
echo "|---|---:|---:|"
row "porthold --version" "$work/v1"
row "porthold reserve" "$work/p1"
[ -n "$trop" ] && row "trop reserve" "$work/t1"
echo
[ -n "$trop" ] && ratios "porthold / trop" "$work/p1" "$work/t1" 0.5
ratios "porthold reserve / porthold --version" "$work/p1" "$work/v1" 1.6
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
echo "## new-key reserve, median of $runs interleaved single runs"
echo "| command | median elapsed | median CPU |"
echo "|---|---:|---:|"
row "porthold reserve, empty registry" "$work/e2"
row "porthold reserve, $rows rows" "$work/p2"
[ -n "$trop" ] && row "trop reserve, $rows rows" "$work/t2"
echo
[ -n "$trop" ] && ratios "porthold / trop ($rows rows)" "$work/p2" "$work/t2" 0.5
ratios "porthold $rows rows / empty" "$work/p2" "$work/e2" 1.25
