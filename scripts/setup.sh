#!/usr/bin/env bash
# Installs what ferrovirt needs on a fresh Debian 12 machine: QEMU, swtpm, OVMF, the tools that
# build the test guest from Debian packages, kubectl, and the Rust tools the checks use.
# Idempotent: a second run only checks and returns.
set -euo pipefail

PACKAGES=(
  qemu-system-x86 qemu-utils          # the engine (installed together above, same version)
  swtpm swtpm-tools                    # vTPM and swtpm_setup/swtpm_localca
  ovmf                                 # UEFI firmware + QEMU firmware descriptors
  tpm2-tools libtss2-dev pkg-config    # TPM tooling for tests
  mtools dosfstools gdisk binutils systemd-boot-efi busybox-static  # test guest images
  mmdebstrap e2fsprogs                 # the Debian test guest (guest/debian/build.sh: mkfs.ext4 -d)
  openssh-client                       # ferrovirt ssh runs the local ssh; tests make keys (ssh-keygen)
  xorriso                              # the guest ISO (El Torito EFI) the CD-ROM boot test builds
  ca-certificates
  openssl gnutls-bin                   # independent X.509 verifiers of the EK chain (tests)
  python3-venv                         # scripts/schemathesis.sh's private venv (schemathesis from PyPI)
  passt                                # guest networking that cannot reach the host (issue 11)
  iproute2                             # network namespaces: each card's passt (ip netns), the guest network test
  systemd                              # systemd-analyze verify of the packaged unit
  chromium                             # browser tests of the web UI
  xfsprogs                             # an XFS loop mount where snapshots are reflinks (storage test)
)

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# QEMU's system emulator and its utilities (qemu-img) must come from the same source package:
# the machine image may ship qemu-utils from bookworm-backports, whose qemu-block-extra conflicts
# with bookworm's qemu-system-x86, so `apt-get install qemu-system-x86` alone REMOVES qemu-img.
# Install both in one call, pinned to the version apt would install for the emulator, whenever
# either is missing or their versions differ (a downgrade of a newer qemu-utils is allowed).
pkg_version() { dpkg-query -W -f='${db:Status-Status} ${Version}' "$1" 2>/dev/null | awk '$1 == "installed" { print $2 }'; }
qemu_consistent() {
  local sys utils
  sys=$(pkg_version qemu-system-x86); utils=$(pkg_version qemu-utils)
  [ -n "$sys" ] && [ "$sys" = "$utils" ] && command -v qemu-img >/dev/null 2>&1 \
    && command -v qemu-system-x86_64 >/dev/null 2>&1
}
apt_updated=false
apt_update() { $apt_updated || { as_root apt-get update -q; apt_updated=true; }; }
if ! qemu_consistent; then
  apt_update
  qemu_version=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ { print $2 }')
  if [ -z "$qemu_version" ] || [ "$qemu_version" = "(none)" ]; then
    echo "setup: apt has no candidate for qemu-system-x86; check /etc/apt/sources.list*" >&2
    exit 1
  fi
  echo "setup: installing qemu-system-x86 and qemu-utils $qemu_version together"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --allow-downgrades \
    "qemu-system-x86=$qemu_version" "qemu-utils=$qemu_version"
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null | grep -qx installed || missing+=("$p")
done
# kubectl: the machine image may bring one; Debian's package is kubernetes-client.
command -v kubectl >/dev/null 2>&1 || missing+=(kubernetes-client)

if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  apt_update
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi

# Node.js >= 20.19 and npm build the web UI (Vite 8). The machine image brings Node 20; on a
# machine without any, Debian's nodejs/npm are installed (bookworm's is older: then say so).
if ! command -v npm >/dev/null 2>&1; then
  apt_update
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm
fi
if ! node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a==20&&b>=19)?0:1)'; then
  echo "setup: Node.js $(node --version) is too old for the web UI build (Vite 8 needs >= 20.19)" >&2
  exit 1
fi

# The test guest is built from the newest packages in the apt lists: make sure they exist.
if ! ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1; then
  apt_update
fi

# An independent parser of OVMF variable stores, used as an oracle by the firmware tests.
command -v virt-fw-vars >/dev/null 2>&1 || python3 -m pip install --quiet virt-firmware

if ! command -v cargo-nextest >/dev/null 2>&1 && ! cargo nextest --version >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi
# The Debian package (scripts/package.sh, checked by the tests).
if ! cargo deb --version >/dev/null 2>&1; then
  cargo install --locked cargo-deb
fi
# Never leave the machine worse than found: every tool the project runs must be there now, and
# QEMU's emulator and qemu-img must be of one version.
absent=()
for tool in qemu-system-x86_64 qemu-img swtpm swtpm_setup swtpm_localca swtpm_ioctl kubectl chromium node npm \
            tpm2 mformat mcopy mkfs.vfat xorriso sgdisk objcopy virt-fw-vars passt pasta ip dpkg-deb openssl certtool \
            systemd-analyze mmdebstrap mkfs.ext4 ssh ssh-keygen; do
  command -v "$tool" >/dev/null 2>&1 || absent+=("$tool")
done
for file in /usr/share/OVMF/OVMF_CODE_4M.ms.fd /usr/share/OVMF/OVMF_VARS_4M.ms.fd \
            /usr/share/OVMF/OVMF_CODE_4M.fd /usr/share/OVMF/OVMF_VARS_4M.fd \
            /usr/share/qemu/firmware/40-edk2-x86_64-secure-enrolled.json \
            /usr/lib/systemd/boot/efi/linuxx64.efi.stub; do
  [ -e "$file" ] || absent+=("$file")
done
if [ "${#absent[@]}" -gt 0 ]; then
  echo "setup: still missing after installation: ${absent[*]}" >&2
  exit 1
fi
img_v=$(qemu-img --version | sed -n '1s/^qemu-img version \([^ ]*\).*/\1/p')
sys_v=$(qemu-system-x86_64 --version | sed -n '1s/^QEMU emulator version \([^ ]*\).*/\1/p')
if [ "$img_v" != "$sys_v" ]; then
  echo "setup: qemu-img $img_v and qemu-system-x86_64 $sys_v differ; run: apt-get install --allow-downgrades qemu-system-x86=V qemu-utils=V" >&2
  exit 1
fi
echo "setup: ok (QEMU $sys_v)"
