#!/bin/bash
# Build the Debian 12 test guest: a real systemd Linux for the end-to-end tests of issue 19
# (cloud-init, SSH through the port-forward, the guest agent, LUKS sealed to the vTPM).
#
#   guest/debian/build.sh OUT_DIR
#
# Produces OUT_DIR/debian-12.img: a raw GPT disk with
#   1. an EFI system partition (FAT, made with mtools, nothing mounted) holding Debian's signed
#      shim as /EFI/BOOT/BOOTX64.EFI, Debian's signed GRUB beside it, /EFI/debian/grub.cfg, and
#      the signed cloud kernel + its initramfs (GRUB reads them from the ESP);
#   2. an ext4 root file system (label `root`) made with `mkfs.ext4 -d` from a directory that
#      `mmdebstrap --variant=minbase` filled: systemd, udev, openssh-server, cloud-init (NoCloud),
#      qemu-guest-agent, tpm2-tools, cryptsetup and the libtss2 libraries systemd-cryptenroll's
#      TPM2 support dlopen()s, sudo; no documentation, man pages or locales.
# It boots with UEFI and Secure Boot (Microsoft's keys enrolled, as OVMF_VARS_4M.ms.fd has them).
#
# Runs as root on Debian 12 with the apt lists current. Host tools: mmdebstrap, e2fsprogs
# (mkfs.ext4 -d), gdisk (sgdisk), dosfstools (mkfs.vfat), mtools (mmd/mcopy).
#
# Cache: OUT_DIR/debian-12.stamp holds a hash of this script and of the candidate versions of the
# packages named here; when it matches and the image exists, the script exits at once.
set -euo pipefail

die() {
	echo "debian/build.sh: error: $*" >&2
	exit 1
}

[ $# -eq 1 ] || die "usage: $0 OUT_DIR"
OUT_DIR=$1
IMG=debian-12.img
STAMP=debian-12.stamp
ROOT_SIZE_MIB=1536
ESP_SIZE_MIB=96
KERNEL_CMDLINE="root=LABEL=root ro console=ttyS0,115200 no_timer_check quiet systemd.show_status=0 net.ifnames=0"

for tool in mmdebstrap mkfs.ext4 sgdisk mkfs.vfat mmd mcopy sha256sum; do
	command -v "$tool" >/dev/null || die "missing host tool '$tool' (packages: mmdebstrap e2fsprogs gdisk dosfstools mtools; run scripts/setup.sh)"
done

PACKAGES=(
	systemd systemd-sysv udev dbus systemd-timesyncd
	linux-image-cloud-amd64 initramfs-tools
	shim-signed grub-efi-amd64-signed
	openssh-server cloud-init qemu-guest-agent sudo
	tpm2-tools cryptsetup cryptsetup-bin
	libtss2-esys-3.0.2-0 libtss2-rc0 libtss2-mu0 libtss2-tcti-device0
	iproute2 ifupdown isc-dhcp-client netbase e2fsprogs
)

mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)

# The stamp: this script and what apt would install today.
versions=$(apt-cache policy "${PACKAGES[@]}" 2>/dev/null | grep -E '^[a-z0-9]|Candidate' | tr -d ' ')
stamp=$( (sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1; echo "$versions") | sha256sum | cut -d' ' -f1)
if [ -f "$OUT_DIR/$IMG" ] && [ "$(cat "$OUT_DIR/$STAMP" 2>/dev/null)" = "$stamp" ]; then
	echo "debian/build.sh: $OUT_DIR/$IMG is current"
	exit 0
fi

