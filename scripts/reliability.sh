#!/usr/bin/env bash
# The reliability report of issue 18: runs, with sizes from flags, and prints one table:
#
#   1. the crash matrix (tests/crash_matrix.rs): every fault point of a VM's start and stop x
#      {kill -9 of serve at that point, kill -9 of QEMU there, kill -9 of swtpm there}, then the
#      invariants (state sha256 = newest generation, the VM starts again, no orphan, no blocking
#      runtime dir or lock, API objects consistent); the crash-loop/known-good and VARS-after-stop
#      engine tests (crates/vmm/tests/engine_state.rs);
#      the crash cases of a live migration between two hosts (tests/crash_migration.rs): serve
#      killed at every step of the source's send and of the destination's receive, then at most
#      one guest, terminal migrations, no orphan, the state kept;
#   2. full disks and I/O errors (crates/vmm/tests/full_disk.rs): a real ENOSPC on a small tmpfs
#      data dir, EIO/ENOSPC injected at record, prune and rollback steps; at the API
#      (tests/io_errors_serve.rs): ENOSPC and EIO during start, stop, generation record, snapshot
#      and volume import against a real serve, each with its Warning Event read through the API,
#      and a kill -9 of serve in the middle of an import;
#   3. endurance (tests/endurance.rs): start/stop cycles of a firmware-only VM, VMs started and
#      stopped concurrently in random order, latency percentiles, serve's RSS and descriptors;
#   4. hostile input: the fuzz targets (crates/fuzz-targets) over their committed corpus
#      (fuzz/corpus) plus deterministic mutants on stable (crates/fuzz-targets/tests/corpus.rs), and with `--fuzz-seconds S` also `cargo +nightly fuzz run` for S seconds
#      per target when a nightly toolchain and cargo-fuzz are installed; schemathesis against the
#      server's OpenAPI (scripts/schemathesis.sh).
#
#   scripts/reliability.sh [--size quick|full] [--fuzz-seconds S] [--examples N]
#                          [--cycles N] [--vms N] [--rounds N] [--mutations N] [--no-hostile]
#                          [--tests-ran DIR [--hostile-ran]]
#   scripts/reliability.sh [--size quick|full] [--examples N] --only-schemathesis DIR
#
# quick (the test suite's, a few minutes): serve crashes at every point and QEMU/swtpm kills at
# four, 20 cycles, 4 VMs x 2 rounds, 2,000 mutants per fuzz target, 3 schemathesis examples per
# operation. full (by hand): every point x every fault, 1,000 cycles, 24 VMs x 3 rounds, 200,000
# mutants per target, 20 examples. --cycles/--vms/--rounds/--mutations override the size's
# figure (an intermediate run when the full one does not fit the time at hand); --no-hostile
# leaves out part 4 (fuzz, schemathesis). --tests-ran DIR: the tests of parts 1-3 already ran,
# at this size, in a nextest run of the caller's that wrote their reports into DIR (the
# FERROVIRT_RELIABILITY_REPORT* files named below, the stable fuzz run's too unless --no-hostile):
# they are not run again, their reports go into the table (scripts/test.sh runs them inside the
# suite's one nextest run, beside the other tests). --hostile-ran (with --tests-ran DIR):
# schemathesis ran too, into DIR, by `--only-schemathesis DIR` (which runs just that piece and
# writes its log and exit status there; scripts/test.sh runs it while its test binaries build).
# Needs the build with fault points (`--features ferrovirt/failpoints`, which scripts/test.sh
# builds with). Exit status 1 when anything failed.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SIZE=quick
FUZZ_SECONDS=0
EXAMPLES=
OVERRIDES=()
HOSTILE=1
TESTS_RAN=
HOSTILE_RAN=0
ONLY=
while [ $# -gt 0 ]; do
	case "$1" in
	--size) SIZE="$2"; shift 2 ;;
	--fuzz-seconds) FUZZ_SECONDS="$2"; shift 2 ;;
	--examples) EXAMPLES="$2"; shift 2 ;;
	--cycles | --vms | --rounds | --mutations) OVERRIDES+=("$1" "$2"); shift 2 ;;
	--no-hostile) HOSTILE=0; shift ;;
	--tests-ran) TESTS_RAN="$2"; shift 2 ;;
	--hostile-ran) HOSTILE_RAN=1; shift ;;
	--only-schemathesis) ONLY=schemathesis; TESTS_RAN="$2"; shift 2 ;;
	*) echo "unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
	esac
