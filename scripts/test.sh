#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: installs what is needed, builds the test
# guest images from Debian packages, builds the web UI, checks formatting and lints, and runs every
# test (unit, property, snapshot and end-to-end tests with real QEMU, swtpm, OVMF, SQLite, kubectl,
# and the web UI in headless Chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

./scripts/setup.sh

export FERROVIRT_GUEST_DIR="${FERROVIRT_GUEST_DIR:-$root/.cache/guest}"
guest/build.sh "$FERROVIRT_GUEST_DIR"

# The web UI first, so that the cargo build embeds it (crates/apiserver/build.rs reads ui/dist):
# exactly the locked npm packages, type-check + production build, its unit tests (Vitest).
# The browser tests (tests/ui_browser.rs, Playwright + Debian's Chromium against a real
# `ferrovirt serve`) run in cargo nextest below and must not skip here.
command -v npm >/dev/null 2>&1 || { echo "test.sh: npm (Node >= 20.19) is needed to build the web UI" >&2; exit 1; }
(cd ui && npm ci --no-audit --no-fund && npm run build && npm test)
export FERROVIRT_REQUIRE_UI_E2E=1

export CARGO_TERM_COLOR=never
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo build --workspace --locked
# The main job, as a new user runs it: the README's first command on a fresh data dir, then again on
# the same data dir (the second run finds the VM, its PVC and its TPM from the first), on a free
# port so that nothing else on the machine is in the way.
demo_dir=$(mktemp -d "${TMPDIR:-/tmp}/ferrovirt-demo.XXXXXX")
demo_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
demo_failed=""
for run in 1 2; do
  echo "=== test.sh: ./scripts/demo.sh --once (run $run of 2, data dir $demo_dir)"
  if ! FERROVIRT_LISTEN="127.0.0.1:$demo_port" ./scripts/demo.sh --once "$demo_dir"; then
    demo_failed="./scripts/demo.sh --once failed in run $run of 2 (data dir $demo_dir kept)"
    break
  fi
done
[ -n "$demo_failed" ] || rm -rf "$demo_dir"

# The Debian package, from the release build the demo made (cargo-deb finds it up to date) and the
# UI built above; tests/package.rs checks it and runs its binary with its configuration.
echo "=== test.sh: ./scripts/package.sh --ui-built"
FERROVIRT_DEB=$(./scripts/package.sh --ui-built | tail -n 1)
export FERROVIRT_DEB

# Every test; the demo's verdict is given after them (the test summary stays the last lines).
cargo nextest run --workspace --locked --no-fail-fast
# Hostile input against the API: schemathesis from the server's OpenAPI, a few examples per
# operation (a 5xx, a crash or a hang fails the run).
echo "=== test.sh: ./scripts/schemathesis.sh --examples 3"
./scripts/schemathesis.sh --examples 3 --bin target/debug/ferrovirt
if [ -n "$demo_failed" ]; then
  echo "test.sh: $demo_failed" >&2
  exit 1
fi

