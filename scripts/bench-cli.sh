#!/usr/bin/env bash
# Whole-process benchmarks of the porthold binary, each compared in the same
# run with `porthold --version` (pure process start-up), plus peak RSS.
# Needs hyperfine and GNU time (scripts/install-test-deps.sh installs them).
# Usage: scripts/bench-cli.sh [RUNS]     (results go to stdout; copy into docs/performance.md)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-200}
cargo build --release -p porthold-cli --locked >/dev/null
bin=$PWD/target/release/porthold
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export PORTHOLD_DATA_DIR=$work/data
mkdir -p "$work/project"
cd "$work/project"
"$bin" reserve --pool 20000-29999 >/dev/null   # the existing key
echo "## whole-process reserve vs --version ($runs runs each)"
hyperfine --shell=none --warmup 20 --runs "$runs" --export-markdown "$work/existing.md" \
  -n 'porthold --version' "$bin --version" \
  -n 'porthold reserve (existing key)' "$bin reserve --pool 20000-29999" >/dev/null
cat "$work/existing.md"
echo
# A new key each run: --path takes a counter through hyperfine's parameter list.
hyperfine --shell=none --warmup 5 --runs 1 --export-markdown "$work/new.md" \
  -n 'porthold --version' "$bin --version" >/dev/null
hyperfine --shell=none --warmup 0 --export-markdown "$work/new.md" \
  -P i 1 "$runs" -n 'porthold reserve (new key)' \
  "$bin reserve --pool 20000-29999 --allow-unrelated-path --path /bench/new/{i}" >/dev/null 2>&1 || true
# hyperfine -P reports one row per value; summarise them instead.
python3 - "$work/new.md" <<'PY' 2>/dev/null || sed -n '1,4p' "$work/new.md"
import sys, re, statistics
rows = [l for l in open(sys.argv[1]) if l.startswith('| `')]
means = [float(re.split(r'\s*\|\s*', l)[2].split(' ')[0]) for l in rows]
print(f"| `porthold reserve (new key)` | median of {len(means)} means: {statistics.median(means):.2f} ms |")
PY
echo
echo "## peak RSS (KiB)"
for args in "--version" "reserve --pool 20000-29999" "reserve --pool 20000-29999 --allow-unrelated-path --path /bench/rss"; do
  rss=$(/usr/bin/time -f '%M' "$bin" $args 2>&1 >/dev/null | tail -n1)
  echo "porthold $args: $rss KiB"
done
