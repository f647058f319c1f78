#!/usr/bin/env bash
# Builds the porthold binary to ship and install, and prints its path.
#
# On Linux with glibc, when the C library's static archive is installed
# (libc.a: Debian/Ubuntu libc6-dev, Fedora glibc-static), the binary is a
# static PIE (`-C target-feature=+crt-static`): no dynamic loader runs at
# start-up (mapping libc.so, binding its symbols), which is 0.2 ms of a
# `porthold --version` and 0.4 ms of a `porthold run` on this project's
# machine (docs/performance.md, docs/decisions.md). It keeps ASLR. Elsewhere, or with PORTHOLD_DYNAMIC=1,
# it is the plain `cargo build --release` binary.
#
# The static build needs `--target` (cargo would otherwise build the
# proc-macro crates with the same flag, which rustc refuses), so it lands in
# target/<host triple>/release/porthold; target/release/porthold stays the
# plain build.
#
# Install: cp "$(scripts/build-release.sh)" ~/.local/bin/porthold
# Usage: scripts/build-release.sh   (build output on stderr, the path on stdout)
set -euo pipefail
cd "$(dirname "$0")/.."
host=$(rustc -vV | sed -n 's/^host: //p')
static_libc=$(cc -print-file-name=libc.a 2>/dev/null || true)
case "$host" in
  *-linux-gnu)
    if [ "${PORTHOLD_DYNAMIC:-0}" = 0 ] && [ -f "$static_libc" ]; then
      RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
        cargo build --release --locked -p porthold-cli --target "$host" >&2
      echo "$PWD/target/$host/release/porthold"
      exit 0
    fi
    echo "build-release: no static libc.a (or PORTHOLD_DYNAMIC=1): a dynamically linked binary" >&2
    ;;
esac
cargo build --release --locked -p porthold-cli >&2
echo "$PWD/target/release/porthold"
