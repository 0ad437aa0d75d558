#!/bin/bash
# Build the ferrovirt e2e test guest disk images from Debian packages.
#
#   guest/build.sh OUT_DIR
#
# Produces OUT_DIR/ferro-guest.img (GPT + FAT ESP holding a unified kernel image
# at /EFI/BOOT/BOOTX64.EFI) and OUT_DIR/ferro-guest-sb.img (Secure Boot chain:
# Debian's signed shim -> signed GRUB -> signed cloud kernel), both with the same
# initramfs (busybox-static, tpm2-tools and its libraries, qemu-guest-agent and its
# libraries, efivarfs.ko, the virtio modules, guest/init).
#
# Runs as root on Debian 12. Packages are fetched with `apt-get download` and
# unpacked with `dpkg-deb -x` into a work dir; nothing is installed on the host.
# Host tools: apt, dpkg, gzip, coreutils, binutils (objcopy/objdump), gdisk
# (sgdisk), dosfstools (mkfs.vfat), mtools (mmd/mcopy), systemd-boot-efi (stub).
#
# Cache: OUT_DIR/ferro-guest.stamp holds a hash of this script, guest/init, the
# stub and the exact package files (name, version, SHA256). When it matches and
# both images exist, the script exits at once.
set -euo pipefail

die() {
	echo "build.sh: error: $*" >&2
	exit 1
}

[ $# -eq 1 ] || die "usage: $0 OUT_DIR"
OUT_DIR=$1
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
INIT_SRC="$SCRIPT_DIR/init"
STUB=/usr/lib/systemd/boot/efi/linuxx64.efi.stub
KERNEL_CMDLINE="console=ttyS0 loglevel=3 panic=-1"
PLAIN_IMG=ferro-guest.img
SB_IMG=ferro-guest-sb.img
STAMP=ferro-guest.stamp


[ -f "$INIT_SRC" ] || die "missing $INIT_SRC (guest/init must sit next to build.sh)"
[ -f "$STUB" ] || die "missing $STUB: apt-get install systemd-boot-efi"
for tool in apt-get apt-cache dpkg-deb gzip objcopy objdump sgdisk mkfs.vfat mmd mcopy sha256sum; do
	command -v "$tool" >/dev/null || die "missing host tool '$tool' (packages: apt dpkg gzip binutils gdisk dosfstools mtools)"
done

mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)

# --- which packages -------------------------------------------------------------
# Newest Debian 12 cloud kernel (the cloud flavour boots fastest under TCG).
KERNEL_PKG=$(apt-cache pkgnames linux-image-6.1.0- |
	grep -E '^linux-image-6\.1\.0-[0-9]+-cloud-amd64$' |
	sort -t- -k5,5n | tail -n 1) || true
[ -n "$KERNEL_PKG" ] || die "no linux-image-6.1.0-*-cloud-amd64 in the apt lists (run apt-get update)"
KVER=${KERNEL_PKG#linux-image-}

# tpm2-tools and the closure of the library packages it depends on. Only lib*
# and zlib1g packages are followed: we copy shared libraries, nothing else.
lib_closure() {
	local seen=" " frontier="$*" all="" next p
	while [ -n "$frontier" ]; do
		all="$all $frontier"
		for p in $frontier; do seen="$seen$p "; done
		# shellcheck disable=SC2086 # package names: split on purpose
		next=$(apt-cache depends --no-recommends --no-suggests --no-conflicts \
			--no-breaks --no-replaces --no-enhances $frontier |
			awk '$1=="Depends:" || $1=="|Depends:" || $1=="PreDepends:" {print $2}' |
			grep -E '^(lib[a-z0-9.+-]+|zlib1g)$' | sort -u) || true
		frontier=""
		for p in $next; do
			case "$seen" in *" $p "*) ;; *) frontier="$frontier $p" ;; esac
		done
	done
	echo "${all# }"
}
BASE_PKGS="$KERNEL_PKG busybox-static shim-signed grub-efi-amd64-signed"

# compute_stamp PACKAGE...: sets PKG_LIST (exact files apt would fetch: name and
# SHA256) and STAMP_VALUE (hash of build inputs).
compute_stamp() {
	local uris
	uris=$(apt-get download --print-uris -o APT::Sandbox::User=root "$@") ||
		die "apt-get download --print-uris failed for: $* (run apt-get update?)"
	# Lines: 'URI' name_version_arch.deb size SHA256:hash
	PKG_LIST=$(printf '%s\n' "$uris" | awk '{print $2, $4}' | sort)
	STAMP_VALUE=$( {
		echo "kernel-cmdline $KERNEL_CMDLINE"
		sha256sum <"$0"
		sha256sum <"$INIT_SRC"
		sha256sum <"$STUB"
		printf '%s\n' "$PKG_LIST"
	} | sha256sum | cut -d' ' -f1)
}

