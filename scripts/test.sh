#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: installs what is needed, builds the test
# guest images from Debian packages, checks formatting and lints, and runs every test (unit,
# property, snapshot and end-to-end tests with real QEMU, swtpm, OVMF, SQLite and kubectl).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

./scripts/setup.sh

export FERROVIRT_GUEST_DIR="${FERROVIRT_GUEST_DIR:-$root/.cache/guest}"
if [ -x guest/build.sh ]; then
  guest/build.sh "$FERROVIRT_GUEST_DIR"
fi

export CARGO_TERM_COLOR=never
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo build --workspace --locked
cargo nextest run --workspace --locked --no-fail-fast
