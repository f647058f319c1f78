#!/usr/bin/env bash
# Start-up overhead of `porthold run`: `porthold run --ephemeral -- /bin/true`
# against `/bin/true` alone, in one hyperfine run (the goal is <= 2 ms median).
# Needs hyperfine (scripts/install-test-deps.sh installs it).
# Usage: scripts/bench-run.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-200}
cargo build --release -p porthold-cli --locked >/dev/null
bin=$PWD/target/release/porthold
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The runtime dir lives where it does by default on a desktop: tmpfs
# ($XDG_RUNTIME_DIR); /dev/shm stands in for it when that is unset.
runtime=${XDG_RUNTIME_DIR:-/dev/shm}/porthold-bench-$$
trap 'rm -rf "$work" "$runtime"' EXIT
export PORTHOLD_DATA_DIR=$work/data PORTHOLD_RUNTIME_DIR=$runtime
mkdir -p "$work/project"
cd "$work/project"
hyperfine --shell=none --warmup 20 --runs "$runs" --export-json "$work/run.json" \
  -n '/bin/true' '/bin/true' \
  -n 'porthold run --ephemeral -- /bin/true' "$bin run --ephemeral -- /bin/true" >/dev/null
python3 - "$work/run.json" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
t, p = r["/bin/true"], r["porthold run --ephemeral -- /bin/true"]
ms = lambda s: s * 1000
print(f"| `/bin/true` | {ms(t['median']):.2f} ms median ({ms(t['mean']):.2f} ± {ms(t['stddev']):.2f} mean) |")
print(f"| `porthold run --ephemeral -- /bin/true` | {ms(p['median']):.2f} ms median ({ms(p['mean']):.2f} ± {ms(p['stddev']):.2f} mean) |")
print(f"overhead (median): {ms(p['median'] - t['median']):.2f} ms")
PY