up_to_date() {
	[ -f "$OUT_DIR/$STAMP" ] && [ -f "$OUT_DIR/$PLAIN_IMG" ] && [ -f "$OUT_DIR/$SB_IMG" ] &&
		[ "$(head -n 1 "$OUT_DIR/$STAMP")" = "$STAMP_VALUE" ]
}

# Fast path: reuse the package set recorded in the stamp (the library closure
# can only change if one of those packages changes version, which changes the
# stamp). Saves the ~6 apt-cache rounds of the closure.
if [ -f "$OUT_DIR/$STAMP" ]; then
	OLD_PKGS=$(sed -n 's/^packages //p' "$OUT_DIR/$STAMP")
	case " $OLD_PKGS " in
	*" $KERNEL_PKG "*)
		# shellcheck disable=SC2086 # package names: split on purpose
		compute_stamp $OLD_PKGS
		if up_to_date; then
			echo "ferro-guest: up to date in $OUT_DIR (kernel $KVER, stamp ${STAMP_VALUE:0:12})"
			exit 0
		fi
		;;
	esac
fi

PKGS="$BASE_PKGS $(lib_closure tpm2-tools libtss2-tcti-device0 qemu-guest-agent)"
# shellcheck disable=SC2086 # package names: split on purpose
compute_stamp $PKGS
if up_to_date; then
	echo "ferro-guest: up to date in $OUT_DIR (kernel $KVER, stamp ${STAMP_VALUE:0:12})"
	exit 0
fi

