#!/usr/bin/env bash
# The main job: builds ferrovirt and the small test guest (from Debian packages), then runs the
# demo VM (persistent TPM + persistent UEFI variables) twice from one data dir. The first boot seals
# a secret in the TPM and writes an EFI variable; the second boot reads both back: the guest's
# console (copied here) shows the state surviving the restart.
#
#   scripts/demo.sh [DATA_DIR]     (default: .cache/demo; delete it to start from a fresh TPM)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
data_dir="${1:-$root/.cache/demo}"

./scripts/setup.sh
guest/build.sh "$root/.cache/guest"
cargo build --release --locked
bin="$root/target/release/ferrovirt"

manifest="$data_dir/demo-vm.yaml"
mkdir -p "$data_dir"
sed "s#GUEST_IMAGE#$root/.cache/guest/ferro-guest.img#" examples/demo-vm.yaml > "$manifest"
"$bin" validate -f "$manifest"

for boot in 1 2; do
  echo
  echo "=== boot $boot: ferrovirt run -f $manifest --data-dir $data_dir"
  "$bin" run -f "$manifest" --data-dir "$data_dir" --timeout 300 | grep --line-buffered -a 'FERRO:'
done
echo
echo "=== state generations kept for the demo VM"
"$bin" state list demo --data-dir "$data_dir"
