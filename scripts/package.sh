#!/usr/bin/env bash
# Builds the Debian package of ferrovirt (cargo-deb; metadata in the root Cargo.toml,
# [package.metadata.deb]): the `ferrovirt` binary with the web UI embedded, the service's
# configuration (/etc/ferrovirt/config.yaml) and its systemd unit (packaging/ferrovirt.service).
#
#   scripts/package.sh                 build the UI, a release build, target/debian/ferrovirt_*.deb
#   scripts/package.sh --ui-built      the UI in ui/dist is current already (scripts/test.sh)
#   scripts/package.sh --profile dev --no-build -o DIR
#                                      package the debug binary built already (quick, for tests)
#
# Install it with `apt install ./target/debian/ferrovirt_*.deb`, then `systemctl enable --now ferrovirt`.
# The path of the package is printed on the last line.
set -euo pipefail
cd "$(dirname "$0")/.."

build_ui=true
profile=release
no_build=()
output=target/debian
while [ $# -gt 0 ]; do
  case "$1" in
    --ui-built) build_ui=false ;;
    --profile) profile="$2"; shift ;;
    --no-build) no_build=(--no-build) ;;
    -o|--output) output="$2"; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "package.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

if ! cargo deb --version >/dev/null 2>&1; then
  echo "package.sh: installing cargo-deb"
  cargo install --locked cargo-deb
fi

# The binary embeds ui/dist at compile time (crates/apiserver/build.rs): build the UI first, or
# the package would serve the page that says the UI was not built.
if $build_ui; then
  command -v npm >/dev/null 2>&1 || { echo "package.sh: npm (Node >= 20.19) is needed to build the web UI" >&2; exit 1; }
  (cd ui && npm ci --no-audit --no-fund && npm run build)
fi
[ -f ui/dist/index.html ] || { echo "package.sh: ui/dist/index.html is missing: build the UI (cd ui && npm ci && npm run build)" >&2; exit 1; }

mkdir -p "$output"
compress=()
[ "$profile" = release ] || compress=(--fast)
deb=$(cargo deb --locked -p ferrovirt --profile "$profile" "${no_build[@]}" "${compress[@]}" -o "$output" | tail -n 1)
[ -f "$deb" ] || { echo "package.sh: cargo deb did not report a package (got: $deb)" >&2; exit 1; }
echo "$deb"
