#!/usr/bin/env bash
# Runs every Fuzz target of the module for the given time each (default 10s).
set -euo pipefail
cd "$(dirname "$0")/.."
t=${1:-10s}
for pkg in $(go list ./...); do
	for f in $(go test -list '^Fuzz' "$pkg" 2>/dev/null | grep '^Fuzz' || true); do
		echo "fuzz $pkg $f for $t"
		# A short minimisation keeps big seeds from eating the whole budget.
		go test -run '^$' -fuzz "^$f\$" -fuzztime "$t" -fuzzminimizetime 2s -parallel 2 "$pkg"
	done
done
