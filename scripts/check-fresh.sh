#!/usr/bin/env bash
# Checks a change to the set-up the way CI and a new user meet it: clones the committed state into a
# throw-away directory (nothing built, no caches, no data dir) and runs the README's two commands
# there: the main job (`./scripts/demo.sh --once`) and the test suite exactly as CI calls it
# (`CI=true bash .ci/run` with no standard input). Not part of the test command.
#
#   scripts/check-fresh.sh [--ref REV] [--keep] [--tests-only|--demo-only]
#     --ref REV     what to clone (default HEAD; uncommitted changes are NOT included)
#     --keep        keep the clone (default: removed when everything passed)
#
# A used machine hides missing install steps: to see what a fresh machine sees, undo what the
# set-up installed first (e.g. `apt-get remove qemu-utils`, or reinstall the image's backports
# qemu-utils) and run this script; scripts/setup.sh must bring the machine back.
set -euo pipefail
trap 'status=$?; echo "check-fresh.sh: failed (exit $status) at line $LINENO: $BASH_COMMAND" >&2' ERR
cd "$(dirname "$0")/.."
root=$(pwd)

ref=HEAD keep=false run_demo=true run_tests=true
while [ $# -gt 0 ]; do
  case "$1" in
    --ref) ref=$2; shift ;;
    --keep) keep=true ;;
    --tests-only) run_demo=false ;;
    --demo-only) run_tests=false ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "check-fresh.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

if [ -n "$(git status --porcelain)" ]; then
  echo "check-fresh.sh: note: uncommitted changes are not part of the check (it clones $ref)" >&2
fi
commit=$(git rev-parse --verify "$ref^{commit}")
work=$(mktemp -d "${TMPDIR:-/tmp}/ferrovirt-fresh.XXXXXX")
clone="$work/ferrovirt"
git clone -q --no-hardlinks "$root" "$clone"
git -C "$clone" checkout -q --detach "$commit"
# CI finds a read-only copy of shared/ beside the clone; so does this check.
if [ -d "$root/../shared" ]; then
  cp -r "$root/../shared" "$work/shared"
  chmod -R a-w "$work/shared"
fi
echo "=== check-fresh: $(git -C "$clone" log --oneline -1) in $clone"

results=()
failed=false
started=$SECONDS
if $run_demo; then
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  t=$SECONDS
  if (cd "$clone" && FERROVIRT_LISTEN="127.0.0.1:$port" ./scripts/demo.sh --once </dev/null); then
    results+=("./scripts/demo.sh --once: passed in $((SECONDS - t)) s")
  else
    results+=("./scripts/demo.sh --once: FAILED after $((SECONDS - t)) s")
    failed=true
  fi
fi
if $run_tests; then
  t=$SECONDS
  if (cd "$clone" && env CI=true bash .ci/run </dev/null); then
    results+=("CI=true bash .ci/run: passed in $((SECONDS - t)) s")
  else
    results+=("CI=true bash .ci/run: FAILED after $((SECONDS - t)) s")
    failed=true
  fi
fi

echo
echo "=== check-fresh: $(git -C "$clone" log --oneline -1), $((SECONDS - started)) s in all"
printf '  %s\n' "${results[@]}"
if $failed || $keep; then
  echo "  clone kept in $clone"
else
  chmod -R u+w "$work"; rm -rf "$work"
fi
! $failed
