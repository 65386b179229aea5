#!/usr/bin/env bash
# Runs every Fuzz target of the module for the given budget each (default
# 60000x: an execution count). A count, not a duration, because Go 1.26's fuzz
# coordinator can fail a target with a bare "context deadline exceeded" when
# a duration-based -fuzztime ends while a worker is mid-call (golang/go#75804,
# fixed in Go 1.27); a count has no deadline to race. A real crasher is
# written to testdata/fuzz/<target>/ and fails the run either way.
set -euo pipefail
cd "$(dirname "$0")/.."
t=${1:-60000x}
for pkg in $(go list ./...); do
	for f in $(go test -list '^Fuzz' "$pkg" 2>/dev/null | grep '^Fuzz' || true); do
		echo "fuzz $pkg $f for $t"
		# A short minimisation keeps big seeds from eating the whole budget.
		go test -run '^$' -fuzz "^$f\$" -fuzztime "$t" -fuzzminimizetime 2s -parallel 2 "$pkg"
	done
done