done
case "$SIZE" in
quick) CYCLES=20 VMS=4 ROUNDS=2 MUTATIONS=2000 ; EXAMPLES=${EXAMPLES:-3} ;;
full) CYCLES=1000 VMS=24 ROUNDS=3 MUTATIONS=200000 ; EXAMPLES=${EXAMPLES:-20} ;;
*) echo "--size is quick or full" >&2; exit 2 ;;
esac
set -- "${OVERRIDES[@]}"
while [ $# -gt 0 ]; do
	case "$1" in
	--cycles) CYCLES="$2" ;;
	--vms) VMS="$2" ;;
	--rounds) ROUNDS="$2" ;;
	--mutations) MUTATIONS="$2" ;;
	esac
	shift 2
done
export CARGO_TERM_COLOR=never
status=0

# Part 4's schemathesis run writes its log and its exit status (DIR/schemathesis.status) into the
# reports dir, so that a caller may run it apart from the table (--only-schemathesis, --hostile-ran).
# The stable fuzz run is a test (crates/fuzz-targets/tests/corpus.rs) of the nextest run of parts
# 1-3 (the caller's with --tests-ran), which writes its `fuzz-summary` lines into DIR/fuzz.log.
run_schemathesis() {
	echo "=== reliability ($SIZE): schemathesis, $EXAMPLES examples per operation"
	local rc=0
	./scripts/schemathesis.sh --examples "$EXAMPLES" --bin target/debug/ferrovirt >"$REPORTS/schemathesis.log" 2>&1 || rc=1
	echo "$rc" >"$REPORTS/schemathesis.status"
	tail -3 "$REPORTS/schemathesis.log"
	return "$rc"
}
# A piece that ran apart: its status file says how it ended (no file: it did not end).
ran_apart() {
	case "$(cat "$REPORTS/$1.status" 2>/dev/null)" in
	0) return 0 ;;
	1) echo "reliability: $1 failed (log: $REPORTS/$1.log)" >&2 ;;
	*) echo "reliability: $1 did not run to its end (no $REPORTS/$1.status; log: $REPORTS/$1.log)" >&2 ;;
	esac
	return 1
}
case "$ONLY" in
schemathesis) REPORTS=$TESTS_RAN; run_schemathesis; exit $? ;;
esac
if [ -n "$TESTS_RAN" ]; then
REPORTS=$TESTS_RAN
echo "=== reliability ($SIZE): crash matrix, full disks and I/O errors, endurance: ran in the caller's nextest run (reports in $REPORTS)"
for report in matrix.tsv migration.tsv io.tsv io-api.tsv endurance.tsv $([ "$HOSTILE" -eq 1 ] && echo fuzz.log); do
	[ -s "$REPORTS/$report" ] || { echo "reliability: no report $REPORTS/$report from the caller's run (did its tests run, with FERROVIRT_RELIABILITY_REPORT* set?)" >&2; status=1; }
done
else
REPORTS=$(mktemp -d "${TMPDIR:-/tmp}/ferrovirt-reliability.XXXXXX")
echo "=== reliability ($SIZE): crash matrix, full disks and I/O errors, endurance"
# One line: nextest's filterset parser does not take a newline inside an expression.
FILTER='test(/^crash_matrix::/) | test(/^crash_migration::/) | test(/^io_errors_serve::/) | test(/^full_disk::/) | test(/^endurance::/) | test(a_crash_looping_vm_keeps_its_known_good_state) | test(a_damaged_vars_file_fails_the_check_after_the_stop) | test(a_crash_loop_cannot_push_out_the_known_good_state)'
# Part 4's stable fuzz run (the corpus and its mutants) in the same run.
[ "$HOSTILE" -eq 1 ] && FILTER="$FILTER | package(ferrovirt-fuzz-targets)"
FERROVIRT_RELIABILITY_SIZE=$SIZE \
	FERROVIRT_RELIABILITY_REPORT="$REPORTS/matrix.tsv" \
	FERROVIRT_RELIABILITY_REPORT_MIGRATION="$REPORTS/migration.tsv" \
	FERROVIRT_RELIABILITY_REPORT_IO="$REPORTS/io.tsv" \
	FERROVIRT_RELIABILITY_REPORT_API="$REPORTS/io-api.tsv" \
	FERROVIRT_RELIABILITY_REPORT_ENDURANCE="$REPORTS/endurance.tsv" \
	FERROVIRT_RELIABILITY_REPORT_FUZZ="$REPORTS/fuzz.log" FERROVIRT_FUZZ_MUTATIONS=$MUTATIONS \
	FERROVIRT_ENDURANCE_CYCLES=$CYCLES FERROVIRT_ENDURANCE_VMS=$VMS FERROVIRT_ENDURANCE_ROUNDS=$ROUNDS \
	FERROVIRT_REQUIRE_FAILPOINTS=1 FERROVIRT_REQUIRE_MOUNT=1 \
	cargo nextest run --workspace --locked --features ferrovirt/failpoints --no-fail-fast \
	--test-threads 1 -E "$FILTER" 2>&1 | tee "$REPORTS/nextest.log" |
	grep -E '^\s+(PASS|FAIL|SIGKILL|TIMEOUT)|Summary|crash matrix:|crash migration:|violation:|io case|^(cycles|vms|failures|start|stop|serve)'
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
fi

