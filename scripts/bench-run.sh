#!/usr/bin/env bash
# Start-up overhead of `porthold run`: `porthold run --ephemeral -- /bin/true`
# against `/bin/true` alone, with the runtime directory on tmpfs and on ext4,
# interleaved in one run (scripts/interleave.py: rounds of `perf stat -r BATCH`,
# medians of the per-round means). The goal is <= 1.5 ms median overhead on both,
# for the binary porthold ships (`run`: scripts/build-release.sh, a static PIE
# on Linux with glibc); `plain run` is a plain `cargo build --release` binary
# (dynamically linked), measured beside it.
#
# tmpfs: $XDG_RUNTIME_DIR when it is tmpfs, else /dev/shm.
# ext4: a directory under /tmp when /tmp is ext4; else, as root, a loop-mounted
# ext4 image (mkfs.ext4 on a file); else the ext4 case is skipped.
# BASELINE=/path/to/an/older/porthold adds that binary's run on both, side by side.
#
# Both binaries are copied into the benchmark's own directory first and run
# from there: a file the linker has just written sits in the page cache in a
# different shape from a copied (installed) one, and every exec of it took
# about 10 more page faults and 0.1 ms here, which would favour whichever
# binary was not freshly linked.
#
# Needs perf. Usage: scripts/bench-run.sh [ROUNDS] [BATCH]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-30}
batch=${2:-20}
release=$(scripts/build-release.sh 2>/dev/null) || {
  echo "bench-run: scripts/build-release.sh failed; run it to see why" >&2
  exit 1
}
cargo build --release -p porthold-cli --locked >/dev/null 2>&1 || {
  echo "bench-run: cargo build --release -p porthold-cli failed" >&2
  exit 1
}
# A build leaves hundreds of MB of dirty pages; their writeback would land in
# the first rounds, on the ext4 case above all (1.80 against 1.51 ms on one
# fresh clone). Write them back before measuring.
sync
interleave=$PWD/scripts/interleave.py
work=$(mktemp -d)
mounted=
cleanup() {
  if [ -n "$mounted" ]; then umount "$mounted" || true; fi
  rm -rf "$work" "${tmpfs_dir:-}" "${ext4_dir:-}"
}
trap cleanup EXIT
cp "$release" "$work/porthold"
bin=$work/porthold
cp target/release/porthold "$work/porthold-plain"
plain=$work/porthold-plain
if [ -n "${BASELINE:-}" ]; then
  cp "$BASELINE" "$work/porthold-baseline"
  BASELINE=$work/porthold-baseline
fi

fstype() { df --output=fstype "$1" | tail -n 1 | tr -d " "; }

tmpfs_base=/dev/shm
if [ -n "${XDG_RUNTIME_DIR:-}" ] && [ "$(fstype "$XDG_RUNTIME_DIR")" = tmpfs ]; then
  tmpfs_base=$XDG_RUNTIME_DIR
fi
tmpfs_dir=$(mktemp -d "$tmpfs_base/porthold-bench.XXXXXX")
[ "$(fstype "$tmpfs_dir")" = tmpfs ] || { echo "$tmpfs_dir is not tmpfs" >&2; exit 1; }

ext4_dir=
if [ "$(fstype /tmp)" = ext4 ]; then
  ext4_dir=$(mktemp -d /tmp/porthold-bench.XXXXXX)
elif [ "$(id -u)" = 0 ] && command -v mkfs.ext4 >/dev/null; then
  truncate -s 64M "$work/ext4.img"
  mkfs.ext4 -q -F "$work/ext4.img"
  mkdir "$work/ext4"
  mount -o loop "$work/ext4.img" "$work/ext4"
  mounted=$work/ext4
  mkdir -m 0700 "$work/ext4/run"
  ext4_dir=$work/ext4/run
else
  echo "note: /tmp is $(fstype /tmp) and we are not root: no ext4 runtime dir, ext4 case skipped" >&2
fi
chmod 0700 "$tmpfs_dir" ${ext4_dir:+"$ext4_dir"}

export PORTHOLD_DATA_DIR=$work/data
mkdir -p "$work/project"
commands=("/bin/true=/bin/true")
for fs in tmpfs ext4; do
  dir=$tmpfs_dir
  [ "$fs" = ext4 ] && dir=$ext4_dir
  [ -n "$dir" ] || continue
  commands+=("run ($fs)=$bin --runtime-dir $dir run --ephemeral -- /bin/true")
  if [ "$release" != "$PWD/target/release/porthold" ]; then
    commands+=("plain run ($fs)=$plain --runtime-dir $dir run --ephemeral -- /bin/true")
  fi
  if [ -n "${BASELINE:-}" ]; then
    commands+=("baseline run ($fs)=$BASELINE --runtime-dir $dir run --ephemeral -- /bin/true")
  fi
done

echo "load: $(uptime)"
echo "tmpfs runtime dir: $tmpfs_dir; ext4 runtime dir: ${ext4_dir:-none}"
python3 "$interleave" --rounds "$rounds" --batch "$batch" --cwd "$work/project" "${commands[@]}" \
  | tee "$work/table"
echo "load: $(uptime)"
# The overhead over /bin/true, in ms, from the table's medians.
python3 - "$work/table" <<'PY'
import re, sys
rows = {}
for line in open(sys.argv[1]):
    m = re.match(r"\| `(.+?)` \| ([0-9.]+) ms \| .* \| ([0-9.]+)x \|", line)
    if m:
        rows[m.group(1)] = (float(m.group(2)), float(m.group(3)))
base = rows["/bin/true"][0]
for name, (ms, ratio) in rows.items():
    if name != "/bin/true":
        print(f"{name}: {ms - base:.2f} ms over /bin/true ({ratio:.2f}x)")
PY
