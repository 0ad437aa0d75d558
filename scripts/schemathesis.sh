#!/usr/bin/env bash
# Hostile input against the REST API: schemathesis (PyPI) generates requests from the server's
# own OpenAPI v3 documents (every group/version it serves) and checks that none is answered with a
# 5xx, crashes the server or hangs. A bounded number of examples per operation.
#
#   scripts/schemathesis.sh [--examples N] [--phases fuzzing,coverage] [--bin PATH]
#
# It starts its own `ferrovirt serve` (plain HTTP on a free loopback port, a throw-away data dir,
# the admin token), installs schemathesis into .cache/schemathesis-venv the first time, and prints
# one line per group/version and a summary (`schemathesis_requests=`, `schemathesis_failures=`).
# Exit status: 0 when no request failed a check, 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

EXAMPLES=5
PHASES=fuzzing
BIN=target/debug/ferrovirt
SCHEMATHESIS_VERSION=4.32.5
while [ $# -gt 0 ]; do
	case "$1" in
	--examples) EXAMPLES="$2"; shift 2 ;;
	--phases) PHASES="$2"; shift 2 ;;
	--bin) BIN="$2"; shift 2 ;;
	*) echo "unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
	esac
done

VENV=.cache/schemathesis-venv
if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
	python3 -m venv "$VENV"
	"$VENV/bin/pip" install --quiet "schemathesis==$SCHEMATHESIS_VERSION"
fi
[ -x "$BIN" ] || cargo build --quiet --bin ferrovirt

WORK=$(mktemp -d)
SERVE_PID=
cleanup() {
	[ -n "$SERVE_PID" ] && kill "$SERVE_PID" 2>/dev/null && wait "$SERVE_PID" 2>/dev/null
	rm -rf "$WORK"
}
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$BIN" serve --config /dev/null --data-dir "$WORK/data" --listen "127.0.0.1:$PORT" --insecure-http \
	>"$WORK/serve.log" 2>&1 &
SERVE_PID=$!
URL="http://127.0.0.1:$PORT"
for _ in $(seq 100); do
	curl -fsS "$URL/healthz" >/dev/null 2>&1 && break
	sleep 0.1
done
TOKEN=$(awk '/token:/ {print $2; exit}' "$WORK/data/admin.kubeconfig")
[ -n "$TOKEN" ] || { echo "serve did not write an admin token; its log:" >&2; cat "$WORK/serve.log" >&2; exit 1; }

DOCS=$(curl -fsS -H "Authorization: Bearer $TOKEN" "$URL/openapi/v3" |
	python3 -c 'import json, sys; print("\n".join(v["serverRelativeURL"].split("?")[0] for v in json.load(sys.stdin)["paths"].values()))')

total=0
failed=0
status=0
for doc in $DOCS; do
	out="$WORK/$(echo "$doc" | tr / _).out"
	set +e
	# Run in the throw-away dir: schemathesis keeps a cache (.schemathesis/) in its working dir.
	(cd "$WORK" && "$ROOT/$VENV/bin/schemathesis" run "$URL$doc" --url "$URL" \
		-H "Authorization: Bearer $TOKEN" --max-examples "$EXAMPLES" --phases "$PHASES" \
		--checks not_a_server_error --suppress-health-check too_slow --request-timeout 20 \
		--no-color) >"$out" 2>&1
	rc=$?
	set -e
	cases=$(grep -oE '[0-9]+ generated' "$out" | tail -1 | grep -oE '[0-9]+' || echo 0)
	# schemathesis exits non-zero when a check failed or an operation could not be tested; the
	# count of distinct failures is in its summary when there is one.
	bad=0
	if [ "$rc" -ne 0 ]; then
		bad=$(grep -oE '[0-9]+ (unique )?failures?' "$out" | tail -1 | grep -oE '^[0-9]+' || echo 1)
	fi
	printf '%-50s requests=%-6s failures=%s\n' "$doc" "$cases" "$bad"
	if [ "$bad" -ne 0 ]; then
		status=1
		grep -v '^\s*$' "$out" | tail -40
	fi
	total=$((total + cases))
	failed=$((failed + bad))
done
if ! kill -0 "$SERVE_PID" 2>/dev/null; then
	echo "serve exited during the run; its log:" >&2
	tail -40 "$WORK/serve.log" >&2
	status=1
fi
echo "schemathesis_requests=$total"
echo "schemathesis_failures=$failed"
exit "$status"
