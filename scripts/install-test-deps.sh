#!/usr/bin/env bash
# Installs the programs some tests use, when they are missing (Debian/Ubuntu,
# as root): python3 and node (activation interop receivers),
# systemd-socket-activate (the reference sender), unshare/ip (namespace tests),
# hyperfine and GNU time (scripts/bench-cli.sh), strace (the test that an
# idempotent reserve writes nothing). Tests that need a missing
# program skip with a printed reason (pytest: the Python guide, docs/testing.md), so this script is optional locally; CI
# runs it so those tests really run there.
set -euo pipefail
need=()
command -v python3 >/dev/null || need+=(python3)
command -v node >/dev/null || need+=(nodejs)
python3 -c 'import pytest' 2>/dev/null || need+=(python3-pytest)
command -v systemd-socket-activate >/dev/null || need+=(systemd)
command -v unshare >/dev/null || need+=(util-linux)
command -v ip >/dev/null || need+=(iproute2)
command -v strace >/dev/null || need+=(strace)
command -v hyperfine >/dev/null || need+=(hyperfine)
[ -x /usr/bin/time ] || need+=(time)
if [ ${#need[@]} -eq 0 ]; then
  echo "install-test-deps: everything is present"
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "install-test-deps: missing ${need[*]}; install them (tests that need them will skip)" >&2
  exit 0
fi
echo "install-test-deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# A python3 outside the system's (pyenv, a venv) does not see python3-pytest.
if ! python3 -c 'import pytest' 2>/dev/null; then
  python3 -m pip install -q pytest || echo "install-test-deps: could not install pytest" >&2
fi