# --- fetch and unpack ------------------------------------------------------------
WORK=$(mktemp -d "$OUT_DIR/.build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/debs" "$WORK/pkgs"
# shellcheck disable=SC2086
(cd "$WORK/debs" && apt-get download -q -o APT::Sandbox::User=root $PKGS >/dev/null) ||
	die "apt-get download failed for: $PKGS"
for deb in "$WORK"/debs/*.deb; do
	dpkg-deb -x "$deb" "$WORK/pkgs"
done
P=$WORK/pkgs
BB=$P/bin/busybox
VMLINUZ=$P/boot/vmlinuz-$KVER
EFIVARFS_KO=$P/lib/modules/$KVER/kernel/fs/efivarfs/efivarfs.ko
SHIM=$P/usr/lib/shim/shimx64.efi.signed
GRUB=$P/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed
for f in "$BB" "$VMLINUZ" "$EFIVARFS_KO" "$SHIM" "$GRUB" "$P/usr/bin/tpm2"; do
	[ -f "$f" ] || die "expected file missing after unpacking: ${f#"$P"/}"
done
# The Debian cloud kernel is signed (PE security directory present).
objdump -p "$VMLINUZ" | grep -q 'Security Directory' ||
	die "$KERNEL_PKG: kernel image has no signature (Secure Boot image would not boot)"

# --- initramfs -------------------------------------------------------------------
R=$WORK/initramfs
mkdir -p "$R"/{etc,bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,lib/modules,lib64,lib/x86_64-linux-gnu,usr/lib/x86_64-linux-gnu}
install -m 0755 "$BB" "$R/bin/busybox"
for applet in $("$BB" --list-full); do
	[ -e "$R/$applet" ] || ln -s /bin/busybox "$R/$applet"
done
install -m 0755 "$INIT_SRC" "$R/init"
install -m 0644 "$EFIVARFS_KO" "$R/lib/modules/efivarfs.ko"
# virtio-net (network probe), virtio-blk + vfat (the NoCloud seed that asks for it).
MODDIR=$P/lib/modules/$KVER/kernel
for ko in drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_pci_modern_dev \
	drivers/virtio/virtio_pci_legacy_dev drivers/virtio/virtio_pci net/core/failover \
	drivers/net/net_failover drivers/net/virtio_net drivers/block/virtio_blk fs/fat/fat \
	fs/fat/vfat fs/nls/nls_cp437 fs/nls/nls_ascii; do
	[ -f "$MODDIR/$ko.ko" ] || die "$KERNEL_PKG: missing module $ko.ko"
	install -m 0644 "$MODDIR/$ko.ko" "$R/lib/modules/$(basename "$ko").ko"
done
# virtio-serial ports (the guest agent's channel): a module in Debian's cloud kernel, unless
# built in (then the kernel has it already and init's insmod list skips a missing file).
if [ -f "$MODDIR/drivers/char/virtio_console.ko" ]; then
	install -m 0644 "$MODDIR/drivers/char/virtio_console.ko" "$R/lib/modules/virtio_console.ko"
elif ! grep -qx 'CONFIG_VIRTIO_CONSOLE=y' "$P/boot/config-$KVER"; then
	die "$KERNEL_PKG: no virtio_console (neither a module nor built in)"
fi
install -m 0755 "$P/usr/bin/tpm2" "$R/usr/bin/tpm2"
QEMU_GA=$P/usr/sbin/qemu-ga
[ -f "$QEMU_GA" ] || die "qemu-guest-agent: /usr/sbin/qemu-ga missing after unpacking"
install -m 0755 "$QEMU_GA" "$R/usr/sbin/qemu-ga"
# qemu-ga's guest-shutdown runs /sbin/shutdown (stdio on /dev/null), which busybox lacks: this
# one reports the request on the console, then powers off.
rm -f "$R/sbin/shutdown"
cat >"$R/sbin/shutdown" <<'EOF'
#!/bin/busybox sh
echo "FERRO: agent-shutdown=$*" >/dev/console
sync
poweroff -f
EOF
chmod 0755 "$R/sbin/shutdown"

# Libraries: what the unpacked dynamic loader lists (ldd) for tpm2, the dlopen'ed
# device TCTI and qemu-ga. Every library must come from the unpacked packages.
LOADER=$P/lib64/ld-linux-x86-64.so.2
[ -e "$LOADER" ] || die "dynamic loader missing from libc6"
LIBPATH=$P/lib/x86_64-linux-gnu:$P/usr/lib/x86_64-linux-gnu
TCTI_DEVICE=$(readlink -f "$P/usr/lib/x86_64-linux-gnu/libtss2-tcti-device.so.0")
libs=$(for bin in "$P/usr/bin/tpm2" "$TCTI_DEVICE" "$QEMU_GA"; do
	"$LOADER" --library-path "$LIBPATH" --list "$bin" ||
		die "ld.so --list $bin failed"
done | awk '$2=="=>" {print $3}' | sort -u)
for lib in $libs "$P/usr/lib/x86_64-linux-gnu/libtss2-tcti-device.so.0"; do
	case "$lib" in
	"$P"/*) ;;
	*) die "tpm2 or qemu-ga needs $lib, which no unpacked package provides (extend the package list)" ;;
	esac
	rel=${lib#"$P"/}
	mkdir -p "$R/$(dirname "$rel")"
	cp -L "$lib" "$R/$rel"
done
cp -L "$LOADER" "$R/lib64/ld-linux-x86-64.so.2"
cat >"$R/etc/os-release" <<EOF
NAME="ferrovirt test guest"
ID=ferro-guest
VERSION_ID="$KVER"
EOF

INITRD=$WORK/initrd.img
(cd "$R" && find . -mindepth 1 | LC_ALL=C sort | "$BB" cpio -o -H newc -R 0:0 2>/dev/null) |
	gzip -9 -n >"$INITRD"

# --- unified kernel image (plain image) -------------------------------------------
# Place the new sections after the stub's last section, 4 KiB-aligned (the
# bookworm stub has ImageBase 0 and 0x200 section alignment).
image_base=$(objdump -p "$STUB" | awk '$1=="ImageBase" {print $2}')
stub_end=$(objdump -h "$STUB" | awk '$1 ~ /^[0-9]+$/ {print $3, $4}' |
	while read -r size vma; do echo $((0x$vma + 0x$size)); done | sort -n | tail -n 1)
align() { echo $((($1 + 4095) / 4096 * 4096)); }
printf '%s\n' "$KERNEL_CMDLINE" >"$WORK/cmdline"
cp "$R/etc/os-release" "$WORK/osrel"
off=$(align "$stub_end")
uki_args=()
for sec in osrel cmdline linux initrd; do
	case $sec in
	osrel) file=$WORK/osrel ;;
	cmdline) file=$WORK/cmdline ;;
	linux) file=$VMLINUZ ;;
	initrd) file=$INITRD ;;
	esac
	uki_args+=(--add-section ".$sec=$file" --change-section-vma ".$sec=$(printf '0x%x' $((0x$image_base + off)))")
	off=$(align $((off + $(stat -c %s "$file"))))
done
UKI=$WORK/BOOTX64.EFI
objcopy "${uki_args[@]}" "$STUB" "$UKI"

# --- disk images ------------------------------------------------------------------
export MTOOLS_SKIP_CHECK=1
# make_disk OUT_IMG DISK_GUID PART_GUID "SRC:ESP_PATH"...: GPT disk with one FAT ESP holding the files.
make_disk() {
	local out=$1 guid=$2 part_guid=$3
	shift 3
	local total=0 spec src
	for spec in "$@"; do
		src=${spec%%:*}
		total=$((total + $(stat -c %s "$src")))
	done
	# Content + 25% + 2 MiB for FAT metadata, in whole MiB.
	local esp_mib=$(((total * 5 / 4) / 1048576 + 2))
	local esp=$WORK/esp.img
	rm -f "$esp"
	truncate -s "${esp_mib}M" "$esp"
	mkfs.vfat -i 0fe77a01 -n FERRO-ESP "$esp" >/dev/null
	local dst dir part made=" "
	for spec in "$@"; do
		src=${spec%%:*}
		dst=${spec#*:}
		# mmd cannot create parents: create each missing level once.
		dir=""
		for part in $(dirname "$dst" | tr '/' ' '); do
			dir="$dir/$part"
			case "$made" in *" $dir "*) continue ;; esac
			mmd -i "$esp" "::$dir" || die "mmd $dir in $out"
			made="$made$dir "
		done
		mcopy -i "$esp" "$src" "::$dst" || die "mcopy $dst in $out"
	done
	rm -f "$out.tmp"
	truncate -s $((esp_mib + 2))M "$out.tmp"
	# (no -q: sgdisk 1.0.9 with -q silently writes nothing)
	sgdisk -o -U "$guid" -n 1:2048:+"${esp_mib}M" -t 1:EF00 -c 1:"EFI System" \
		-u 1:"$part_guid" "$out.tmp" >/dev/null || die "sgdisk failed on $out"
	sgdisk -p "$out.tmp" | grep -Eq '^ +1 +2048 .* EF00 ' || die "no EFI system partition in $out after sgdisk"
	dd if="$esp" of="$out.tmp" bs=1M seek=1 conv=notrunc status=none
	mv "$out.tmp" "$out"
}

make_disk "$OUT_DIR/$PLAIN_IMG" 6d8e2f1a-0000-4e5d-9f60-7a8b9c0d1e20 6d8e2f1a-0001-4e5d-9f60-7a8b9c0d1e20 \
	"$UKI:/EFI/BOOT/BOOTX64.EFI"

GRUB_CFG=$WORK/grub.cfg
cat >"$GRUB_CFG" <<EOF
set timeout=0
set default=0
menuentry "ferrovirt test guest" {
	linux /EFI/debian/vmlinuz $KERNEL_CMDLINE
	initrd /EFI/debian/initrd.img
}
EOF
make_disk "$OUT_DIR/$SB_IMG" 6d8e2f1a-0000-4e5d-9f60-7a8b9c0d1e30 6d8e2f1a-0001-4e5d-9f60-7a8b9c0d1e30 \
	"$SHIM:/EFI/BOOT/BOOTX64.EFI" \
	"$GRUB:/EFI/BOOT/grubx64.efi" \
	"$GRUB_CFG:/EFI/debian/grub.cfg" \
	"$VMLINUZ:/EFI/debian/vmlinuz" \
	"$INITRD:/EFI/debian/initrd.img"

{
	echo "$STAMP_VALUE"
	echo "kernel $KVER"
	echo "kernel-cmdline $KERNEL_CMDLINE"
	echo "packages $PKGS"
	printf '%s\n' "$PKG_LIST"
} >"$OUT_DIR/$STAMP.tmp"
mv "$OUT_DIR/$STAMP.tmp" "$OUT_DIR/$STAMP"

printf 'ferro-guest: built %s (%s MiB) and %s (%s MiB) in %s, kernel %s, initramfs %s KiB, %d s\n' \
	"$PLAIN_IMG" $(($(stat -c %s "$OUT_DIR/$PLAIN_IMG") / 1048576)) \
	"$SB_IMG" $(($(stat -c %s "$OUT_DIR/$SB_IMG") / 1048576)) \
	"$OUT_DIR" "$KVER" $(($(stat -c %s "$INITRD") / 1024)) \
	"$SECONDS"
