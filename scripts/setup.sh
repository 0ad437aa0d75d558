#!/usr/bin/env bash
# Installs what ferrovirt needs on a fresh Debian 12 machine: QEMU, swtpm, OVMF, the tools that
# build the test guest from Debian packages, kubectl, and the Rust tools the checks use.
# Idempotent: a second run only checks and returns.
set -euo pipefail

PACKAGES=(
  qemu-system-x86 qemu-utils          # the engine
  swtpm swtpm-tools                    # vTPM and swtpm_setup/swtpm_localca
  ovmf                                 # UEFI firmware + QEMU firmware descriptors
  tpm2-tools libtss2-dev pkg-config    # TPM tooling for tests
  mtools dosfstools gdisk binutils systemd-boot-efi busybox-static  # test guest images
  ca-certificates
  chromium                             # browser tests of the web UI
)

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null | grep -qx installed || missing+=("$p")
done
# kubectl: the machine image may bring one; Debian's package is kubernetes-client.
command -v kubectl >/dev/null 2>&1 || missing+=(kubernetes-client)

if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi

# Node.js >= 20.19 and npm build the web UI (Vite 8). The machine image brings Node 20; on a
# machine without any, Debian's nodejs/npm are installed (bookworm's is older: then say so).
if ! command -v npm >/dev/null 2>&1; then
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm
fi
if ! node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a==20&&b>=19)?0:1)'; then
  echo "setup: Node.js $(node --version) is too old for the web UI build (Vite 8 needs >= 20.19)" >&2
  exit 1
fi

# The test guest is built from the newest packages in the apt lists: make sure they exist.
if ! ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1; then
  as_root apt-get update -q
fi

# An independent parser of OVMF variable stores, used as an oracle by the firmware tests.
command -v virt-fw-vars >/dev/null 2>&1 || python3 -m pip install --quiet virt-firmware

if ! command -v cargo-nextest >/dev/null 2>&1 && ! cargo nextest --version >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi
echo "setup: ok"
