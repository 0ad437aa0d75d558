#!/usr/bin/env bash
# The main job: builds ferrovirt and the small test guest (from Debian packages), runs
# `ferrovirt serve` on a data dir with the demo VM (examples/demo-vm.yaml: persistent TPM +
# persistent UEFI variables) applied, and boots it twice through the API. The first boot seals a
# secret in the TPM and writes an EFI variable; after a stop/start the second boot reads both back.
# Then it keeps serving in the foreground (Ctrl-C stops the server; VMs are never killed by that).
#
#   scripts/demo.sh [--once] [DATA_DIR]    (default .cache/demo; delete it for a fresh TPM)
#   --once: exit after the demonstration instead of serving on.
#   FERROVIRT_LISTEN=127.0.0.1:8080 sets the address.
#   FERROVIRT_BIN=PATH runs that ferrovirt binary instead of building the UI and a release build
#   (scripts/test.sh passes its debug build).
# The server serves HTTPS with tokens and RBAC; the first start writes <data-dir>/admin.kubeconfig
# (CA + admin token), which this script, ferrovirt and kubectl use.
set -euo pipefail
# Every failure says where it happened (set -e alone ends the script silently).
trap 'status=$?; echo "demo.sh: failed (exit $status) at line $LINENO: $BASH_COMMAND" >&2' ERR
cd "$(dirname "$0")/.."
root=$(pwd)

once=false
data_dir="$root/.cache/demo"
for arg in "$@"; do
  case "$arg" in
    --once) once=true ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    -*) echo "unknown option $arg (see --help)" >&2; exit 2 ;;
    *) data_dir="$arg" ;;
  esac
done
listen="${FERROVIRT_LISTEN:-127.0.0.1:8080}"
server="https://$listen"
unset FERROVIRT_SERVER

./scripts/setup.sh
guest/build.sh "$root/.cache/guest"
if [ -n "${FERROVIRT_BIN:-}" ]; then
  bin="$FERROVIRT_BIN"
  [ -x "$bin" ] || { echo "demo.sh: FERROVIRT_BIN=$bin is not an executable" >&2; exit 1; }
else
  # The web UI, embedded by the release build (served at / by `ferrovirt serve`).
  (cd ui && npm ci --no-audit --no-fund && npm run build)
  cargo build --release --locked
  bin="${CARGO_TARGET_DIR:-$root/target}/release/ferrovirt"
fi
fv() { "$bin" "$@"; }

mkdir -p "$data_dir"
chmod 700 "$data_dir"
data_dir=$(cd "$data_dir" && pwd)
kubeconfig="$data_dir/admin.kubeconfig"
export KUBECONFIG="$kubeconfig"
manifest="$data_dir/demo-vm.yaml"
# hostDisk paths must lie under an allowed root: <data-dir>/images is one. A hard link (a copy
# across filesystems) puts the guest image there.
mkdir -p "$data_dir/images"
ln -f "$root/.cache/guest/ferro-guest.img" "$data_dir/images/ferro-guest.img" 2>/dev/null \
  || cp -f "$root/.cache/guest/ferro-guest.img" "$data_dir/images/ferro-guest.img"
sed "s#GUEST_IMAGE#$data_dir/images/ferro-guest.img#" examples/demo-vm.yaml > "$manifest"
fv validate -f "$manifest"

if (exec 3<>"/dev/tcp/${listen%:*}/${listen##*:}") 2>/dev/null; then
  echo "error: something already listens on $listen; stop it or set FERROVIRT_LISTEN" >&2
  exit 1
fi
echo "=== ferrovirt serve --data-dir $data_dir --listen $listen (log: $data_dir/serve.log)"
"$bin" serve --data-dir "$data_dir" --listen "$listen" >>"$data_dir/serve.log" 2>&1 &
serve_pid=$!
stop_server() {
  if kill -0 "$serve_pid" 2>/dev/null; then
    kill -TERM "$serve_pid" 2>/dev/null || true
    wait "$serve_pid" 2>/dev/null || true
  fi
}
trap stop_server EXIT
for _ in $(seq 100); do
  fv get ns >/dev/null 2>&1 && break
  kill -0 "$serve_pid" 2>/dev/null || { echo "ferrovirt serve exited; see $data_dir/serve.log" >&2; exit 1; }
  sleep 0.1
