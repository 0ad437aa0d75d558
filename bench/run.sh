#!/usr/bin/env bash
# The benchmark's one entry point: ferrovirt next to a hand launch of swtpm + QEMU and next to
# libvirt (start and stop latency of a VM with persistent TPM + EFI + Secure Boot, interleaved,
# medians), the managers' memory, and the control plane with 10,000 VM objects. Prints a table and
# key=value lines. Not part of the test suite; takes a few minutes.
#
#   bench/run.sh [ferrovirt-bench options]     e.g. --runs 15, --objects 10000, --no-libvirt,
#                                              --only start|mem|control|burst, --burst N, --work DIR
#
# Sets up what it needs: the packages of scripts/setup.sh, libvirt from Debian's packages, and
# libvirtd + virtlogd (started by hand when there is no systemd), then builds in release mode.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

./scripts/setup.sh

LIBVIRT_PACKAGES=(libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients)
missing=()
for p in "${LIBVIRT_PACKAGES[@]}"; do
  dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null | grep -qx installed || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "bench: installing ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# libvirtd and virtlogd: through systemd when it runs, by hand otherwise.
if ! virsh -c qemu:///system version >/dev/null 2>&1; then
  if [ -d /run/systemd/system ]; then
    as_root systemctl start virtlogd libvirtd
  else
    as_root mkdir -p /var/log/libvirt /var/log/swtpm/libvirt/qemu /var/lib/libvirt/swtpm
    pgrep -x virtlogd >/dev/null || as_root virtlogd -d
    pgrep -x libvirtd >/dev/null || as_root libvirtd -d
  fi
  for _ in $(seq 50); do
    virsh -c qemu:///system version >/dev/null 2>&1 && break
    sleep 0.2
  done
fi

cargo build --release --locked -p ferrovirt -p ferrovirt-bench
target_dir="${CARGO_TARGET_DIR:-target}"
bench=("$target_dir/release/ferrovirt-bench" --ferrovirt "$target_dir/release/ferrovirt" "$@")
if [ "$(id -u)" = 0 ]; then exec "${bench[@]}"; else exec sudo "${bench[@]}"; fi