NIGHTLY_FUZZ="not run (--fuzz-seconds 0)"
if [ "$HOSTILE" -eq 1 ]; then
echo "=== reliability ($SIZE): fuzz targets over the corpus + $MUTATIONS mutants each (stable; ran in the nextest run)"
grep -E 'fuzz-summary' "$REPORTS/fuzz.log" 2>/dev/null
if [ "$FUZZ_SECONDS" -gt 0 ]; then
	if cargo +nightly fuzz --version >/dev/null 2>&1; then
		NIGHTLY_FUZZ=""
		for target in manifest vars qmp protobuf selectors patch; do
			mkdir -p "$REPORTS/corpus-$target"; (cd fuzz && cargo +nightly fuzz run "$target" "$REPORTS/corpus-$target" "corpus/$target" -- \
				-max_total_time="$FUZZ_SECONDS" -rss_limit_mb=2048) >"$REPORTS/libfuzzer-$target.log" 2>&1 || status=1
			runs=$(grep -oE '#[0-9]+' "$REPORTS/libfuzzer-$target.log" | tail -1 | tr -d '#')
			crashed=$(grep -c 'SUMMARY: libFuzzer\|deadly signal\|panicked' "$REPORTS/libfuzzer-$target.log")
			NIGHTLY_FUZZ="$NIGHTLY_FUZZ $target=${runs:-0}/${crashed}"
		done
	else
		NIGHTLY_FUZZ="not run: no nightly toolchain with cargo-fuzz (rustup toolchain install nightly; cargo install cargo-fuzz)"
	fi
fi

if [ "$HOSTILE_RAN" -eq 1 ]; then
	tail -3 "$REPORTS/schemathesis.log" 2>/dev/null
	ran_apart schemathesis || status=1
else
	run_schemathesis || status=1
fi

else
	NIGHTLY_FUZZ="not run (--no-hostile)"
	: >"$REPORTS/fuzz.log"
	echo "not run (--no-hostile)" >"$REPORTS/schemathesis.log"
fi

