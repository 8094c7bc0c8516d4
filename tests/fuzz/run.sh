#!/usr/bin/env bash
# tests/fuzz/run.sh BUILD_DIR SECONDS: runs every fuzz target of BUILD_DIR/tests/fuzz for
# SECONDS each, from its seed corpus (tests/fuzz/corpus/TARGET, read only) and a working
# corpus in BUILD_DIR/fuzz-corpus/TARGET. A crash, leak or sanitizer report fails the run;
# the input that caused it is kept in BUILD_DIR/fuzz-artifacts/ and named.
set -euo pipefail
build=$1
secs=$2
src=$(cd "$(dirname "$0")" && pwd)
fail=0
mkdir -p "$build/fuzz-artifacts"
for bin in "$build"/tests/fuzz/fuzz_*; do
	[ -x "$bin" ] || continue
	t=$(basename "$bin")
	mkdir -p "$build/fuzz-corpus/$t"
	seeds=()
	[ -d "$src/corpus/$t" ] && seeds=("$src/corpus/$t")
	printf 'fuzz %-14s %3s s ... ' "$t" "$secs"
	if "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
		-artifact_prefix="$build/fuzz-artifacts/$t-" "$build/fuzz-corpus/$t" "${seeds[@]}" \
		>"$build/fuzz-artifacts/$t.log" 2>&1; then
		echo "ok ($(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$build/fuzz-artifacts/$t.log") runs)"
	else
		echo "FAILED: see $build/fuzz-artifacts/$t.log"
		grep -E 'ERROR|SUMMARY|Test unit written' "$build/fuzz-artifacts/$t.log" | head -5
		fail=1
	fi
done
exit $fail