done

fv apply -f "$manifest"

cat <<EOF

=== ferrovirt is serving $server (TLS, tokens, RBAC). Try, from another terminal:
  kubectl --kubeconfig $kubeconfig get vms,vmi,pvc
  export KUBECONFIG=$kubeconfig
  $bin get vms
  $bin describe vm demo
  $bin console demo        (Ctrl-] detaches)
  $bin logs demo -f
  web UI: $server/         (log in with the admin token: cat $data_dir/admin.token;
                           the browser must trust $data_dir/pki/ca.crt, or accept the warning)
EOF

# The VirtualMachineInstance's phase from the table (empty when there is none).
vmi_phase() { fv get vmi demo 2>/dev/null | awk 'NR == 2 { print $3 }'; }
vm_status() { fv get vm demo 2>/dev/null | awk 'NR == 2 { print $3 }'; }
wait_for() { # what, seconds, command...
  local what=$1 seconds=$2; shift 2
  for _ in $(seq $((seconds * 2))); do "$@" && return 0; sleep 0.5; done
  echo "error: timed out waiting for $what; see $data_dir/serve.log" >&2
  return 1
}
is_running() { [ "$(vmi_phase)" = Running ]; }
is_stopped() { [ "$(vm_status)" = Stopped ]; }

# One boot: start, then follow the serial log of this run (`logs -f` shows the current run from
# its beginning) until the guest powers off.
boot() {
  local n=$1 report="$data_dir/boot-$1.report"
  echo
  echo "=== boot $n: ferrovirt start demo (the guest reports, then powers itself off; ~20-40 s)"
  fv start demo
  wait_for "the VM to run" 120 is_running
  # grep finding nothing is reported below with what the guest printed, not by set -e.
  fv logs demo -f | { grep --line-buffered -a 'FERRO:' || true; } | sed -u 's/\r$//' | tee "$report"
  if ! grep -q 'FERRO: done' "$report"; then
    echo "error: boot $n ended without the guest's report (no 'FERRO: done' line); the serial log of the run:" >&2
    fv logs demo --tail 40 >&2 || true
    exit 1
  fi
  wait_for "the VM to stop" 120 is_stopped
  fv get vm demo
}

if is_running; then
  echo "=== the demo VM is running from an earlier session: stopping it first"
  fv stop demo
  wait_for "the VM to stop" 120 is_stopped
fi
boot 1
boot 2

value() { sed -n "s/^.*FERRO: $1=//p" "$2" | tail -1; }
first_secret=$(value tpm-secret-written "$data_dir/boot-1.report")
[ -n "$first_secret" ] || first_secret=$(value tpm-secret "$data_dir/boot-1.report")
first_var=$(value efivar-written "$data_dir/boot-1.report")
[ -n "$first_var" ] || first_var=$(value efivar "$data_dir/boot-1.report")
second_secret=$(value tpm-secret "$data_dir/boot-2.report")
second_var=$(value efivar "$data_dir/boot-2.report")
echo
echo "=== what survived the stop/start"
echo "TPM secret:    boot 1 $first_secret, boot 2 read back $second_secret"
echo "EFI variable:  boot 1 $first_var, boot 2 read back $second_var"
if [ -n "$first_secret" ] && [ "$first_secret" = "$second_secret" ] \
   && [ -n "$first_var" ] && [ "$first_var" = "$second_var" ]; then
  echo "OK: the TPM state and the UEFI variables persisted in the backend-storage PVC:"
  fv get pvc
else
  echo "FAILED: the second boot did not read back the state of the first" >&2
  exit 1
fi

if $once; then
  exit 0
fi
echo
echo "=== serving $server until Ctrl-C (running VMs keep running; the next start adopts them)"
wait "$serve_pid"
