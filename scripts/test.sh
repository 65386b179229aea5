#!/usr/bin/env bash
# Runs every test once, under the race detector when a C compiler is there
# for it, verbosely to a log, and fails when any test skipped while CI is
# set: in CI an integration test must run or fail, never skip.
# Arguments name the packages (default ./...); TEST_TAGS adds build tags, so
# `TEST_TAGS=compose scripts/test.sh ./integration/compose/` runs the
# container suites behind their tags with the same summary and skip rule.
set -uo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# The race detector needs cgo, hence a C compiler. Without one (a machine
# with only Go), say so loudly and test without it; CI must have it.
race=-race
cc=$(go env CC)
if [ "$(go env CGO_ENABLED)" != 1 ] || ! command -v "${cc%% *}" >/dev/null 2>&1; then
	if [ -n "${CI:-}" ]; then
		echo "CI runs the tests under -race, which needs a C compiler: install gcc (see .ci/run)" >&2
		exit 1
	fi
	echo "WARNING: no C compiler for cgo, so no race detector: testing without -race (install gcc to get it)" >&2
	race=
	export CGO_ENABLED=0
fi
pkgs=("${@:-./...}")
go test $race ${TEST_TAGS:+-tags "$TEST_TAGS"} -count=1 -timeout "${TEST_TIMEOUT:-20m}" -v "${pkgs[@]}" 2>&1 | tee "$log" | grep -vE '^=== (RUN|PAUSE|CONT|NAME)' 
status=${PIPESTATUS[0]}
skips=$(grep -c -- '--- SKIP' "$log")
passed=$(grep -c -- '--- PASS' "$log")
failed=$(grep -c -- '--- FAIL' "$log")
# A package can fail with no "--- FAIL" line: a panic, a build error, a
# timeout. Name those packages so the summary never reads "0 failed" alone.
broken=$(grep -E '^(FAIL|ok)[[:space:]]' "$log" | awk '$1 == "FAIL" {print $2}' | tr '\n' ' ')
if [ -n "$broken" ]; then
	grep -E -m3 -A12 '^(panic:|fatal error:|# [a-z])' "$log" || true
	echo "failed packages: $broken"
fi
echo "tests: $passed passed, $failed failed, $skips skipped"
if [ "$skips" -gt 0 ]; then
	grep -A2 -- '--- SKIP' "$log"
	if [ -n "${CI:-}" ]; then
		echo "CI forbids skipped tests: install what they need (see .ci/run)" >&2
		exit 1
	fi
	echo "WARNING: $skips tests skipped; in CI this fails" >&2
fi
exit "$status"
