#!/bin/bash
# Smoke test of the ferrovirt test guest images (dev tool; proof that they work).
#
#   guest/smoke.sh OUT_DIR [plain|sb|refuse]...
#
# Builds the images into OUT_DIR (guest/build.sh; a no-op when up to date), then
# for each variant (default: plain and sb): provisions a fresh swtpm state with
# an EK certificate from a PRIVATE local CA (never the host-wide
# /var/lib/swtpm-localca), copies the OVMF VARS template, and boots the image
# twice under QEMU/TCG with the same TPM state and VARS file (variant "refuse":
# see run_refuse). Checks:
#   boot 1: tpm-secret=absent + tpm-secret-written=X, efivar=absent + efivar-written=Y
#   boot 2: tpm-secret=X, efivar=Y, ek-cert=<N>
#   both:   tpm=present, pcr0, done, no error lines, QEMU exit 0;
#           secureboot=1 for sb, secureboot=0 for plain.
# Serial logs and the per-boot times are kept in OUT_DIR/smoke/.
set -euo pipefail

die() {
	echo "smoke.sh: error: $*" >&2
	exit 1
}

[ $# -ge 1 ] || die "usage: $0 OUT_DIR [plain|sb|refuse]..."
OUT_DIR=$1
shift
VARIANTS=${*:-plain sb refuse}
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BOOT_TIMEOUT=${FERRO_BOOT_TIMEOUT:-240}
MEM_MIB=384

for tool in qemu-system-x86_64 swtpm swtpm_setup swtpm_localca timeout; do
	command -v "$tool" >/dev/null || die "missing host tool '$tool' (packages: qemu-system-x86 swtpm swtpm-tools)"
done

"$SCRIPT_DIR/build.sh" "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
LOG_DIR=$OUT_DIR/smoke
rm -rf "$LOG_DIR"
mkdir -p "$LOG_DIR"

T=$(mktemp -d /tmp/ferro-smoke.XXXXXX)
SWTPM_PID=""
cleanup() {
	if [ -n "$SWTPM_PID" ]; then
		kill "$SWTPM_PID" 2>/dev/null || true
		wait "$SWTPM_PID" 2>/dev/null || true
	fi
	rm -rf "$T"
}
trap cleanup EXIT

# provision_tpm DIR: fresh TPM 2.0 state with EK + platform certificates from a
# private local CA kept in DIR/../localca.
provision_tpm() {
	local state=$1 ca
	ca=$(dirname "$state")/localca
	mkdir -p "$state" "$ca" "$ca/tmp"
	chmod 0700 "$state" "$ca"
	cat >"$ca/swtpm-localca.conf" <<EOF
statedir = $ca
signingkey = $ca/signkey.pem
issuercert = $ca/issuercert.pem
certserial = $ca/certserial
EOF
	cat >"$ca/swtpm-localca.options" <<EOF
--platform-manufacturer ferrovirt
--platform-version 2.1
--platform-model QEMU
EOF
	cat >"$ca/swtpm_setup.conf" <<EOF
create_certs_tool = /usr/bin/swtpm_localca
create_certs_tool_config = $ca/swtpm-localca.conf
create_certs_tool_options = $ca/swtpm-localca.options
active_pcr_banks = sha256
EOF
	TMPDIR=$ca/tmp swtpm_setup --tpm2 --tpmstate "$state" --config "$ca/swtpm_setup.conf" \
		--createek --create-ek-cert --create-platform-cert --lock-nvram --not-overwrite \
		--logfile "$ca/swtpm_setup.log" >/dev/null ||
		die "swtpm_setup failed; see $ca/swtpm_setup.log: $(tail -n 5 "$ca/swtpm_setup.log" 2>/dev/null)"
}

# boot VARIANT IMG CODE VARS TPMDIR LOG: one boot; sets BOOT_SECONDS (wall time).
boot() {
	local variant=$1 img=$2 code=$3 vars=$4 tpmdir=$5 log=$6
	local sock=$T/$variant/swtpm.sock machine=(-machine q35)
	rm -f "$sock"
	swtpm socket --tpm2 --tpmstate dir="$tpmdir" --ctrl type=unixio,path="$sock" \
		--terminate --log file="$log.swtpm" &
	SWTPM_PID=$!
	for _ in $(seq 100); do
		[ -S "$sock" ] && break
		sleep 0.01
	done
	[ -S "$sock" ] || die "swtpm control socket $sock did not appear"
	if [ "$variant" = sb ]; then
		# shellcheck disable=SC2054 # commas belong to QEMU option values
		machine=(-machine q35,smm=on -global driver=cfi.pflash01,property=secure,value=on)
	fi
	local t0 t1 rc=0
	t0=$(date +%s%N)
	timeout "$BOOT_TIMEOUT" qemu-system-x86_64 -accel tcg "${machine[@]}" -m "$MEM_MIB" \
		-nodefaults -display none -no-reboot \
		-drive if=pflash,format=raw,unit=0,readonly=on,file="$code" \
		-drive if=pflash,format=raw,unit=1,file="$vars" \
		-chardev socket,id=chrtpm,path="$sock" \
		-tpmdev emulator,id=tpm0,chardev=chrtpm -device tpm-crb,tpmdev=tpm0 \
		-drive file="$img",format=raw,if=none,id=disk0,snapshot=on \
		-device virtio-blk-pci,drive=disk0 \
		-serial file:"$log" 2>"$log.qemu" || rc=$?
	t1=$(date +%s%N)
	[ "$rc" = 0 ] || die "$variant: QEMU exited with $rc (124 = timeout after ${BOOT_TIMEOUT}s); see $log and $log.qemu"
	wait "$SWTPM_PID" || die "$variant: swtpm exited with an error; see $log.swtpm"
	SWTPM_PID=""
	BOOT_SECONDS=$(awk -v ns=$((t1 - t0)) 'BEGIN {printf "%.1f", ns / 1e9}')
}

# field LOG KEY: value of the "FERRO: KEY=value" line (empty when missing).
field() {
	tr -d '\r' <"$1" | sed -n "s/^.*FERRO: $2=//p" | head -n 1
}

# expect LOG KEY VALUE: fail unless the line is there with exactly VALUE.
expect() {
	local got
	got=$(field "$1" "$2")
	[ "$got" = "$3" ] || die "$(basename "$1"): expected FERRO: $2=$3, got '${got:-<missing>}'"
}

check_common() {
	local log=$1 sb=$2
	tr -d '\r' <"$log" | grep -q '^FERRO: boot$' || die "$(basename "$log"): no 'FERRO: boot'"
	tr -d '\r' <"$log" | grep -q '^FERRO: done$' || die "$(basename "$log"): no 'FERRO: done'"
	if grep -q 'FERRO: error=' "$log"; then
		die "$(basename "$log"): $(grep 'FERRO: error=' "$log" | tr -d '\r' | head -n 3)"
	fi
	expect "$log" secureboot "$sb"
	expect "$log" tpm present
	[[ "$(field "$log" ek-cert)" =~ ^[0-9]+$ ]] || die "$(basename "$log"): ek-cert is not a size"
	[[ "$(field "$log" pcr0)" =~ ^[0-9a-f]{64}$ ]] || die "$(basename "$log"): pcr0 is not a sha256 digest"
}

# refuse: the unsigned UKI under Secure Boot firmware must be refused by
# OVMF ("Access Denied") and never reach the kernel. OVMF then sits in its
# shell, so QEMU is stopped as soon as the verdict is in the log.
run_refuse() {
	local log=$LOG_DIR/refuse.log qemu_pid t0 t1 verdict=""
	mkdir -p "$T/refuse"
	cp /usr/share/OVMF/OVMF_VARS_4M.ms.fd "$T/refuse/vars.fd"
	t0=$(date +%s%N)
	qemu-system-x86_64 -accel tcg -machine q35,smm=on -global driver=cfi.pflash01,property=secure,value=on \
		-m "$MEM_MIB" -nodefaults -display none -no-reboot \
		-drive if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.ms.fd \
		-drive if=pflash,format=raw,unit=1,file="$T/refuse/vars.fd" \
		-drive file="$OUT_DIR/ferro-guest.img",format=raw,if=none,id=disk0,snapshot=on \
		-device virtio-blk-pci,drive=disk0 \
		-serial file:"$log" 2>"$log.qemu" &
	qemu_pid=$!
	for _ in $(seq "$BOOT_TIMEOUT"); do
		if grep -q 'FERRO: boot' "$log" 2>/dev/null; then verdict=booted; break; fi
		if grep -q 'Access Denied' "$log" 2>/dev/null; then verdict=refused; break; fi
		kill -0 "$qemu_pid" 2>/dev/null || break
		sleep 1
	done
	t1=$(date +%s%N)
	kill "$qemu_pid" 2>/dev/null || true
	wait "$qemu_pid" 2>/dev/null || true
	[ "$verdict" = refused ] || die "refuse: unsigned UKI under Secure Boot was not refused (verdict '${verdict:-none}'); see $log"
	summary+=("refuse: Access Denied after $(awk -v ns=$((t1 - t0)) 'BEGIN {printf "%.1f", ns / 1e9}')s")
}

summary=()
for variant in $VARIANTS; do
	if [ "$variant" = refuse ]; then
		run_refuse
		continue
	fi
	case $variant in
	plain) img=$OUT_DIR/ferro-guest.img code=/usr/share/OVMF/OVMF_CODE_4M.fd
		vars_template=/usr/share/OVMF/OVMF_VARS_4M.fd sb=0 ;;
	sb) img=$OUT_DIR/ferro-guest-sb.img code=/usr/share/OVMF/OVMF_CODE_4M.ms.fd
		vars_template=/usr/share/OVMF/OVMF_VARS_4M.ms.fd sb=1 ;;
	*) die "unknown variant '$variant' (plain, sb or refuse)" ;;
	esac
	if [ ! -f "$code" ] || [ ! -f "$vars_template" ]; then
		die "OVMF files missing ($code, $vars_template): apt-get install ovmf"
	fi
	mkdir -p "$T/$variant"
	provision_tpm "$T/$variant/tpm"
	cp "$vars_template" "$T/$variant/vars.fd"

	log1=$LOG_DIR/$variant-boot1.log
	log2=$LOG_DIR/$variant-boot2.log
	boot "$variant" "$img" "$code" "$T/$variant/vars.fd" "$T/$variant/tpm" "$log1"
	s1=$BOOT_SECONDS
	check_common "$log1" "$sb"
	expect "$log1" tpm-secret absent
	expect "$log1" efivar absent
	secret=$(field "$log1" tpm-secret-written)
	efivar=$(field "$log1" efivar-written)
	[[ "$secret" =~ ^[0-9a-f]{32}$ ]] || die "$variant boot 1: no tpm-secret-written"
	[[ "$efivar" =~ ^[0-9a-f]{32}$ ]] || die "$variant boot 1: no efivar-written"

	boot "$variant" "$img" "$code" "$T/$variant/vars.fd" "$T/$variant/tpm" "$log2"
	s2=$BOOT_SECONDS
	check_common "$log2" "$sb"
	expect "$log2" tpm-secret "$secret"
	expect "$log2" efivar "$efivar"
	[ -z "$(field "$log2" tpm-secret-written)" ] || die "$variant boot 2: secret written again"
	[ -z "$(field "$log2" efivar-written)" ] || die "$variant boot 2: efivar written again"
	summary+=("$variant: boot1 ${s1}s boot2 ${s2}s ek-cert=$(field "$log2" ek-cert)B")
done

echo "ferro-guest smoke: PASS (${summary[*]}; logs in $LOG_DIR)" | tee "$LOG_DIR/summary.txt"
