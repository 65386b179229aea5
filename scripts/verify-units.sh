#!/usr/bin/env bash
# make verify-units: `systemd-analyze verify` on every shipped unit in
# deploy/systemd (or the directory given as $1), failing on ANY line it
# prints: it exits 0 on an unknown key or a misspelt section, it only warns.
# Template units are checked as an instance (bgd-proxy@app.service), and
# ExecStart's /usr/local/bin/bgd is pointed at a real binary ($BGD, default
# bin/bgd, built when missing) since verify refuses a missing executable.
# Runs on a host where systemd is not PID 1 (a container, CI): verify needs
# no running manager.
set -euo pipefail
cd "$(dirname "$0")/.."
src=${1:-deploy/systemd}
command -v systemd-analyze >/dev/null || { echo "verify-units: systemd-analyze is needed (apt-get install systemd)" >&2; exit 1; }
bgd=${BGD:-bin/bgd}
if [ ! -x "$bgd" ]; then
	go build -o "$bgd" ./cmd/bgd
fi
bgd=$(realpath "$bgd")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
units=()
for f in "$src"/*.service "$src"/*.timer; do
	[ -e "$f" ] || continue
	name=$(basename "$f")
	case $name in *@.*) name=${name/@./@app.} ;; esac
	sed "s#/usr/local/bin/bgd#$bgd#g" "$f" >"$tmp/$name"
	units+=("$tmp/$name")
done
[ ${#units[@]} -gt 0 ] || { echo "verify-units: no unit files in $src" >&2; exit 1; }
out=$(cd "$tmp" && SYSTEMD_LOG_COLOR=0 systemd-analyze verify --man=no "${units[@]##*/}" 2>&1) || status=$?
if [ -n "$out" ] || [ "${status:-0}" != 0 ]; then
	printf '%s\n' "$out" >&2
	echo "verify-units: systemd-analyze verify found problems in $src (exit ${status:-0})" >&2
	exit 1
fi
echo "verify-units: ${#units[@]} units in $src verified, no warnings"