# The table. The live migration's crash cases (tests/crash_migration.rs) count among the crash
# matrix's cases and have a line of their own too.
mig_cases=$(wc -l <"$REPORTS/migration.tsv" 2>/dev/null || echo 0)
mig_faulted=$(grep -cE 'crashed there|killed there' "$REPORTS/migration.tsv" 2>/dev/null); mig_faulted=${mig_faulted:-0}
mig_kinds=$(cut -f2 "$REPORTS/migration.tsv" 2>/dev/null | sed -E 's/^kill -9 ([a-z]+).*/\1/' | sort | uniq -c | awk '{printf "%s%s %s", (NR > 1 ? ", " : ""), $1, $2}')
mig_violations=$(awk -F'\t' '{s += $4} END {print s + 0}' "$REPORTS/migration.tsv" 2>/dev/null)
cat "$REPORTS/migration.tsv" >>"$REPORTS/matrix.tsv" 2>/dev/null
points=$(cut -f1 "$REPORTS/matrix.tsv" 2>/dev/null | sort -u | wc -l)
cases=$(wc -l <"$REPORTS/matrix.tsv" 2>/dev/null || echo 0)
faulted=$(grep -cE 'crashed there|killed there' "$REPORTS/matrix.tsv" 2>/dev/null || echo 0)
not_reached=$(grep -cE 'not reached|no such process' "$REPORTS/matrix.tsv" 2>/dev/null || echo 0)
violations=$(awk -F'\t' '{s += $4} END {print s + 0}' "$REPORTS/matrix.tsv" 2>/dev/null)
io_cases=$(wc -l <"$REPORTS/io.tsv" 2>/dev/null || echo 0)
enospc=$(awk -F'	' 'tolower($2) == "enospc"' "$REPORTS/io.tsv" 2>/dev/null | wc -l)
eio=$(awk -F'	' 'tolower($2) == "eio"' "$REPORTS/io.tsv" 2>/dev/null | wc -l)
api_cases=$(grep -cvE '	crash	' "$REPORTS/io-api.tsv" 2>/dev/null || echo 0)
api_violations=$(awk -F'\t' '{s += $4} END {print s + 0}' "$REPORTS/io-api.tsv" 2>/dev/null)
import_crash=$(awk -F'\t' '$2 == "crash" {print ($4 == 0 ? "recovered" : $4 " violations")}' "$REPORTS/io-api.tsv" 2>/dev/null)
fuzz_execs=$(awk '/fuzz-summary/ {s += $3} END {print s + 0}' "$REPORTS/fuzz.log")
fuzz_crashes=$(awk '/fuzz-summary/ {c = $4} END {print c + 0}' "$REPORTS/fuzz.log")
field() { awk -F'\t' -v k="$1" '$1 == k {print $2}' "$REPORTS/endurance.tsv" 2>/dev/null; }
st_requests=$(grep -oE 'schemathesis_requests=[0-9]+' "$REPORTS/schemathesis.log" | cut -d= -f2)
st_failures=$(grep -oE 'schemathesis_failures=[0-9]+' "$REPORTS/schemathesis.log" | cut -d= -f2)
echo
echo "Reliability ($SIZE: $CYCLES cycles, $VMS VMs x $ROUNDS rounds, $MUTATIONS mutants per fuzz target, $EXAMPLES schemathesis examples; $(date -u +%Y-%m-%d), $(nproc) cores, TCG)"
echo
echo "| what | figure |"
echo "|---|---|"
echo "| crash points x faults tried | $points points, $cases cases (serve/QEMU/swtpm kill -9): $faulted faulted at the point, $not_reached not reached or no such process there |"
echo "| live migration between two hosts, kill -9 at each of its points (serve; QEMU, swtpm) | $mig_cases cases (${mig_kinds:-none}): $mig_faulted crashed or killed at the point, $mig_violations violations |"
echo "| invariant violations | $violations |"
echo "| ENOSPC / EIO cases | $io_cases ($enospc ENOSPC, $eio EIO), all with a clear error and the state intact |"
echo "| ENOSPC / EIO at the API (start, stop, generation record, snapshot, import) | $api_cases cases, $api_violations violations (each: the error named, a Warning Event read through the API, state intact, the operation succeeds after); kill -9 of serve mid-import: ${import_crash:-not run} |"
echo "| start/stop cycles | $(field cycles) sequential, failures $(field failures) |"
echo "| concurrent VMs | $(field vms) VMs x $(field rounds) rounds in random order |"
echo "| start latency (PUT start -> VMI Running) | $(field 'start (sequential)'); concurrent: $(field 'start (concurrent)') |"
echo "| stop latency (PUT stop -> Stopped, processes gone) | $(field 'stop (sequential)'); concurrent: $(field 'stop (concurrent)') |"
echo "| serve RSS / open fds | $(field 'serve RSS') / $(field 'serve fds') |"
if [ "$HOSTILE" -eq 1 ]; then
	echo "| fuzz executions, crashes (stable: corpus + mutants) | $fuzz_execs, $fuzz_crashes |"
else
	echo "| fuzz executions, crashes (stable: corpus + mutants) | not run (--no-hostile) |"
fi
echo "| fuzz (nightly libFuzzer, target=runs/crashes) | $NIGHTLY_FUZZ |"
if [ "$HOSTILE" -eq 1 ]; then
	echo "| schemathesis requests, failures | ${st_requests:-?}, ${st_failures:-?} |"
else
	echo "| schemathesis requests, failures | not run (--no-hostile) |"
fi
echo
echo "reports: $REPORTS"
exit $status