WORK=$(mktemp -d "$OUT_DIR/.debian-build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
ROOT="$WORK/root"
started=$(date +%s)

include=$(IFS=,; echo "${PACKAGES[*]}")
# No docs, man pages or locales (dpkg path excludes), no recommends (mmdebstrap's default).
# Masked: the periodic jobs, and systemd-binfmt (its one entry is python3.11's, for running .pyc
# files directly; with the binfmt_misc mount it cost ~3.5 s of early boot under TCG).
mmdebstrap --variant=minbase --include="$include" \
	--dpkgopt='path-exclude=/usr/share/man/*' \
	--dpkgopt='path-exclude=/usr/share/locale/*' \
	--dpkgopt='path-include=/usr/share/locale/locale.alias' \
	--dpkgopt='path-exclude=/usr/share/doc/*' \
	--dpkgopt='path-include=/usr/share/doc/*/copyright' \
	--dpkgopt='path-exclude=/usr/share/info/*' \
	--essential-hook='mkdir -p "$1/etc/initramfs-tools/conf.d"; echo MODULES=list > "$1/etc/initramfs-tools/conf.d/ferrovirt"' \
	--customize-hook='chroot "$1" systemctl mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer man-db.timer systemd-binfmt.service >/dev/null 2>&1 || true' \
	--customize-hook='rm -f "$1"/etc/ssh/ssh_host_*' \
	bookworm "$ROOT" >"$WORK/mmdebstrap.log" 2>&1 ||
	{ tail -30 "$WORK/mmdebstrap.log" >&2; die "mmdebstrap failed (log above)"; }

# MODULES=dep cannot see the guest's hardware from a chroot: build the initramfs with the
# modules a virtio/SATA guest needs instead.
cat >"$ROOT/etc/initramfs-tools/conf.d/ferrovirt" <<'EOF'
MODULES=list
EOF
cat >"$ROOT/etc/initramfs-tools/modules" <<'EOF'
virtio_pci
virtio_blk
virtio_scsi
virtio_net
ahci
sd_mod
ext4
EOF
KVER=$(ls "$ROOT/lib/modules" | sort -V | tail -n 1)
chroot "$ROOT" update-initramfs -c -k "$KVER" >"$WORK/initramfs.log" 2>&1 ||
	{ tail -20 "$WORK/initramfs.log" >&2; die "update-initramfs failed"; }

# No fsck of the root at boot (pass 0): systemd-fsck-root sat on the boot's critical path (3.7 s
# under TCG) for a file system mkfs.ext4 made clean; ext4's journal covers an unclean stop.
cat >"$ROOT/etc/fstab" <<'EOF'
LABEL=root / ext4 defaults,errors=remount-ro 0 0
EOF
echo debian >"$ROOT/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 debian\n::1 localhost ip6-localhost ip6-loopback\n' >"$ROOT/etc/hosts"
# cloud-init: NoCloud only (no network probing of other datasources at boot). An ed25519 host
# key only: cloud-init's default makes rsa, dsa, ecdsa and ed25519 keys, ~5 s under TCG in the
# init stage that sshd and the agent wait for; sshd is told to load that one key. The config
# stage without the modules for software the image lacks: snap, ssh-import-id, keyboard
# (console-setup), locale (no locales package: it failed, and with it cloud-config.service, so
# the system came up "degraded"), grub-dpkg (no grub-pc; ~2 s under TCG), byobu.
cat >"$ROOT/etc/cloud/cloud.cfg.d/90-ferrovirt.cfg" <<'EOF'
datasource_list: [ NoCloud, None ]
ssh_genkeytypes: [ ed25519 ]
cloud_config_modules:
 - set-passwords
 - apt-pipelining
 - apt-configure
 - ntp
 - timezone
 - disable-ec2-metadata
 - runcmd
EOF
echo 'HostKey /etc/ssh/ssh_host_ed25519_key' >"$ROOT/etc/ssh/sshd_config.d/ferrovirt-hostkey.conf"
# The network: cloud-init's fallback configuration (DHCP on the first NIC), rendered for ifupdown.
rm -f "$ROOT/etc/machine-id" && : >"$ROOT/etc/machine-id"
rm -rf "$ROOT/var/cache/apt"/*.bin "$ROOT/var/lib/apt/lists"/* "$ROOT/var/log"/*.log

# --- the ESP: signed shim + GRUB, grub.cfg, the signed kernel and the initramfs ------------------
ESP="$WORK/esp.img"
truncate -s "${ESP_SIZE_MIB}M" "$ESP"
mkfs.vfat -F 32 -n ESP "$ESP" >/dev/null
export MTOOLS_SKIP_CHECK=1
mmd -i "$ESP" ::/EFI ::/EFI/BOOT ::/EFI/debian
mcopy -i "$ESP" "$ROOT/usr/lib/shim/shimx64.efi.signed" ::/EFI/BOOT/BOOTX64.EFI
mcopy -i "$ESP" "$ROOT/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed" ::/EFI/BOOT/grubx64.efi
mcopy -i "$ESP" "$ROOT/boot/vmlinuz-$KVER" ::/vmlinuz
mcopy -i "$ESP" "$ROOT/boot/initrd.img-$KVER" ::/initrd.img
cat >"$WORK/grub.cfg" <<EOF
set timeout=0
set default=0
menuentry "Debian 12 (ferrovirt test guest)" {
	search --no-floppy --label --set=root ESP
	linux /vmlinuz $KERNEL_CMDLINE
	initrd /initrd.img
}
EOF
mcopy -i "$ESP" "$WORK/grub.cfg" ::/EFI/debian/grub.cfg
mcopy -i "$ESP" "$WORK/grub.cfg" ::/EFI/BOOT/grub.cfg

# --- the root file system, then the GPT disk ---------------------------------------------------
ROOTFS="$WORK/root.ext4"
mkfs.ext4 -q -L root -d "$ROOT" "$ROOTFS" "${ROOT_SIZE_MIB}M" ||
	die "mkfs.ext4 -d failed (the root tree may not fit in ${ROOT_SIZE_MIB} MiB)"

DISK="$WORK/$IMG"
truncate -s $((1 + ESP_SIZE_MIB + ROOT_SIZE_MIB + 1))M "$DISK"
sgdisk -n 1:1M:+${ESP_SIZE_MIB}M -t 1:ef00 -c 1:ESP \
	-n 2:0:+${ROOT_SIZE_MIB}M -t 2:8304 -c 2:root "$DISK" >"$WORK/sgdisk.log" 2>&1 ||
	{ cat "$WORK/sgdisk.log" >&2; die "sgdisk failed"; }
dd if="$ESP" of="$DISK" bs=1M seek=1 conv=notrunc,sparse status=none
dd if="$ROOTFS" of="$DISK" bs=1M seek=$((1 + ESP_SIZE_MIB)) conv=notrunc,sparse status=none

mv "$DISK" "$OUT_DIR/$IMG"
echo "$stamp" >"$OUT_DIR/$STAMP"
echo "debian/build.sh: built $OUT_DIR/$IMG (kernel $KVER) in $(($(date +%s) - started)) s"
