#!/usr/bin/env bash
# The main job: a full blue-green deploy through the builtin proxy, with no
# config file and nothing installed but Go. Uses the seed's ports (proxy 5004,
# slots 5005/5006) unless BG_PROXY_PORT, BLUE_PORT, GREEN_PORT say otherwise.
# State goes to ./.local_context (BG_STATE_FILE overrides). Everything the
# demo started is stopped at the end unless KEEP=1.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bgd=${BGD:-$here/bin/bgd}
proxy_port=${BG_PROXY_PORT:-5004}

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
run() { step "bgd $*"; "$bgd" "$@"; }

# GET / through the proxy with bash's /dev/tcp, so no curl is needed.
request() {
	step "GET http://127.0.0.1:$proxy_port/"
	exec 3<>"/dev/tcp/127.0.0.1/$proxy_port"
	printf 'GET / HTTP/1.0\r\nHost: demo\r\n\r\n' >&3
	local body
	body=$(cat <&3)
	exec 3<&-
	printf '%s\n' "$body" | tail -n 1
}

cleanup() {
	[ "${KEEP:-}" = 1 ] && return
	step "cleaning up (KEEP=1 keeps everything running)"
	"$bgd" stop --force blue >/dev/null || true
	"$bgd" stop --force green >/dev/null || true
	local state=${BG_STATE_FILE:-.local_context/bg_state.json}
	local pid
	pid=$(sed -n 's/.*"proxy_pid": *\([0-9][0-9]*\).*/\1/p' "$state" 2>/dev/null || true)
	[ -n "$pid" ] && kill "$pid" 2>/dev/null || true
	echo "stopped blue, green and the builtin proxy"
}
trap cleanup EXIT

run status
run start blue
request
run deploy --release v2
run status
answer=$(request)
echo "$answer"
case $answer in *color=green*) ;; *) echo "demo: expected green to answer through the proxy" >&2; exit 1 ;; esac
run rollback
run status
request
